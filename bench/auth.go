package bench

// Authenticated-request overhead: what checking a session token costs per
// request, our way against the way a plain Redis session store does it.
//
//   - "ours": auth.Sessions.Validate over redis.SessionStore over kv/native
//     with its default options: client-side caching, sliding refresh at
//     most once a minute per session. Per request that is a base64 check,
//     an HMAC-SHA256 of the token, a read (normally served from the local
//     cache), AES-256-GCM open and JSON decoding of the session.
//   - "ours, no cache": the same with SessionOptions.LocalTTL < 0, so every
//     Validate runs the GET+PEXPIRE script: one round trip. It is there to
//     show how much of the difference is the cache.
//   - "go-redis GET": the way of alexedwards/scs's redisstore, a plain GET
//     of "scs:session:<token>" per request, over a go-redis v9 client with
//     PoolSize = goroutines. It does less than a real scs request: no
//     decoding of the value, and no write-back that scs makes when the idle
//     timeout slides.
//
// The cmd is bench/authbench; the Go benchmark is BenchmarkAuthValidate.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/auth"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/native"
	redisstore "github.com/agentapi-mt/agentapi/redis"
)

// AuthSessions is how many sessions an auth benchmark cycles through.
const AuthSessions = 1024

// AuthFixture is the sessions an auth benchmark validates: created through
// our store (under Prefix), and the same number of scs-style keys holding a
// value of the same size for the go-redis baseline.
type AuthFixture struct {
	Prefix  string
	Key     []byte // the master key the sessions are sealed under
	Tokens  []string
	SCSKeys []string
	IdleTTL time.Duration
}

// NewAuthFixture creates n sessions through c, which should be a client of
// its own: an instance that creates a session reads it uncached for a
// second afterwards (its write window), so the drivers must be other
// instances.
func NewAuthFixture(ctx context.Context, c kv.Client, n int) (*AuthFixture, error) {
	f := &AuthFixture{
		Prefix:  fmt.Sprintf("authbench:%d:", time.Now().UnixNano()%1e9),
		Key:     make([]byte, auth.KeySize),
		IdleTTL: time.Hour,
	}
	rand.Read(f.Key)
	m, err := f.sessions(c, redisstore.SessionOptions{})
	if err != nil {
		return nil, err
	}
	store := redisstore.NewSessionStore(c, f.Prefix)
	kr, _ := auth.NewKeyring(f.Key)
	cmds := make([][]string, 0, n)
	for i := range n {
		token, _, err := m.Create(ctx, agentapi.LoginSession{
			TenantID: fmt.Sprintf("tenant-%d", i%16),
			UserID:   fmt.Sprintf("user-%d", i),
			Role:     agentapi.RoleMember,
			KeyID:    fmt.Sprintf("key-%d", i),
		})
		if err != nil {
			return nil, fmt.Errorf("create session: %w", err)
		}
		f.Tokens = append(f.Tokens, token)
		// The baseline reads a value of the same size as ours.
		sealed, err := store.Get(ctx, kr.TokenID(token), f.IdleTTL)
		if err != nil {
			return nil, fmt.Errorf("read back session: %w", err)
		}
		key := f.Prefix + "scs:session:" + token
		f.SCSKeys = append(f.SCSKeys, key)
		cmds = append(cmds, []string{"SET", key, strings.Repeat("s", len(sealed)), "PX", "3600000"})
	}
	rs, err := c.Pipeline(ctx, cmds...)
	if err != nil {
		return nil, err
	}
	for _, r := range rs {
		if r.Err != nil {
			return nil, r.Err
		}
	}
	return f, nil
}

func (f *AuthFixture) sessions(c kv.Client, o redisstore.SessionOptions) (*auth.Sessions, error) {
	kr, err := auth.NewKeyring(f.Key)
	if err != nil {
		return nil, err
	}
	store := redisstore.NewSessionStoreOptions(c, f.Prefix, o)
	return auth.NewSessions(store, kr, f.IdleTTL, 24*time.Hour, nil), nil
}

// Cleanup deletes every key of the fixture, through c.
func (f *AuthFixture) Cleanup(ctx context.Context, c kv.Client) error {
	var firstErr error
	cursor := "0"
	for {
		// Benchmark cleanup only: production code never SCANs.
		v, err := c.Do(ctx, "SCAN", cursor, "MATCH", f.Prefix+"*", "COUNT", "1000")
		if err != nil {
			return err
		}
		arr, err := v.Array()
		if err != nil || len(arr) != 2 {
			return fmt.Errorf("SCAN reply %v", v)
		}
		cursor, _ = arr[0].Text()
		keys, _ := arr[1].Strings()
		if len(keys) > 0 {
			if _, err := c.Do(ctx, append([]string{"DEL"}, keys...)...); err != nil && firstErr == nil {
				firstErr = err
			}
		}
		if cursor == "0" {
			return firstErr
		}
	}
}

