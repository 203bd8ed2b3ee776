// Package runner runs agent sessions for tenants on this instance: it picks
// the command from the operator's catalog, gives each session its own 0700
// workspace and a minimal environment, enforces the concurrency limits,
// stops idle agents, and writes every transcript message to the system of
// record as it happens, so transcripts outlive agents and restarts.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/agent"
	"github.com/agentapi-mt/agentapi/agenthttp"
	"github.com/agentapi-mt/agentapi/internal/every"
)

// Options configure a Manager.
type Options struct {
	Store   agentapi.AgentSessionStore
	Catalog Catalog
	// WorkRoot holds the workspaces: WorkRoot/<tenant>/<session>.
	WorkRoot string
	// Instance names this server in session records.
	Instance string
	// Self is this binary, which runs the built-in demo agent.
	Self string
	// MaxPerTenant and MaxPerUser bound running sessions (0: no limit).
	MaxPerTenant, MaxPerUser int
	// SharedLimits makes those limits (and a tenant's own) hold across
	// every instance that shares Store: a session is created only if the
	// records show fewer running than the limit
	// (Store.CreateAgentSessionWithin). Without it each instance counts
	// only the sessions it runs -- right for a single instance, where the
	// records may still hold sessions of a former host name as running.
	SharedLimits bool
	// IdleTimeout stops an agent nobody used for that long (0: never).
	IdleTimeout time.Duration
	// Tenant, when set, returns a tenant's own configuration: its
	// MaxSessions, MaxSessionsPerUser and IdleTimeoutSeconds replace the
	// limits above where set, and its AllowedAgents restrict the catalog.
	Tenant func(ctx context.Context, tenantID string) (agentapi.TenantConfig, error)
	// Changed, when set, is called after each successful write of a
	// session's record (created, stopped, exited, lost; transcript false)
	// or of a message of its transcript (transcript true): caches of
	// session lists and transcripts are invalidated with it.
	Changed func(tenantID, sessionID string, transcript bool)
	// SessionSeconds, when set, is told the time agents run, in whole
	// seconds per tenant and user: while they run (at each janitor sweep)
	// and when they end.
	SessionSeconds func(tenantID, userID string, seconds int64)
	// SettleWindow is passed to each agent (default 2s).
	SettleWindow time.Duration
	// Env, when set, returns extra environment for a tenant's agents (its
	// unsealed secrets).
	Env func(ctx context.Context, tenantID string) (map[string]string, error)
	// AgentUIDBase, when positive, runs each session's agent as its own
	// user: uid (and gid) AgentUIDBase + n, n cycling over 65536 values,
	// owning the session's workspace. Agents then cannot read each other's
	// files and environments, nor the server's. Needs root.
	AgentUIDBase int
	// Breakers, when set, guard starting agents and delivering messages,
	// one breaker per agent name for each ("agent-start:<name>",
	// "agent-deliver:<name>"), so a broken agent stops being retried by
	// every request while the others keep working.
	Breakers Breakers
	Version  string
	Logger   *slog.Logger
}

// Breakers hands out named guards; *breaker.Registry implements it through
// Guard.
type Breakers interface {
	Guard(name string) func(ctx context.Context) (done func(error), err error)
}

// StartRequest is what a user asks for.
type StartRequest struct {
	Agent         string // a catalog name
	Name          string
	InitialPrompt string
}

// Errors of Start.
var (
	ErrUnknownAgent = errors.New("unknown agent")
	ErrLimit        = agentapi.ErrSessionLimit
)

// Manager runs this instance's agent sessions.
type Manager struct {
	o   Options
	log *slog.Logger

	mu      sync.Mutex
	running map[string]*session
	closed  bool
	nextUID int

	stopJanitor context.CancelFunc
	janitorDone chan struct{}
}

