// Package cluster lets several `agentapi serve` instances behave as one
// service: a registry of live instances in Redis, and the signing of
// requests one instance forwards to another.
//
// Registry. Every instance renews its entry every TTL/5: a member of the
// sorted set <prefix>{cluster}:instances scored with the time its entry
// expires (Unix ms, from the instance's clock), and its description
// (advertised URL, running sessions, draining) in the hash
// <prefix>{cluster}:info. The two keys share the hash tag {cluster}: on a
// Redis Cluster they are in one slot, so a renewal's pipeline (write both,
// read both) goes to one node and runs in order, as on one server. An
// instance whose score is in the past is dead:
// the first instance to remove it from the set (ZREM answering 1) marks
// the sessions it ran as lost, once. Sessions recorded as running on an
// instance that is not registered at all (it died while Redis was being
// restarted, say) are marked lost too. Only an instance that has renewed
// its own entry without a failure for a full TTL judges the others: when
// Redis comes back from an outage every entry has expired, and the live
// instances get a TTL to renew theirs before anyone is declared dead. A
// renewal that finds this instance's own entry other than it left it
// (Redis lost the registry without any call failing) counts as a gap too. Every instance keeps the list of live
// instances from its last renewal, so looking one up costs no round trip.
//
// Clocks: scores compare instances' clocks, so they must agree to well
// within the TTL (NTP does).
//
// Without Redis there is one instance and none of this runs.
package cluster

import (
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentapi-mt/agentapi/internal/every"
	"github.com/agentapi-mt/agentapi/kv"
)

// Instance is one live server.
type Instance struct {
	ID       string    `json:"id"`
	URL      string    `json:"url"`
	Load     int       `json:"load"` // agent sessions running there
	Draining bool      `json:"draining"`
	Renewed  time.Time `json:"renewed"`
}

// Options configure a Registry.
type Options struct {
	KV     kv.Client
	Prefix string // "agentapi:"
	// ID and URL describe this instance.
	ID, URL string
	// TTL: an instance silent this long is dead (default 10s).
	TTL time.Duration
	// Load reports the sessions running here.
	Load func() int
	// MarkLost marks the sessions an instance ran as lost.
	MarkLost func(ctx context.Context, instance string) (int, error)
	// RunningInstances lists the instances with sessions recorded as
	// running.
	RunningInstances func(ctx context.Context) ([]string, error)
	Now              func() time.Time
	Logger           *slog.Logger
}

// Registry is this instance's view of the cluster.
type Registry struct {
	o        Options
	log      *slog.Logger
	draining atomic.Bool

	sinceMu   sync.Mutex
	since     time.Time // first renewal since the last gap (see Renew)
	lastScore int64     // the score this instance last wrote for itself

	mu   sync.RWMutex
	live map[string]Instance

	stop context.CancelFunc
	done chan struct{}
}

