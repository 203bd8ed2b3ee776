package cache

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// Defaults for LoaderOptions.
const (
	DefaultRefreshAfter  = 0.8
	DefaultLoadTimeout   = 30 * time.Second
	DefaultMaxEntryBytes = 1 << 20
)

// LoadFunc computes an entry on a miss. Only Value, ContentType and ETag of
// the entry it returns matter. Its error is returned to the callers that
// waited for it and is never cached.
type LoadFunc func(ctx context.Context) (Entry, error)

// LoaderOptions configure a Loader. The zero value is ready to use.
type LoaderOptions struct {
	// Now is the clock that ages entries for early refresh. It should be
	// the clock of the Backend. Default time.Now.
	Now func() time.Time
	// RefreshAfter is the fraction of an entry's ttl after which a hit
	// also refreshes it in the background. Default DefaultRefreshAfter;
	// 1 or more: never.
	RefreshAfter float64
	// LoadTimeout bounds every load the Loader runs on its own (see
	// GetOrLoad). Default DefaultLoadTimeout.
	LoadTimeout time.Duration
	// MaxEntryBytes: a loaded value longer than this is returned but not
	// stored. Default DefaultMaxEntryBytes.
	MaxEntryBytes int
	// OnError, when set, is called with every error of the Backend (each
	// also counted in Stats.Errors), e.g. to log it. It must not block.
	OnError func(err error)
}

// Stats counts what a Loader did since it was made. Every count only
// grows. Hits + Misses is the number of GetOrLoad calls that got past
// argument checks, less those whose context ended during the lookup.
type Stats struct {
	Name       string // the Loader's name
	Hits       uint64 // GetOrLoad answered from the cache
	Misses     uint64 // GetOrLoad answered by a load (its own or a shared one)
	Bypasses   uint64 // Reload calls (e.g. Cache-Control: no-cache)
	Loads      uint64 // load functions run; concurrent misses share one
	LoadErrors uint64 // load functions that failed (nothing was stored)
	Refreshes  uint64 // background refreshes started
	Errors     uint64 // Backend calls that failed (a lookup: answered by load; a Put: not stored)
}

// Loader is a per-process front of a Backend: it answers from the cache,
// runs a load function on a miss, once for all concurrent callers of a
// key, and refreshes entries in the background before they expire. Its
// methods are safe for concurrent use. Close stops its background work.
//
// Names: a Loader's entries live in Backend scopes named "<name>/<scope>",
// so Loaders with different names never see each other's entries, even
// over one Backend; a metrics exporter reads Stats per name.
type Loader struct {
	name         string
	b            Backend
	now          func() time.Time
	refreshAfter float64
	loadTimeout  time.Duration
	maxEntry     int
	onError      func(error)

	life context.Context // cancelled by Close
	stop context.CancelFunc

	mu      sync.Mutex
	flights map[string]*flight
	closed  atomic.Bool    // set under mu, read without it
	wg      sync.WaitGroup // flights; Add only under mu while not closed

	hits, misses, bypasses, loads, loadErrors, refreshes, errs atomic.Uint64

	// Test hooks: joined runs when a caller joins another's flight,
	// flightDone when a flight has finished.
	joined, flightDone func()
}

// flight is one load in progress for a (tenant, scope, key, generation),
// shared by the callers that miss meanwhile.
type flight struct {
	done chan struct{}
	e    Entry
	err  error
}