type session struct {
	rec      agentapi.AgentSession
	agent    *agent.Agent
	term     *agent.Terminal
	handler  http.Handler
	workdir  string
	lastUsed atomic.Int64 // unix nanos
	// accounted is the unix nanos up to which run time was reported.
	accounted atomic.Int64
	// ready is set, under Manager.mu, once Start has filled in the fields
	// below it; until then only Start touches the session.
	ready    bool
	stopOnce sync.Once
	stopped  chan struct{} // closed when fully stopped and recorded
	writerWG sync.WaitGroup
	// recording is held (a value in it) while the transcript is being
	// stored: a channel rather than a mutex, so that a caller with a
	// deadline stops waiting when the store hangs (see store).
	recording chan struct{}
	log       transcriptLog // what is stored; while holding recording
}

// New returns a Manager and starts its idle janitor.
func New(o Options) *Manager {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Catalog == nil {
		o.Catalog = DefaultCatalog()
	}
	if o.Instance == "" {
		o.Instance, _ = os.Hostname()
	}
	if o.Changed != nil {
		o.Store = notifyingStore{AgentSessionStore: o.Store, changed: o.Changed}
	}
	m := &Manager{o: o, log: o.Logger, running: map[string]*session{}, janitorDone: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	m.stopJanitor = cancel
	go m.janitor(ctx)
	return m
}

// Recover marks sessions this instance was running before it restarted as
// lost: their agents died with the old process. Their transcripts remain.
func (m *Manager) Recover(ctx context.Context, tenants agentapi.TenantStore) (int, error) {
	ts, err := tenants.ListTenants(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range ts {
		ss, err := m.o.Store.ListAgentSessions(ctx, t.ID, "")
		if err != nil {
			return n, err
		}
		for _, s := range ss {
			if s.State != agentapi.SessionRunning || s.Instance != m.o.Instance {
				continue
			}
			m.mu.Lock()
			_, live := m.running[s.ID]
			m.mu.Unlock()
			if live {
				continue
			}
			now := time.Now().UTC()
			s.State, s.StoppedAt = agentapi.SessionLost, &now
			if err := m.o.Store.UpdateAgentSession(ctx, s); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// Start runs a new agent session for a user.
func (m *Manager) Start(ctx context.Context, tenantID, userID string, req StartRequest) (agentapi.AgentSession, error) {
	entry, ok := m.o.Catalog[req.Agent]
	if !ok {
		return agentapi.AgentSession{}, agentapi.E("runner.start", agentapi.KindInvalid,
			fmt.Errorf("%w %q: available agents are %s", ErrUnknownAgent, req.Agent, strings.Join(m.o.Catalog.Names(), ", ")))
	}
	name := strings.TrimSpace(req.Name)
	if len(name) > 200 {
		return agentapi.AgentSession{}, agentapi.E("runner.start", agentapi.KindInvalid, errors.New("name is longer than 200 characters"))
	}
	var tcfg agentapi.TenantConfig
	if m.o.Tenant != nil {
		c, err := m.o.Tenant(ctx, tenantID)
		if err != nil {
			return agentapi.AgentSession{}, err
		}
		tcfg = c
	}
	if !tcfg.AllowsAgent(req.Agent) {
		return agentapi.AgentSession{}, agentapi.E("runner.start", agentapi.KindForbidden,
			fmt.Errorf("your tenant may not run agent %q; allowed: %s", req.Agent, strings.Join(tcfg.AllowedAgents, ", ")))
	}
	now := time.Now().UTC()
	rec := agentapi.AgentSession{
		ID: agentapi.NewID("ses"), TenantID: tenantID, UserID: userID, Name: name,
		AgentType: req.Agent, State: agentapi.SessionRunning, Instance: m.o.Instance,
		CreatedAt: now, LastActivityAt: now,
	}

	// Reserve the slot before the slow part, so concurrent starts cannot
	// both pass the limit check.
	s := &session{rec: rec, stopped: make(chan struct{}), recording: make(chan struct{}, 1)}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return agentapi.AgentSession{}, agentapi.E("runner.start", agentapi.KindUnavailable, errors.New("the server is shutting down"))
	}
	if err := m.checkLimits(tenantID, userID, tcfg); err != nil {
		m.mu.Unlock()
		return agentapi.AgentSession{}, err
	}
	m.running[rec.ID] = s
	m.mu.Unlock()

	created := false // the record exists: a failure must end it
	fail := func(err error) (agentapi.AgentSession, error) {
		if created {
			m.endFailedStart(ctx, rec)
		}
		m.mu.Lock()
		delete(m.running, rec.ID)
		m.mu.Unlock()
		if s.term != nil {
			s.term.Close(5 * time.Second)
		}
		if s.workdir != "" {
			os.RemoveAll(s.workdir)
		}
		return agentapi.AgentSession{}, err
	}

	s.workdir = filepath.Join(m.o.WorkRoot, safeSegment(tenantID), rec.ID)
	if err := os.MkdirAll(s.workdir, 0o700); err != nil {
		return fail(agentapi.E("runner.start", agentapi.KindInternal, err))
	}
	os.Chmod(s.workdir, 0o700)
	var cred *syscall.Credential
	var chown func(string) error
	if m.o.AgentUIDBase > 0 {
		m.mu.Lock()
		id := uint32(m.o.AgentUIDBase + m.nextUID%65536)
		m.nextUID++
		m.mu.Unlock()
		cred = &syscall.Credential{Uid: id, Gid: id}
		chown = func(p string) error { return os.Lchown(p, int(id), int(id)) }
		uploads := filepath.Join(s.workdir, "uploads")
		err := os.MkdirAll(uploads, 0o700)
		for _, p := range []string{s.workdir, uploads} {
			if err == nil {
				err = chown(p)
			}
		}
		// The agent's user must be able to walk down to its workspace:
		// the directories above it are traverse-only, listing nothing.
		for _, p := range []string{filepath.Dir(s.workdir), m.o.WorkRoot, filepath.Dir(m.o.WorkRoot)} {
			if err == nil {
				err = os.Chmod(p, 0o711)
			}
		}
		if err != nil {
			return fail(agentapi.E("runner.start", agentapi.KindInternal, fmt.Errorf("preparing the agent's workspace: %w", err)))
		}
	}
	env, err := m.environment(ctx, tenantID, entry, s.workdir)
	if err != nil {
		return fail(agentapi.E("runner.start", agentapi.KindUnavailable, err))
	}
	argv := entry.Command
	if len(argv) == 0 {
		argv = []string{m.o.Self, "demo-agent"}
	}
	create := m.o.Store.CreateAgentSession
	if m.o.SharedLimits {
		maxTenant, maxUser := m.limits(tcfg)
		create = func(ctx context.Context, rec agentapi.AgentSession) error {
			return m.o.Store.CreateAgentSessionWithin(ctx, rec, maxTenant, maxUser)
		}
	}
	if err := create(ctx, rec); err != nil {
		return fail(err)
	}
	created = true
	startDone := func(error) {}
	if m.o.Breakers != nil {
		d, err := m.o.Breakers.Guard(startBreaker(req.Agent))(ctx)
		if err != nil {
			return fail(err)
		}
		startDone = d
	}
	var ag atomic.Pointer[agent.Agent]
	term, err := agent.StartTerminal(argv, agent.TermOptions{
		Dir: s.workdir, Env: env, Credential: cred,
		OnOutput: func() {
			if a := ag.Load(); a != nil {
				a.Output()
			}
		},
	})
	if err != nil {
		m.log.Error("starting an agent failed", "agent", req.Agent, "tenant", tenantID, "error", err)
		err = agentapi.E("runner.start", agentapi.KindUnavailable, fmt.Errorf("starting the %s agent failed", req.Agent))
		startDone(err)
		return fail(err)
	}
	startDone(nil)
	s.term = term
	opts := agent.Options{
		Type: entry.Type, InitialPrompt: req.InitialPrompt, SettleWindow: m.o.SettleWindow,
		Logger: m.log.With("session", rec.ID, "tenant", tenantID),
	}
	if m.o.Breakers != nil {
		// Per tenant: whether an agent reacts depends on the tenant's own
		// session (its state, its keys, its model API key), so one tenant's
		// trouble must not open the breaker for everyone.
		opts.Guard = m.o.Breakers.Guard(deliverBreaker(tenantID, req.Agent))
	}
	a := agent.New(term, opts)
	ag.Store(a)
	a.Output()
	s.agent = a
	srv, err := agenthttp.New(agenthttp.Config{
		Agent: a, AgentType: entry.Type, UploadDir: filepath.Join(s.workdir, "uploads"),
		Embedded: true, Version: m.o.Version, Logger: m.log, UploadOwner: chown,
	})
	if err != nil {
		return fail(agentapi.E("runner.start", agentapi.KindInternal, err))
	}
	s.handler = srv.Handler()
	s.lastUsed.Store(time.Now().UnixNano())
	s.accounted.Store(s.rec.CreatedAt.UnixNano())

	s.writerWG.Add(1)
	go m.writeTranscript(s)
	go m.watchExit(s)
	m.mu.Lock()
	closed := m.closed
	s.ready = !closed
	m.mu.Unlock()
	if closed {
		// Close ran while this session started: it did not see it, so stop
		// it here (transcript saved) rather than leave it running.
		m.finish(s, agentapi.SessionStopped, nil)
		return agentapi.AgentSession{}, agentapi.E("runner.start", agentapi.KindUnavailable, errors.New("the server is shutting down"))
	}
	m.log.Info("agent session started", "session", rec.ID, "tenant", tenantID, "user", userID, "agent", req.Agent)
	return rec, nil
}

// endFailedStart records a session whose start failed after its record
// was created as exited, retrying a little: a record left running would
// hold a place under the session limits until its instance restarts.
func (m *Manager) endFailedStart(ctx context.Context, rec agentapi.AgentSession) {
	now := time.Now().UTC()
	rec.State, rec.StoppedAt = agentapi.SessionExited, &now
	var err error
	for attempt := range 3 {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err = m.o.Store.UpdateAgentSession(uctx, rec)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	m.log.Error("recording a failed start as exited failed; the session stays recorded as running until this instance restarts", "session", rec.ID, "error", err)
}

// checkLimits reports whether one more session fits, under the tenant's
// own limits where it has them. Caller holds m.mu.
func (m *Manager) checkLimits(tenantID, userID string, tcfg agentapi.TenantConfig) error {
	maxTenant, maxUser := m.limits(tcfg)
	var perTenant, perUser int
	for _, s := range m.running {
		if s.rec.TenantID == tenantID {
			perTenant++
			if s.rec.UserID == userID {
				perUser++
			}
		}
	}
	if maxTenant > 0 && perTenant >= maxTenant {
		return agentapi.E("runner.start", agentapi.KindRateLimited, fmt.Errorf("%w: the tenant already runs %d sessions (the limit); stop one first", ErrLimit, perTenant))
	}
	if maxUser > 0 && perUser >= maxUser {
		return agentapi.E("runner.start", agentapi.KindRateLimited, fmt.Errorf("%w: you already run %d sessions (the limit); stop one first", ErrLimit, perUser))
	}
	return nil
}

// limits returns the running-session limits for a tenant with
// configuration tcfg: its own where set, else the server's.
func (m *Manager) limits(tcfg agentapi.TenantConfig) (maxTenant, maxUser int) {
	maxTenant, maxUser = m.o.MaxPerTenant, m.o.MaxPerUser
	if tcfg.MaxSessions > 0 {
		maxTenant = tcfg.MaxSessions
	}
	if tcfg.MaxSessionsPerUser > 0 {
		maxUser = tcfg.MaxSessionsPerUser
	}
	return maxTenant, maxUser
}

// environment is what an agent sees: a minimal base (never the server's
// own environment, which holds its secrets), the catalog entry's
// variables, then the tenant's.
func (m *Manager) environment(ctx context.Context, tenantID string, entry Agent, workdir string) ([]string, error) {
	env := map[string]string{
		"HOME": workdir,
		"PATH": os.Getenv("PATH"),
		"LANG": "C.UTF-8",
	}
	if env["PATH"] == "" {
		env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
	}
	for k, v := range entry.Env {
		env[k] = v
	}
	if m.o.Env != nil {
		extra, err := m.o.Env(ctx, tenantID)
		if err != nil {
			return nil, fmt.Errorf("loading the tenant's secrets: %w", err)
		}
		for k, v := range extra {
			env[k] = v
		}
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, nil
}

// writeTranscript copies every message update to the store as it happens,
// resuming from the event log when it falls behind.
func (m *Manager) writeTranscript(s *session) {
	defer s.writerWG.Done()
	var last int64
	for {
		first, ch, cancel := s.agent.Subscribe(last)
		for _, ev := range first {
			m.record(s, ev)
			if ev.ID > last {
				last = ev.ID
			}
		}
		for ev := range ch {
			m.record(s, ev)
			last = ev.ID
		}
		cancel()
		select {
		case <-s.agent.Closed():
			return
		default:
			// The subscription was dropped for falling behind: resume.
		}
	}
}

// record stores what changed in the transcript at a message update. A
// write that fails is made again at the next update, at the next janitor
// sweep, or when the session stops, whichever comes first.
func (m *Manager) record(s *session, ev agent.Event) {
	if _, ok := ev.Data.(agent.MessageUpdate); !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.store(ctx, s); err != nil {
		m.log.Error("writing the transcript failed; it is written again at the next update, sweep or stop", "session", s.rec.ID, "error", err)
	}
}

func (m *Manager) watchExit(s *session) {
	select {
	case <-s.term.Done():
		m.finish(s, agentapi.SessionExited, s.term.ExitErr())
	case <-s.stopped:
	}
}

// finish stops the agent (if running), writes the complete transcript and
// the final state, and forgets the session.
func (m *Manager) finish(s *session, state string, exitErr error) {
	s.stopOnce.Do(func() {
		if state == agentapi.SessionExited {
			s.agent.Exited(exitErr)
		} else {
			s.agent.Stopping() // a delivery in progress gives up now
		}
		s.term.Close(5 * time.Second)
		s.agent.Close()
		s.writerWG.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// The final write covers any update the live writer could not store.
		if err := m.store(ctx, s); err != nil {
			m.log.Error("writing the final transcript failed", "session", s.rec.ID, "error", err)
		}
		now := time.Now().UTC()
		m.account(s, now, true)
		rec := s.rec
		rec.State, rec.StoppedAt = state, &now
		rec.LastActivityAt = time.Unix(0, s.lastUsed.Load()).UTC()
		if err := m.o.Store.UpdateAgentSession(ctx, rec); err != nil {
			m.log.Error("recording the session's end failed", "session", s.rec.ID, "error", err)
		}
		m.mu.Lock()
		delete(m.running, s.rec.ID)
		m.mu.Unlock()
		close(s.stopped)
		m.log.Info("agent session ended", "session", s.rec.ID, "state", state)
	})
	<-s.stopped
}

// Stop stops a running session of the tenant. A session that is not
// running here is KindNotFound when unknown, KindConflict when it has
// already ended.
func (m *Manager) Stop(ctx context.Context, tenantID, id string) error {
	m.mu.Lock()
	s, ok := m.running[id]
	ok = ok && s.ready
	m.mu.Unlock()
	if !ok || s.rec.TenantID != tenantID {
		if _, err := m.o.Store.GetAgentSession(ctx, tenantID, id); err != nil {
			return err
		}
		return agentapi.E("runner.stop", agentapi.KindConflict, errors.New("the session is not running"))
	}
	m.finish(s, agentapi.SessionStopped, nil)
	return nil
}

// Handler returns the agent API of a running session of the tenant, and
// records its use for the idle timeout.
func (m *Manager) Handler(tenantID, id string) (http.Handler, bool) {
	m.mu.Lock()
	s, ok := m.running[id]
	ok = ok && s.ready
	m.mu.Unlock()
	if !ok || s.rec.TenantID != tenantID {
		return nil, false
	}
	s.lastUsed.Store(time.Now().UnixNano())
	return s.handler, true
}

// StopTenant stops every session of a tenant running here (its tenant was
// disabled or deleted) and, with removeWorkspaces, deletes its workspaces.
func (m *Manager) StopTenant(tenantID string, removeWorkspaces bool) {
	m.mu.Lock()
	var mine []*session
	for _, s := range m.running {
		if s.ready && s.rec.TenantID == tenantID {
			mine = append(mine, s)
		}
	}
	m.mu.Unlock()
	for _, s := range mine {
		m.finish(s, agentapi.SessionStopped, nil)
	}
	if removeWorkspaces {
		os.RemoveAll(filepath.Join(m.o.WorkRoot, safeSegment(tenantID)))
	}
}

// Running reports how many sessions run here.
func (m *Manager) Running() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.running)
}

// ActiveByType reports how many sessions run here per agent type (the
// catalog name), sessions still starting included, as Running counts them.
func (m *Manager) ActiveByType() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int)
	for _, s := range m.running {
		out[s.rec.AgentType]++
	}
	return out
}

// ActiveByTenant is ActiveByType per tenant: tenant id, then agent type.
func (m *Manager) ActiveByTenant() map[string]map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]map[string]int)
	for _, s := range m.running {
		byType := out[s.rec.TenantID]
		if byType == nil {
			byType = make(map[string]int)
			out[s.rec.TenantID] = byType
		}
		byType[s.rec.AgentType]++
	}
	return out
}