// New registers this instance and keeps its entry renewed until Close.
func New(ctx context.Context, o Options) *Registry {
	if o.TTL <= 0 {
		o.TTL = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Load == nil {
		o.Load = func() int { return 0 }
	}
	r := &Registry{o: o, log: o.Logger, live: map[string]Instance{}, done: make(chan struct{})}
	if err := r.Renew(ctx); err != nil {
		r.log.Warn("cluster: registering this instance failed; retrying", "error", err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	go r.loop(lctx)
	return r
}

func (r *Registry) setKey() string  { return r.o.Prefix + "{cluster}:instances" }
func (r *Registry) infoKey() string { return r.o.Prefix + "{cluster}:info" }

// Self is this instance's id.
func (r *Registry) Self() string { return r.o.ID }

// Drain marks this instance as draining: it is no longer offered new
// sessions (announced at once).
func (r *Registry) Drain(ctx context.Context) {
	r.draining.Store(true)
	if err := r.Renew(ctx); err != nil {
		r.log.Warn("cluster: announcing the drain failed", "error", err)
	}
}

// Lookup returns a live instance by id.
func (r *Registry) Lookup(id string) (Instance, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	in, ok := r.live[id]
	return in, ok
}

// Live lists the live instances, by id.
func (r *Registry) Live() []Instance {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Instance, 0, len(r.live))
	for _, in := range r.live {
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Place picks the instance for a new session: the least loaded live one
// that is not draining, this one on a tie (no hop), else the lowest id.
// ok is false when no instance takes sessions.
func (r *Registry) Place() (Instance, bool) {
	var best Instance
	found := false
	for _, in := range r.Live() {
		if in.Draining {
			continue
		}
		if !found || in.Load < best.Load || (in.Load == best.Load && in.ID == r.o.ID) {
			best, found = in, true
		}
	}
	return best, found
}

func (r *Registry) loop(ctx context.Context) {
	defer close(r.done)
	every.Run(ctx, r.o.TTL/5, func(ctx context.Context) {
		if err := r.Renew(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("cluster: renewing this instance failed", "error", err)
		}
	})
}

// Renew writes this instance's entry, reads the live ones, and marks the
// sessions of dead instances lost. The background loop calls it every
// TTL/5.
func (r *Registry) Renew(ctx context.Context) error {
	now := r.o.Now()
	self := Instance{ID: r.o.ID, URL: r.o.URL, Load: r.o.Load(), Draining: r.draining.Load(), Renewed: now}
	info, _ := json.Marshal(self)
	expires := strconv.FormatInt(now.Add(r.o.TTL).UnixMilli(), 10)
	start := time.Now()
	res, err := r.o.KV.Pipeline(ctx,
		[]string{"ZSCORE", r.setKey(), r.o.ID},
		[]string{"ZADD", r.setKey(), expires, r.o.ID},
		[]string{"HSET", r.infoKey(), r.o.ID, string(info)},
		[]string{"ZRANGE", r.setKey(), "0", "-1", "WITHSCORES"},
		[]string{"HGETALL", r.infoKey()},
	)
	if err == nil {
		for _, x := range res {
			if x.Err != nil {
				err = x.Err
				break
			}
		}
	}
	// Only an instance that has itself renewed without a gap for a full
	// TTL judges the others: after an outage of Redis (or of this
	// instance's link to it) every entry has expired, and the others need
	// a TTL to renew theirs before their silence means anything. A gap is
	// a failed renewal, a slow one (past TTL/5), or finding this
	// instance's own entry other than it left it -- Redis lost the
	// registry (a restart without persistence, an eviction, a failover to
	// a replica behind) without any renewal failing.
	r.sinceMu.Lock()
	gap := err != nil || time.Since(start) > r.o.TTL/5
	if err == nil {
		text, _ := res[0].Value.Text()
		score, perr := strconv.ParseFloat(text, 64)
		gap = gap || (r.lastScore != 0 && (perr != nil || int64(score) != r.lastScore))
		r.lastScore = now.Add(r.o.TTL).UnixMilli()
	} else {
		r.lastScore = 0
	}
	switch {
	case gap:
		r.since = time.Time{}
		if err == nil {
			r.since = now // renewed now: the clock starts again
		}
	case r.since.IsZero():
		r.since = now
	}
	judge := !r.since.IsZero() && now.Sub(r.since) >= r.o.TTL
	r.sinceMu.Unlock()
	if err != nil {
		return err
	}
	pairs, _ := res[3].Value.Strings()
	infos, _ := res[4].Value.Strings()
	described := map[string]Instance{}
	for i := 0; i+1 < len(infos); i += 2 {
		var in Instance
		if json.Unmarshal([]byte(infos[i+1]), &in) == nil {
			described[infos[i]] = in
		}
	}
	live := map[string]Instance{}
	var dead []string
	for i := 0; i+1 < len(pairs); i += 2 {
		id := pairs[i]
		expiry, err := strconv.ParseFloat(pairs[i+1], 64)
		if err == nil && int64(expiry) >= now.UnixMilli() {
			if in, ok := described[id]; ok {
				live[id] = in
			}
			continue
		}
		dead = append(dead, id)
	}
	r.mu.Lock()
	r.live = live
	r.mu.Unlock()

	if !judge {
		return nil
	}
	for _, id := range dead {
		removed, err := r.o.KV.Do(ctx, "ZREM", r.setKey(), id)
		if n, _ := removed.Int(); err != nil || n != 1 {
			continue // another instance took it
		}
		r.o.KV.Do(ctx, "HDEL", r.infoKey(), id)
		r.markLost(ctx, id, "its registration expired")
	}
	// Sessions of instances nobody has heard of (time enough for the
	// others to register has passed: see judge).
	if r.o.RunningInstances != nil {
		ids, err := r.o.RunningInstances(ctx)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if _, ok := live[id]; !ok && id != r.o.ID {
				r.markLost(ctx, id, "it is not registered")
			}
		}
	}
	return nil
}

func (r *Registry) markLost(ctx context.Context, id, why string) {
	if r.o.MarkLost == nil {
		return
	}
	n, err := r.o.MarkLost(ctx, id)
	if err != nil {
		r.log.Error("cluster: marking a dead instance's sessions lost failed", "instance", id, "error", err)
		return
	}
	if n > 0 {
		r.log.Warn("cluster: an instance is dead; its sessions are marked lost (their transcripts remain)", "instance", id, "why", why, "sessions", n)
	}
}

// Close stops renewing and removes this instance's entry.
func (r *Registry) Close(ctx context.Context) {
	r.stop()
	<-r.done
	if _, err := r.o.KV.Pipeline(ctx, []string{"ZREM", r.setKey(), r.o.ID}, []string{"HDEL", r.infoKey(), r.o.ID}); err != nil {
		r.log.Warn("cluster: removing this instance's entry failed; it expires by itself", "error", err)
	}
}
