// Package tenantcfg serves tenant configurations and feature flags on the
// request path, from a two-level cache in front of the system of record.
//
// Level one is a map in this process: a lookup is a read-locked map access
// and an atomic load, well under a microsecond. Level two is Redis, shared
// by every instance, so that a change or a fresh instance does not send
// every instance to the database at once. The database
// (agentapi.TenantConfigStore) is the truth.
//
// Invalidation. Every change is written to the database first, then to
// level two, then announced by incrementing one Redis counter, the epoch
// (key <prefix>config:epoch). Each instance reads the epoch every
// PollInterval (250 ms by default) and treats level-one entries loaded
// under an older epoch as missing, so a change made on any instance is
// honoured by every instance within PollInterval plus one load. Level-two
// entries carry the configuration's version and are only ever replaced by
// a higher version (one Lua script), so a slow reader cannot put an old
// configuration back.
//
// Without Redis (one instance) level one is the only level and a change
// replaces its entry at once. While Redis cannot be reached, changes made
// elsewhere cannot be announced: level-one entries are then reloaded from
// the database once they are older than StaleAfter (1 s), so the one-second
// promise holds at the cost of a database read per tenant per second.
//
// Effective flags of a tenant are the built-in defaults
// (agentapi.DefaultFlags), replaced by the global flags stored by platform
// admins, replaced by the tenant's own overrides. Global flags are not kept
// in level two: an instance reads them from the database once per change.
package tenantcfg

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/internal/every"
	"github.com/agentapi-mt/agentapi/kv"
)

// Options configure a Service.
type Options struct {
	Store agentapi.TenantConfigStore
	// KV, when set, is level two and carries the invalidations between
	// instances. nil: one instance, level one only.
	KV kv.Client
	// Prefix starts every Redis key ("agentapi:").
	Prefix string
	// PollInterval is how often the epoch is read (default 250ms).
	PollInterval time.Duration
	// StaleAfter bounds the age of level-one entries while the epoch
	// cannot be read (default 1s).
	StaleAfter time.Duration
	// L2TTL is how long level-two entries live (default 10 minutes).
	L2TTL  time.Duration
	Logger *slog.Logger
}

// Service is the configuration cache. Safe for concurrent use.
type Service struct {
	o   Options
	log *slog.Logger

	// epoch is the last epoch read from Redis; synced is whether that read
	// was the latest poll's (false: Redis unreachable, entries age out).
	epoch  atomic.Int64
	synced atomic.Bool
	failed atomic.Bool // a poll failed and was logged

	mu      sync.RWMutex
	tenants map[string]*entry
	global  *globalEntry

	hits, misses atomic.Uint64

	stop context.CancelFunc
	done chan struct{}
}

// entry is one tenant's configuration with its effective flags, as loaded
// under epoch at loaded.
type entry struct {
	cfg    agentapi.TenantConfig
	flags  map[string]agentapi.Flag
	epoch  int64
	loaded time.Time
}

type globalEntry struct {
	flags  map[string]agentapi.Flag
	epoch  int64
	loaded time.Time
}

// New returns a Service and, with KV, starts its epoch poller; Close stops
// it.
func New(o Options) *Service {
	if o.PollInterval <= 0 {
		o.PollInterval = 250 * time.Millisecond
	}
	if o.StaleAfter <= 0 {
		o.StaleAfter = time.Second
	}
	if o.L2TTL <= 0 {
		o.L2TTL = 10 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{o: o, log: o.Logger, tenants: map[string]*entry{}, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	if o.KV == nil {
		s.synced.Store(true)
		close(s.done)
		return s
	}
	s.poll(ctx)
	go s.poller(ctx)
	return s
}

// Close stops the poller.
func (s *Service) Close() {
	s.stop()
	<-s.done
}

func (s *Service) epochKey() string { return s.o.Prefix + "config:epoch" }

func (s *Service) l2Key(tenantID string) string {
	return s.o.Prefix + "{t:" + tenantID + "}:config"
}

func (s *Service) poller(ctx context.Context) {
	defer close(s.done)
	every.Run(ctx, s.o.PollInterval, s.poll)
}

// poll reads the epoch once.
func (s *Service) poll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(s.o.PollInterval, time.Second))
	defer cancel()
	v, err := s.o.KV.Do(ctx, "GET", s.epochKey())
	if err != nil {
		if s.synced.Swap(false) || !s.failed.Swap(true) {
			s.log.Warn("tenant configuration: cannot read the change epoch from Redis; reloading from the database every second until it returns", "error", err)
		}
		return
	}
	var n int64
	if !v.IsNil() {
		if n, err = v.Int(); err != nil {
			s.log.Error("tenant configuration: the change epoch is not a number", "key", s.epochKey(), "value", v.String())
			return
		}
	}
	if old := s.epoch.Swap(n); old != n {
		s.forget()
	}
	if !s.synced.Swap(true) && s.failed.Swap(false) {
		s.log.Info("tenant configuration: change epoch readable again")
	}
}