// NewLoader returns a Loader named name over b. The name must be made of
// ASCII letters, digits, '-' and '_' (it is fixed by the program, so an
// invalid one panics).
func NewLoader(name string, b Backend, o LoaderOptions) *Loader {
	if !validName(name) {
		panic("cache.NewLoader: invalid name " + strconv.Quote(name) + ": want [A-Za-z0-9_-]+")
	}
	l := &Loader{
		name:         name,
		b:            b,
		now:          o.Now,
		refreshAfter: o.RefreshAfter,
		loadTimeout:  o.LoadTimeout,
		maxEntry:     o.MaxEntryBytes,
		onError:      o.OnError,
		flights:      make(map[string]*flight),
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.refreshAfter <= 0 {
		l.refreshAfter = DefaultRefreshAfter
	}
	if l.loadTimeout <= 0 {
		l.loadTimeout = DefaultLoadTimeout
	}
	if l.maxEntry <= 0 {
		l.maxEntry = DefaultMaxEntryBytes
	}
	l.life, l.stop = context.WithCancel(context.Background())
	return l
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Name is the name the Loader was made with.
func (l *Loader) Name() string { return l.name }

// Stats returns the Loader's counters. Each is read atomically; together
// they are not one snapshot.
func (l *Loader) Stats() Stats {
	return Stats{
		Name:       l.name,
		Hits:       l.hits.Load(),
		Misses:     l.misses.Load(),
		Bypasses:   l.bypasses.Load(),
		Loads:      l.loads.Load(),
		LoadErrors: l.loadErrors.Load(),
		Refreshes:  l.refreshes.Load(),
		Errors:     l.errs.Load(),
	}
}

// GetOrLoad returns the entry cached at (tenant, scope, key) with hit true,
// or, on a miss, the entry load computes, stored for ttl, with hit false.
//
// Tenant must not be empty and ttl must be positive (KindInvalid, load is
// not called).
//
// On a miss, load runs once for every caller in this process that misses
// the same key under the same generation meanwhile. It runs in a goroutine
// of the Loader, with a context that has ctx's values but not its
// cancellation (a caller giving up does not fail the others), bounded by
// LoadTimeout and cancelled by Close. A caller whose ctx ends stops
// waiting and gets ctx's error. The entry is stored under the generation
// read before load started, so a Bump during the load makes the store a
// no-op (see the package doc). An error from load is returned to every
// waiting caller and nothing is stored; a panic in load is returned as an
// error of kind KindInternal.
//
// A hit on an entry older than RefreshAfter of its ttl also starts one
// background load (unless one is running for the key) that replaces the
// entry; the caller gets the cached entry at once.
//
// When the Backend fails, the lookup is a miss: load runs as above (still
// shared) but nothing is stored, and the error is counted. After Close,
// load runs in the caller's goroutine and nothing is read or stored.
func (l *Loader) GetOrLoad(ctx context.Context, tenant, scope, key string, ttl time.Duration, load LoadFunc) (e Entry, hit bool, err error) {
	const op = "cache.getorload"
	if err := checkArgs(op, tenant, ttl, load); err != nil {
		return Entry{}, false, err
	}
	if l.isClosed() {
		l.misses.Add(1)
		e, err := l.runLoad(ctx, load)
		return e, false, err
	}
	bs := l.scope(scope)
	e, gen, ok, err := l.b.Get(ctx, tenant, bs, key)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return Entry{}, false, agentapi.E(op, agentapi.KindOther, cerr)
		}
		l.backendError(err)
		l.misses.Add(1)
		e, err := l.await(ctx, op, flightKey(tenant, bs, key, "down"), func(ctx context.Context) (Entry, error) {
			return l.loadAndPut(ctx, tenant, bs, key, 0, ttl, load, false)
		})
		return e, false, err
	}
	if ok {
		l.hits.Add(1)
		if l.refreshAfter < 1 && e.TTL > 0 && l.now().Sub(e.StoredAt) >= time.Duration(float64(e.TTL)*l.refreshAfter) {
			l.refresh(ctx, tenant, bs, key, gen, ttl, load)
		}
		return e, true, nil
	}
	l.misses.Add(1)
	e, err = l.await(ctx, op, flightKey(tenant, bs, key, strconv.FormatUint(gen, 10)), func(ctx context.Context) (Entry, error) {
		return l.loadAndPut(ctx, tenant, bs, key, gen, ttl, load, true)
	})
	return e, false, err
}

// Reload runs load in the caller's goroutine, without looking at the
// cached entry, and stores its result at (tenant, scope, key) for ttl
// under the generation read before load ran. It is what a client's
// "Cache-Control: no-cache" asks for. Arguments, errors and the failure
// policy are those of GetOrLoad.
func (l *Loader) Reload(ctx context.Context, tenant, scope, key string, ttl time.Duration, load LoadFunc) (Entry, error) {
	const op = "cache.reload"
	if err := checkArgs(op, tenant, ttl, load); err != nil {
		return Entry{}, err
	}
	l.bypasses.Add(1)
	if l.isClosed() {
		return l.runLoad(ctx, load)
	}
	bs := l.scope(scope)
	_, gen, _, err := l.b.Get(ctx, tenant, bs, key)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return Entry{}, agentapi.E(op, agentapi.KindOther, cerr)
		}
		l.backendError(err)
	}
	return l.loadAndPut(ctx, tenant, bs, key, gen, ttl, load, err == nil)
}

// Invalidate bumps the generation of (tenant, scope): no entry of the scope
// stored before it returns is served afterwards, on any instance sharing
// the Backend. A writer calls it after changing what the scope's entries
// were computed from. Its error is the Backend's (also counted): the
// scope may then still serve old entries until they expire.
func (l *Loader) Invalidate(ctx context.Context, tenant, scope string) error {
	if _, err := l.b.Bump(ctx, tenant, l.scope(scope)); err != nil {
		if agentapi.KindOf(err) != agentapi.KindInvalid {
			l.backendError(err)
		}
		return agentapi.E("cache.invalidate", agentapi.KindOther, err)
	}
	return nil
}

// Close stops the Loader's background work: it cancels the context of
// every load it runs and waits for them to return. Callers waiting for
// such a load get its result. Later calls do not cache. Close is
// idempotent and returns nil; it does not close the Backend.
func (l *Loader) Close() error {
	l.mu.Lock()
	l.closed.Store(true)
	l.mu.Unlock()
	l.stop()
	l.wg.Wait()
	return nil
}