// Breaker names used through Options.Breakers.
const (
	startBreakerPrefix   = "agent-start:"
	deliverBreakerPrefix = "agent-deliver:"
)

func startBreaker(agentName string) string { return startBreakerPrefix + agentName }

func deliverBreaker(tenantID, agentName string) string {
	return deliverBreakerPrefix + tenantID + ":" + agentName
}

// BreakerGroup maps the name of a breaker this package uses to the same
// name without its tenant id ("agent-deliver:<tenant>:<agent>" becomes
// "agent-deliver:<agent>"), for metrics that must not carry tenant ids.
// Other names are returned as they are.
func BreakerGroup(name string) string {
	rest, ok := strings.CutPrefix(name, deliverBreakerPrefix)
	if !ok {
		return name
	}
	// Tenant ids never contain ':' (lower-case letters, digits, '-', or a
	// generated "ten_..."); catalog names might.
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		return deliverBreakerPrefix + rest[i+1:]
	}
	return name
}

func (m *Manager) janitor(ctx context.Context) {
	defer close(m.janitorDone)
	// Sweep often enough for the server's idle timeout, and at least every
	// 15 s for tenants' own timeouts and run-time accounting.
	interval := 15 * time.Second
	if m.o.IdleTimeout > 0 {
		interval = min(m.o.IdleTimeout/4, interval)
	}
	every.Run(ctx, max(interval, 10*time.Millisecond), m.sweep)
}