// forget drops every level-one entry (they are all of an older epoch).
func (s *Service) forget() {
	s.mu.Lock()
	clear(s.tenants)
	s.global = nil
	s.mu.Unlock()
}

// fresh reports whether an entry loaded under epoch at loaded may serve.
func (s *Service) fresh(epoch int64, loaded time.Time) bool {
	if epoch != s.epoch.Load() {
		return false
	}
	return s.synced.Load() || time.Since(loaded) < s.o.StaleAfter
}

// Config returns tenant tenantID's configuration (the zero one when none
// was set). KindNotFound when the tenant does not exist.
func (s *Service) Config(ctx context.Context, tenantID string) (agentapi.TenantConfig, error) {
	e, err := s.lookup(ctx, tenantID)
	if err != nil {
		return agentapi.TenantConfig{}, err
	}
	return e.cfg, nil
}

// Flags returns the effective flags of tenant tenantID.
func (s *Service) Flags(ctx context.Context, tenantID string) (map[string]agentapi.Flag, error) {
	e, err := s.lookup(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	return e.flags, nil
}

// FlagOn reports whether flag name is on for user of tenant. An unknown
// flag is off. When the configuration cannot be read, the server's own
// flags take their built-in default.
func (s *Service) FlagOn(ctx context.Context, tenantID, userID, name string) bool {
	flags, err := s.Flags(ctx, tenantID)
	if err != nil {
		flags = agentapi.DefaultFlags()
	}
	return flags[name].On(name, tenantID, userID)
}

// Stats reports level-one hits and misses.
func (s *Service) Stats() (hits, misses uint64) { return s.hits.Load(), s.misses.Load() }

func (s *Service) lookup(ctx context.Context, tenantID string) (*entry, error) {
	s.mu.RLock()
	e := s.tenants[tenantID]
	s.mu.RUnlock()
	if e != nil && s.fresh(e.epoch, e.loaded) {
		s.hits.Add(1)
		return e, nil
	}
	s.misses.Add(1)
	epoch, now := s.epoch.Load(), time.Now()
	global, err := s.globalFlags(ctx, epoch, now)
	if err != nil {
		return nil, err
	}
	cfg, err := s.load(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	flags := make(map[string]agentapi.Flag, len(global)+len(cfg.Flags))
	for k, v := range global {
		flags[k] = v
	}
	for k, v := range cfg.Flags {
		flags[k] = v
	}
	e = &entry{cfg: cfg, flags: flags, epoch: epoch, loaded: now}
	s.mu.Lock()
	s.tenants[tenantID] = e
	s.mu.Unlock()
	return e, nil
}

func (s *Service) globalFlags(ctx context.Context, epoch int64, now time.Time) (map[string]agentapi.Flag, error) {
	s.mu.RLock()
	g := s.global
	s.mu.RUnlock()
	if g != nil && s.fresh(g.epoch, g.loaded) {
		return g.flags, nil
	}
	stored, err := s.o.Store.GlobalFlags(ctx)
	if err != nil {
		return nil, err
	}
	flags := agentapi.DefaultFlags()
	for k, v := range stored {
		flags[k] = v
	}
	s.mu.Lock()
	s.global = &globalEntry{flags: flags, epoch: epoch, loaded: now}
	s.mu.Unlock()
	return flags, nil
}

// putIfNewer stores a configuration in level two unless a higher version is
// there. KEYS[1]: the tenant's key. ARGV: version, JSON, TTL ms.
var putIfNewer = kv.NewScript(`local cur = redis.call('HGET', KEYS[1], 'v')
if cur and tonumber(cur) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'c', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`)

// load reads level two, then the database (filling level two).
func (s *Service) load(ctx context.Context, tenantID string) (agentapi.TenantConfig, error) {
	if s.o.KV != nil && s.synced.Load() {
		v, err := s.o.KV.Do(ctx, "HGET", s.l2Key(tenantID), "c")
		if err == nil && !v.IsNil() {
			var c agentapi.TenantConfig
			text, _ := v.Text()
			if json.Unmarshal([]byte(text), &c) == nil {
				return c, nil
			}
		}
	}
	c, err := s.o.Store.TenantConfig(ctx, tenantID)
	if err != nil {
		return c, err
	}
	if s.synced.Load() {
		if err := s.fill(ctx, tenantID, c); err != nil {
			s.log.Debug("tenant configuration: level-two fill failed", "tenant", tenantID, "error", err)
		}
	}
	return c, nil
}

// fill writes c to level two unless a newer version is there. A failed
// fill after a read only costs a later database read.
func (s *Service) fill(ctx context.Context, tenantID string, c agentapi.TenantConfig) error {
	if s.o.KV == nil {
		return nil
	}
	body, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = s.o.KV.Eval(ctx, putIfNewer, []string{s.l2Key(tenantID)},
		strconv.FormatInt(c.Version, 10), string(body), strconv.FormatInt(s.o.L2TTL.Milliseconds(), 10))
	return err
}

// Put validates and stores tenant tenantID's configuration, and announces
// the change to every instance. known checks agent names (nil: not
// checked).
func (s *Service) Put(ctx context.Context, tenantID string, c agentapi.TenantConfig, known func(string) bool) (agentapi.TenantConfig, error) {
	if err := c.Validate(known); err != nil {
		return agentapi.TenantConfig{}, err
	}
	stored, err := s.o.Store.PutTenantConfig(ctx, tenantID, c, time.Now())
	if err != nil {
		return stored, err
	}
	// Level two must not keep the old version: replace it, or at least
	// remove it, before announcing. When neither works the change is
	// stored but not announced, and the caller is told to retry.
	if err := s.fill(ctx, tenantID, stored); err != nil {
		if _, derr := s.o.KV.Do(ctx, "DEL", s.l2Key(tenantID)); derr != nil {
			s.forget()
			return stored, agentapi.E("tenantcfg.put", agentapi.KindUnavailable, fmt.Errorf("the configuration was stored (version %d) but other instances could not be told; retry: %w", stored.Version, err))
		}
	}
	return stored, s.announce(ctx, "tenant.config")
}

// PutGlobalFlag stores a global flag and announces the change.
func (s *Service) PutGlobalFlag(ctx context.Context, name string, f agentapi.Flag) error {
	if err := s.o.Store.PutGlobalFlag(ctx, name, f, time.Now()); err != nil {
		return err
	}
	return s.announce(ctx, "flags")
}

// DeleteGlobalFlag removes a global flag (the built-in default applies
// again) and announces the change.
func (s *Service) DeleteGlobalFlag(ctx context.Context, name string) error {
	if err := s.o.Store.DeleteGlobalFlag(ctx, name); err != nil {
		return err
	}
	return s.announce(ctx, "flags")
}

// GlobalFlags returns the effective global flags: built-in defaults
// replaced by the stored ones.
func (s *Service) GlobalFlags(ctx context.Context) (map[string]agentapi.Flag, error) {
	return s.globalFlags(ctx, s.epoch.Load(), time.Now())
}

// Forget drops tenant tenantID from both levels and announces it (call it
// after the tenant was deleted).
func (s *Service) Forget(ctx context.Context, tenantID string) error {
	if s.o.KV != nil {
		if _, err := s.o.KV.Do(ctx, "DEL", s.l2Key(tenantID)); err != nil {
			s.log.Warn("tenant configuration: removing the level-two entry failed", "tenant", tenantID, "error", err)
		}
	}
	return s.announce(ctx, "tenant.forget")
}

// announce tells every instance (this one included) that something
// changed. The change itself is already stored; an error here means other
// instances learn of it only through StaleAfter-bounded reloads once they
// cannot read the epoch either, or at the next announced change -- so it
// is reported to the caller, who can retry.
func (s *Service) announce(ctx context.Context, what string) error {
	if s.o.KV == nil {
		s.forget()
		return nil
	}
	v, err := s.o.KV.Do(ctx, "INCR", s.epochKey())
	if err != nil {
		s.forget() // this instance, at least, sees the change
		s.log.Error("tenant configuration: announcing a change failed; other instances may serve the old value until Redis is reachable", "change", what, "error", err)
		return agentapi.E("tenantcfg.announce", agentapi.KindUnavailable, err)
	}
	n, _ := v.Int()
	if old := s.epoch.Swap(n); old != n {
		s.forget()
	}
	return nil
}
