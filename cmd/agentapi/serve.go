package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humachi"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/auth"
	"github.com/agentapi-mt/agentapi/breaker"
	"github.com/agentapi-mt/agentapi/cache"
	"github.com/agentapi-mt/agentapi/cluster"
	"github.com/agentapi-mt/agentapi/config"
	"github.com/agentapi-mt/agentapi/httpapi"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/connect"
	"github.com/agentapi-mt/agentapi/memory"
	"github.com/agentapi-mt/agentapi/metrics"
	"github.com/agentapi-mt/agentapi/ratelimit"
	"github.com/agentapi-mt/agentapi/redis"
	"github.com/agentapi-mt/agentapi/runner"
	"github.com/agentapi-mt/agentapi/sql"
	"github.com/agentapi-mt/agentapi/tenantcfg"
	"github.com/agentapi-mt/agentapi/usage"
	"github.com/agentapi-mt/agentapi/web"
)

// serve runs the multi-tenant control plane. The wiring below is the whole
// of it: configuration, then each dependency, then the routes, then the
// shutdown in reverse order.
func serve(args []string, env config.Env, stderr io.Writer) int {
	cfg, ok := loadConfig(args, env, stderr)
	if !ok {
		return 2
	}
	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fail := func(msg string, args ...any) int {
		log.Error(msg, args...)
		return 1
	}

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fail("cannot create the data directory; set AGENTAPI_DATA_DIR or --data-dir to a writable place", "dir", cfg.DataDir, "error", err)
	}
	keySource, err := cfg.ResolveTokenKey(log)
	if err != nil {
		return fail("cannot load TOKEN_ENCRYPTION_KEY", "error", err)
	}
	keyring, err := auth.NewKeyring(cfg.TokenKey, cfg.PreviousTokenKeys...)
	if err != nil {
		return fail("TOKEN_ENCRYPTION_KEY", "error", err)
	}
	catalog, err := runner.LoadCatalog(cfg.Tenancy.AgentsFile)
	if err != nil {
		return fail("cannot load the agent catalog", "error", err)
	}

	// Redis (optional) and the system of record.
	sw := connect.Open(ctx, cfg.Redis, log)
	if sw != nil {
		defer sw.Close()
	} else {
		log.Info("redis disabled (REDIS_ENABLE is not true); using in-memory state")
	}
	db, err := sql.Open(ctx, cfg.DatabaseURL, filepath.Join(cfg.DataDir, "agentapi.db"))
	if err != nil {
		return fail("cannot open the database; check DATABASE_URL", "error", err)
	}
	defer db.Close()
	log.Info("database ready", "driver", db.Driver(), "addr", db.Describe())

	// Login sessions.
	var store agentapi.SessionStore
	switch cfg.Session.Storage {
	case config.StorageRedis:
		store = redis.NewSessionStore(sw, "agentapi:")
	default:
		ms := memory.NewSessionStore(time.Now, cfg.Session.CleanupInterval)
		defer ms.Close()
		store = ms
	}
	logins := auth.NewSessions(store, keyring, cfg.Session.TTL, cfg.Tenancy.LoginMaxLifetime, time.Now)

	// Circuit breakers, shared through Redis when there is one. Only a
	// dependency's failure counts, never a caller's mistake.
	var shared kv.Client // stays a nil interface without Redis
	if sw != nil {
		shared = sw
	}
	breakers := breaker.NewRegistry(breaker.Settings{
		FailureThreshold: cfg.CircuitBreaker.FailureThreshold,
		SuccessThreshold: cfg.CircuitBreaker.SuccessThreshold,
		Timeout:          cfg.CircuitBreaker.Timeout,
	}, breaker.Options{
		KV: shared, Prefix: "agentapi:", Logger: log, Disabled: !cfg.CircuitBreaker.Enabled,
		IsFailure: func(err error) bool {
			switch agentapi.KindOf(err) {
			case agentapi.KindUnavailable, agentapi.KindInternal, agentapi.KindOther:
				return true
			}
			return false
		},
	})
	db.SetGuard(sql.Guard(breakers.Guard("database")))
	// A database back from an outage is used again within a second, not
	// after the rest of CIRCUIT_BREAKER_TIMEOUT: a ping (past the breaker)
	// closes it.
	stopDBWatch := breakers.Watch("database", time.Second, db.Ping)
	defer stopDBWatch()

	// Tenant configuration and feature flags: local, then Redis, then the
	// database; changes reach every instance within a second.
	tenantCfg := tenantcfg.New(tenantcfg.Options{Store: db, KV: shared, Prefix: "agentapi:", Logger: log})
	defer tenantCfg.Close()

	// Rate limits: shared through Redis, with local limits as the fallback.
	var limits *httpapi.RateLimits
	if cfg.RateLimit.Enabled {
		local := ratelimit.NewMemory(ratelimit.MemoryOptions{})
		var limiter agentapi.RateLimiter = local
		if sw != nil {
			policy := ratelimit.FailOpen
			if cfg.RateLimit.FailClosed {
				policy = ratelimit.FailClosed
			}
			limiter = ratelimit.NewFallback(ratelimit.NewRedis(sw, ratelimit.RedisOptions{}), local, ratelimit.FallbackOptions{Policy: policy, Logger: log})
		}
		perMinute := func(n, burst int) agentapi.RateLimit {
			return agentapi.RateLimit{Rate: n, Period: time.Minute, Burst: burst}
		}
		limits = &httpapi.RateLimits{
			Limiter: limiter, Prefix: "agentapi:", TrustedProxies: cfg.RateLimit.TrustedProxies,
			IP:     perMinute(cfg.RateLimit.IPPerMinute, cfg.RateLimit.IPBurst),
			Login:  perMinute(cfg.RateLimit.LoginPerMinute, cfg.RateLimit.LoginBurst),
			User:   perMinute(cfg.RateLimit.RequestsPerMinute, cfg.RateLimit.Burst),
			Tenant: tenantCfg.Config,
		}
	}

	// Usage: counted locally, pushed to Redis every second (or kept in
	// memory), flushed to the database every 10 s -- every 2 s without
	// Redis, where a crash also loses what was not flushed yet.
	var usageStore usage.Store = usage.NewMemory(usage.MemoryOptions{})
	flushEvery := 2 * time.Second
	if sw != nil {
		usageStore, flushEvery = usage.NewRedis(sw, usage.RedisOptions{Prefix: "agentapi:"}), usage.DefaultFlushInterval
	}
	uopts := usage.Options{Store: usageStore, DB: db, FlushInterval: flushEvery, Logger: log}
	if sw != nil {
		// With Redis holding what was pushed, a journal in the data
		// directory keeps what was not: a killed instance, restarted,
		// loses no count. (Without Redis the pushed counts die with the
		// process anyway.)
		uopts.Journal = filepath.Join(cfg.DataDir, "usage.journal")
	}
	meter, err := usage.New(uopts)
	if err != nil && uopts.Journal != "" {
		log.Warn("usage: cannot use the journal; a killed instance loses the counts of its last second", "error", err)
		uopts.Journal = ""
		meter, err = usage.New(uopts)
	}
	if err != nil {
		return fail("cannot start usage tracking", "error", err)
	}
	// Closed after the HTTP server and the agents have stopped: their last
	// counts are pushed and flushed (SIGTERM loses nothing).
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := meter.Close(cctx); err != nil {
			log.Error("usage: the last counts could not be saved", "error", err)
		}
	}()
	if limits != nil {
		limits.Limited = func(tenantID, userID string) { meter.Add(tenantID, userID, usage.RateLimited, 1) }
	}

	if err := bootstrap(ctx, db, cfg.Tenancy.AdminAPIKey, stderr, log); err != nil {
		return fail("bootstrapping the first admin key failed", "error", err)
	}

	// Cached responses (session lists, transcripts, tenant config): in
	// Redis when there is one, so a write on any instance invalidates them
	// on every instance at once; else in memory, bounded.
	var responseStore cache.Backend = cache.NewMemory(cache.MemoryOptions{MaxBytes: 64 << 20})
	if sw != nil {
		responseStore = cache.NewRedis(sw, cache.RedisOptions{Prefix: "agentapi:"})
	}
	responses := cache.NewLoader("responses", responseStore, cache.LoaderOptions{})
	defer responses.Close()

	self, err := os.Executable()
	if err != nil {
		return fail("cannot find this binary (for the demo agent)", "error", err)
	}
	workRoot := filepath.Join(cfg.DataDir, "workspaces")
	if cfg.Tenancy.AgentUIDBase > 0 {
		if os.Geteuid() != 0 {
			return fail("AGENTAPI_AGENT_UID_BASE needs the server to run as root (it starts each agent as its own user)")
		}
		// Agents chdir to their workspace as their own user: every
		// directory above the data directory must let others through.
		for dir := filepath.Dir(cfg.DataDir); ; dir = filepath.Dir(dir) {
			if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o001 == 0 {
				return fail("with AGENTAPI_AGENT_UID_BASE, agents must be able to traverse the path to their workspace; put AGENTAPI_DATA_DIR under directories others may traverse (e.g. /var/lib/agentapi)", "dir", dir)
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	mgr := runner.New(runner.Options{
		Store: db, Catalog: catalog, WorkRoot: workRoot, AgentUIDBase: cfg.Tenancy.AgentUIDBase,
		Instance: cfg.Tenancy.InstanceID, Self: self,
		MaxPerTenant: cfg.Tenancy.MaxSessionsTenant, MaxPerUser: cfg.Tenancy.MaxSessionsUser,
		// With Redis, instances share the records and the registry marks
		// dead instances' sessions lost: the limits hold for all of them.
		SharedLimits: sw != nil,
		IdleTimeout:  cfg.Tenancy.IdleTimeout, Version: versionString(), Logger: log,
		Env: runner.SecretEnv(db, keyring), Breakers: breakers, Tenant: tenantCfg.Config,
		Changed: httpapi.SessionInvalidator(responses, log),
		SessionSeconds: func(tenantID, userID string, n int64) {
			meter.Add(tenantID, userID, usage.SessionSeconds, n)
		},
	})
	if n, err := mgr.Recover(ctx, db); err != nil {
		log.Warn("marking the previous run's sessions as lost failed", "error", err)
	} else if n > 0 {
		log.Info("sessions from the previous run marked lost; their transcripts remain", "count", n)
	}

	// Several instances on one Redis behave as one service: a registry of
	// live instances, and requests for a session forwarded to the
	// instance that runs it, signed with a key derived from the token key.
	var registry *cluster.Registry
	var signer *cluster.Signer
	if sw != nil {
		signer = cluster.NewSigner(cfg.TokenKey)
		invalidateSession := httpapi.SessionInvalidator(responses, log)
		registry = cluster.New(ctx, cluster.Options{
			KV: sw, Prefix: "agentapi:", ID: cfg.Tenancy.InstanceID, URL: cfg.Tenancy.AdvertiseURL,
			TTL: cfg.Tenancy.InstanceTTL, Load: mgr.Running, Logger: log,
			RunningInstances: db.RunningInstances,
			MarkLost: func(ctx context.Context, instance string) (int, error) {
				refs, err := db.MarkInstanceLost(ctx, instance, time.Now())
				for _, ref := range refs {
					invalidateSession(ref.TenantID, ref.ID, false)
				}
				return len(refs), err
			},
		})
		defer registry.Close(context.Background()) // idempotent; the shutdown below closes it first
		if limits != nil {
			limits.Forwarded = func(r *http.Request) bool { _, ok := signer.Verify(r, time.Now()); return ok }
		}
	}

	health := httpapi.NewHealth(versionString(), httpapi.RedisCheck(sw),
		httpapi.DatabaseCheck(db.Driver(), db.Describe(), db.Ping))
	v1 := &httpapi.V1{
		Tenants: db, Users: db, Keys: db, Sessions: db, Audit: db, Secrets: db, Keyring: keyring,
		Logins: logins, Runner: mgr, Catalog: catalog, Breakers: breakers, Config: tenantCfg,
		Usage: meter, Responses: responses, Cluster: registry, Signer: signer,
		SecureCookies: cfg.Tenancy.SecureCookies, Log: log,
	}
	// Prometheus metrics, read from each part at scrape time.
	src := metrics.Sources{Redis: sw, Breakers: breakers, AgentSessions: mgr, UsageLastFlush: meter.LastFlush,
		Caches: func() []metrics.CacheCount {
			r := responses.Stats()
			hits, misses := tenantCfg.Stats()
			return []metrics.CacheCount{
				{Name: r.Name, Hits: r.Hits, Misses: r.Misses, Errors: r.Errors},
				{Name: "tenant_config", Hits: hits, Misses: misses},
			}
		}}
	if ms, ok := store.(*memory.SessionStore); ok {
		src.LoginSessions = ms.Len // the Redis store has no cheap count
	}
	if limits != nil {
		src.RateLimits = func() []metrics.RateCount {
			var out []metrics.RateCount
			for _, d := range limits.Decisions() {
				out = append(out,
					metrics.RateCount{Limit: d.Policy, Outcome: metrics.Allowed, Count: d.Allowed},
					metrics.RateCount{Limit: d.Policy, Outcome: metrics.Denied, Count: d.Denied},
					metrics.RateCount{Limit: d.Policy, Outcome: metrics.Error, Count: d.Errored})
			}
			return out
		}
	}
	met := metrics.New(src, metrics.Options{Version: versionString(), BreakerLabel: runner.BreakerGroup, Logger: log, TenantLabels: cfg.Tenancy.MetricsTenants})

	// Middleware order: measure (so refusals are counted too), limit by IP
	// (before any work), authenticate, limit by user and tenant.
	middleware := []func(http.Handler) http.Handler{met.Middleware, v1.Authenticate(), v1.Meter, v1.RouteSessions, v1.CacheReads}
	if limits != nil {
		middleware = []func(http.Handler) http.Handler{met.Middleware, limits.ByIP, v1.Authenticate(), limits.ByUser, v1.Meter, v1.RouteSessions, v1.CacheReads}
	}
	router := httpapi.NewRouter(health, middleware...)
	router.Method(http.MethodGet, "/metrics", met.Handler())
	api := humachi.New(router, huma.DefaultConfig("AgentAPI Multitenant", versionString()))
	v1.Mount(router, api)
	router.Mount("/ui", web.Handler()) // the browser UI; /ui redirects to /ui/

	srv := &http.Server{
		Handler:           router,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(cfg.Port)))
	if err != nil {
		mgr.Close()
		return fail("cannot listen; is another server on this port? set PORT or --port", "port", cfg.Port, "error", err)
	}
	log.Info("agentapi serve listening", "addr", ln.Addr().String(), "version", versionString(),
		"data_dir", cfg.DataDir, "session_storage", cfg.Session.Storage, "token_key", keySource,
		"agents", catalog.Names(), "instance", cfg.Tenancy.InstanceID)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	code := 0
	select {
	case err := <-errc:
		log.Error("server stopped", "error", err)
		code = 1
	case <-ctx.Done():
	}
	stop()
	log.Info("shutting down: draining in-flight requests")
	health.Drain()
	if registry != nil {
		// No new sessions here; requests for the running ones are still
		// served until their agents stop below.
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		registry.Drain(dctx)
		dcancel()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Agents first: their event streams end, so Shutdown does not wait on
	// them, and their transcripts are saved.
	mgr.Close()
	if registry != nil {
		registry.Close(sctx)
	}
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("graceful shutdown timed out", "error", err)
		code = 1
	}
	if code == 0 {
		log.Info("stopped cleanly")
	}
	return code
}

// bootstrap creates the platform tenant, its first admin and a key when
// the database has no API key at all, and prints the key once. With
// AGENTAPI_ADMIN_API_KEY that key is used instead of a generated one.
func bootstrap(ctx context.Context, db *sql.DB, given string, out io.Writer, log *slog.Logger) error {
	n, err := db.CountAPIKeys(ctx)
	if err != nil || n > 0 {
		return err
	}
	now := time.Now().UTC()
	err = db.CreateTenant(ctx, agentapi.Tenant{ID: agentapi.PlatformTenantID, Name: "Platform", CreatedAt: now, UpdatedAt: now})
	if err != nil && agentapi.KindOf(err) != agentapi.KindConflict {
		return err
	}
	admin := agentapi.User{ID: agentapi.NewID("usr"), TenantID: agentapi.PlatformTenantID, Name: "admin", Role: agentapi.RolePlatformAdmin, CreatedAt: now, UpdatedAt: now}
	if err := db.CreateUser(ctx, admin); err != nil {
		return err
	}
	secret, prefix, hash := auth.NewAPIKey()
	if given != "" {
		secret, prefix, hash = given, given[:min(12, len(given))], auth.HashAPIKey(given)
	}
	key := agentapi.APIKey{ID: agentapi.NewID("key"), TenantID: agentapi.PlatformTenantID, UserID: admin.ID, Name: "bootstrap", Prefix: prefix, Hash: hash, CreatedAt: now}
	if err := db.CreateAPIKey(ctx, key); err != nil {
		return err
	}
	if err := db.Audit(ctx, agentapi.AuditEntry{At: now, TenantID: agentapi.PlatformTenantID, ActorID: "bootstrap", Action: "apikey.create", Target: key.ID, Detail: "first platform admin"}); err != nil {
		return err
	}
	if given != "" {
		log.Info("created the first platform admin with AGENTAPI_ADMIN_API_KEY", "key_prefix", prefix)
		return nil
	}
	// Printed, not logged: it must not end up in log storage.
	fmt.Fprintf(out, "\n=== First start: a platform-admin API key was created. It is shown this once. ===\n%s\n"+
		"Use it as: Authorization: Bearer <key>. Create tenants with POST /v1/admin/tenants.\n\n", secret)
	return nil
}