// AuthDriver validates the i-th session of a fixture, one way.
type AuthDriver interface {
	Name() string
	Validate(ctx context.Context, i int) error
	Close() error
}

// OursAuth validates through auth.Sessions over redis.SessionStore.
type OursAuth struct {
	label string
	c     *native.Client
	m     *auth.Sessions
	f     *AuthFixture
}

// NewOursAuth dials a new kv/native client (a fresh instance: own cache,
// own refresh log) for f. cached false takes the uncached path.
func NewOursAuth(ctx context.Context, url string, f *AuthFixture, cached bool) (*OursAuth, error) {
	c, err := native.Dial(ctx, native.Options{URL: url, ConnectTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	o := redisstore.SessionOptions{}
	label := "ours"
	if !cached {
		o.LocalTTL = -1
		label = "ours, no cache"
	}
	m, err := f.sessions(c, o)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &OursAuth{label: label, c: c, m: m, f: f}, nil
}

func (o *OursAuth) Name() string { return o.label }
func (o *OursAuth) Close() error { return o.c.Close() }

func (o *OursAuth) Validate(ctx context.Context, i int) error {
	s, err := o.m.Validate(ctx, o.f.Tokens[i%len(o.f.Tokens)])
	if err == nil && s.UserID == "" {
		err = errors.New("validated session without a user")
	}
	return err
}

// GoRedisAuth is the baseline: one GET of the session key per request.
type GoRedisAuth struct {
	rdb *redis.Client
	f   *AuthFixture
}

// NewGoRedisAuth returns a go-redis client with PoolSize = goroutines.
func NewGoRedisAuth(url string, f *AuthFixture, goroutines int) (*GoRedisAuth, error) {
	rdb, err := NewGoRedisClient(url, goroutines)
	if err != nil {
		return nil, err
	}
	return &GoRedisAuth{rdb: rdb, f: f}, nil
}

func (g *GoRedisAuth) Name() string { return "go-redis GET" }
func (g *GoRedisAuth) Close() error { return g.rdb.Close() }

func (g *GoRedisAuth) Validate(ctx context.Context, i int) error {
	b, err := g.rdb.Get(ctx, g.f.SCSKeys[i%len(g.f.SCSKeys)]).Bytes()
	if err == nil && len(b) == 0 {
		err = errors.New("empty session")
	}
	return err
}

// RunAuthFor validates from g goroutines, back to back, for dur; each
// goroutine walks the sessions from its own offset.
func RunAuthFor(ctx context.Context, d AuthDriver, g int, dur time.Duration) Result {
	return runLoop(ctx, d.Name(), g, dur, func(i int) error { return d.Validate(ctx, i) })
}

// RunAuthN validates n times in total over g goroutines (testing.B).
func RunAuthN(ctx context.Context, d AuthDriver, g, n int) error {
	errs := make(chan error, g)
	started := 0
	for gi := range g {
		share := n / g
		if gi < n%g {
			share++
		}
		if share == 0 {
			continue
		}
		started++
		go func() {
			i := gi * keyStride
			for range share {
				if err := d.Validate(ctx, i); err != nil {
					errs <- fmt.Errorf("%s: %w", d.Name(), err)
					return
				}
				i++
			}
			errs <- nil
		}()
	}
	var first error
	for range started {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// runLoop is RunFor's closed loop for any call.
func runLoop(ctx context.Context, name string, g int, dur time.Duration, call func(i int) error) Result {
	type out struct {
		n   int64
		err error
	}
	start := make(chan struct{})
	stop := make(chan struct{})
	results := make(chan out, g)
	for gi := range g {
		go func() {
			i := gi * keyStride
			var n int64
			<-start
			for {
				select {
				case <-stop:
					results <- out{n, nil}
					return
				default:
				}
				if err := call(i); err != nil {
					results <- out{n, fmt.Errorf("%s: %w", name, err)}
					return
				}
				i++
				n++
			}
		}()
	}
	t0 := time.Now()
	close(start)
	timer := time.NewTimer(dur)
	select {
	case <-timer.C:
	case <-ctx.Done():
		timer.Stop()
	}
	close(stop)
	var r Result
	for range g {
		o := <-results
		r.Ops += o.n
		if r.Err == nil {
			r.Err = o.err
		}
	}
	r.Elapsed = time.Since(t0)
	if r.Err == nil {
		r.Err = ctx.Err()
	}
	return r
}

// CompareAuth measures every driver at g goroutines for dur each, after
// warm of unmeasured use each (connections dialled, caches filled), in
// 2*rounds slices alternating the drivers' order, as Compare does.
func CompareAuth(ctx context.Context, drivers []AuthDriver, g int, dur, warm time.Duration, rounds int) []Result {
	return Interleave(len(drivers), dur, warm, rounds, func(i int, d time.Duration) Result {
		return RunAuthFor(ctx, drivers[i], g, d)
	})
}