// sweep reports run time, stops agents idle for longer than their
// tenant's (or else the server's) idle timeout, and stops agents whose
// session the records say has ended: another instance marked it lost
// while this one was cut off from Redis for longer than the instance
// TTL. The record keeps the state it has; the transcript is completed.
func (m *Manager) sweep(ctx context.Context) {
	now := time.Now()
	m.mu.Lock()
	var live []*session
	for _, s := range m.running {
		if s.ready {
			live = append(live, s)
		}
	}
	m.mu.Unlock()
	for _, s := range live {
		// Each session's database calls are bounded: a hung database must
		// not stall the sweep (idle timeouts, run-time accounting).
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rec, err := m.o.Store.GetAgentSession(sctx, s.rec.TenantID, s.rec.ID)
		if err == nil && rec.State != agentapi.SessionRunning {
			cancel()
			m.log.Warn("the records say this running agent session has ended (this instance was presumed dead); stopping its agent",
				"session", s.rec.ID, "state", rec.State)
			m.finish(s, rec.State, nil)
			continue
		}
		if err := m.store(sctx, s); err != nil {
			m.log.Warn("writing the transcript failed again at the sweep", "session", s.rec.ID, "error", err)
		}
		cancel()
		m.account(s, now, false)
		timeout := m.o.IdleTimeout
		if m.o.Tenant != nil {
			if c, err := m.o.Tenant(ctx, s.rec.TenantID); err == nil && c.IdleTimeoutSeconds > 0 {
				timeout = time.Duration(c.IdleTimeoutSeconds) * time.Second
			}
		}
		if timeout <= 0 || s.lastUsed.Load() >= now.Add(-timeout).UnixNano() || s.agent.Status() != agentapi.StatusStable {
			continue
		}
		m.log.Info("stopping an idle agent session", "session", s.rec.ID, "idle_timeout", timeout)
		m.finish(s, agentapi.SessionStopped, nil)
	}
}