func (l *Loader) isClosed() bool { return l.closed.Load() }

func checkArgs(op, tenant string, ttl time.Duration, load LoadFunc) error {
	if err := checkPut(op, tenant, ttl); err != nil {
		return err
	}
	if load == nil {
		return agentapi.E(op, agentapi.KindInvalid, errors.New("cache: nil load function"))
	}
	return nil
}

func (l *Loader) scope(s string) string { return l.name + "/" + s }

// flightKey length-prefixes its parts so that different keys never share
// a flight.
func flightKey(tenant, scope, key, gen string) string {
	return strconv.Itoa(len(tenant)) + ":" + tenant + strconv.Itoa(len(scope)) + ":" + scope +
		strconv.Itoa(len(key)) + ":" + key + gen
}

func (l *Loader) backendError(err error) {
	l.errs.Add(1)
	if l.onError != nil {
		l.onError(err)
	}
}

// await joins the flight fk or starts it with fn, and waits for it or for
// ctx.
func (l *Loader) await(ctx context.Context, op, fk string, fn LoadFunc) (Entry, error) {
	f, started, ok := l.start(ctx, fk, fn)
	if !ok { // closed meanwhile
		return fn(ctx)
	}
	if !started && l.joined != nil {
		l.joined()
	}
	select {
	case <-f.done:
		return f.e, f.err
	case <-ctx.Done():
		return Entry{}, agentapi.E(op, agentapi.KindOther, ctx.Err())
	}
}

// refresh starts a background load of an entry found old, unless a load
// of it is already running.
func (l *Loader) refresh(ctx context.Context, tenant, bs, key string, gen uint64, ttl time.Duration, load LoadFunc) {
	_, started, _ := l.start(ctx, flightKey(tenant, bs, key, strconv.FormatUint(gen, 10)), func(ctx context.Context) (Entry, error) {
		return l.loadAndPut(ctx, tenant, bs, key, gen, ttl, load, true)
	})
	if started {
		l.refreshes.Add(1)
	}
}

// start returns the flight fk, starting it with fn when there is none
// (started). ok is false when the Loader is closed.
func (l *Loader) start(ctx context.Context, fk string, fn LoadFunc) (f *flight, started, ok bool) {
	l.mu.Lock()
	if l.closed.Load() {
		l.mu.Unlock()
		return nil, false, false
	}
	if f = l.flights[fk]; f != nil {
		l.mu.Unlock()
		return f, false, true
	}
	f = &flight{done: make(chan struct{})}
	l.flights[fk] = f
	l.wg.Add(1)
	l.mu.Unlock()
	go l.run(ctx, fk, f, fn)
	return f, true, true
}

func (l *Loader) run(parent context.Context, fk string, f *flight, fn LoadFunc) {
	defer l.wg.Done()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), l.loadTimeout)
	stop := context.AfterFunc(l.life, cancel)
	f.e, f.err = fn(ctx)
	stop()
	cancel()
	l.mu.Lock()
	delete(l.flights, fk)
	l.mu.Unlock()
	close(f.done)
	if l.flightDone != nil {
		l.flightDone()
	}
}

// loadAndPut runs load and, when put and the value is not too large,
// stores the result under gen.
func (l *Loader) loadAndPut(ctx context.Context, tenant, bs, key string, gen uint64, ttl time.Duration, load LoadFunc, put bool) (Entry, error) {
	e, err := l.runLoad(ctx, load)
	if err != nil {
		return Entry{}, err
	}
	e.StoredAt, e.TTL = stamp(l.now()), ttl
	if put && len(e.Value) <= l.maxEntry {
		if err := l.b.Put(ctx, tenant, bs, key, gen, e, ttl); err != nil {
			l.backendError(err)
		}
	}
	return e, nil
}

// runLoad calls load, counting it, and turns a panic into an error.
func (l *Loader) runLoad(ctx context.Context, load LoadFunc) (e Entry, err error) {
	l.loads.Add(1)
	defer func() {
		if p := recover(); p != nil {
			e, err = Entry{}, agentapi.E("cache.load", agentapi.KindInternal, &panicError{val: p, stack: debug.Stack()})
		}
		var pass passThrough
		if err != nil && !errors.As(err, &pass) {
			l.loadErrors.Add(1)
		}
	}()
	return load(ctx)
}

// panicError is a panic in a load function.
type panicError struct {
	val   any
	stack []byte
}

func (p *panicError) Error() string { return fmt.Sprintf("load panicked: %v\n%s", p.val, p.stack) }

// passThrough is implemented by the errors with which a load function says
// "here is a result, but it must not be cached" (Handler's non-200
// responses); they are not counted as load errors.
type passThrough interface {
	error
	passThrough()
}