// account reports the whole seconds s ran since it was last accounted;
// final (the session ended) rounds the rest to the nearest second.
func (m *Manager) account(s *session, now time.Time, final bool) {
	if m.o.SessionSeconds == nil {
		return
	}
	for {
		from := s.accounted.Load()
		if from == 0 {
			return // never started
		}
		elapsed := now.UnixNano() - from
		secs := elapsed / int64(time.Second)
		if final && elapsed%int64(time.Second) >= int64(time.Second/2) {
			secs++
		}
		if secs <= 0 {
			return
		}
		if s.accounted.CompareAndSwap(from, from+secs*int64(time.Second)) {
			m.o.SessionSeconds(s.rec.TenantID, s.rec.UserID, secs)
			return
		}
	}
}

// Close stops every session (transcripts saved) and refuses new ones.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	var all []*session
	for _, s := range m.running {
		if s.ready {
			all = append(all, s)
		}
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.finish(s, agentapi.SessionStopped, nil)
		}()
	}
	wg.Wait()
	m.stopJanitor()
	<-m.janitorDone
}

func safeSegment(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == 0 || r == '.' {
			return '_'
		}
		return r
	}, s)
}

// notifyingStore reports each successful session write to changed.
type notifyingStore struct {
	agentapi.AgentSessionStore
	changed func(tenantID, sessionID string, transcript bool)
}

func (n notifyingStore) CreateAgentSession(ctx context.Context, s agentapi.AgentSession) error {
	err := n.AgentSessionStore.CreateAgentSession(ctx, s)
	if err == nil {
		n.changed(s.TenantID, s.ID, false)
	}
	return err
}

func (n notifyingStore) CreateAgentSessionWithin(ctx context.Context, s agentapi.AgentSession, maxTenant, maxUser int) error {
	err := n.AgentSessionStore.CreateAgentSessionWithin(ctx, s, maxTenant, maxUser)
	if err == nil {
		n.changed(s.TenantID, s.ID, false)
	}
	return err
}

func (n notifyingStore) UpdateAgentSession(ctx context.Context, s agentapi.AgentSession) error {
	err := n.AgentSessionStore.UpdateAgentSession(ctx, s)
	if err == nil {
		n.changed(s.TenantID, s.ID, false)
	}
	return err
}

func (n notifyingStore) PutMessage(ctx context.Context, tenantID, sessionID string, m agentapi.Message) error {
	err := n.AgentSessionStore.PutMessage(ctx, tenantID, sessionID, m)
	if err == nil {
		n.changed(tenantID, sessionID, true)
	}
	return err
}
