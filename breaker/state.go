package breaker

import (
	"fmt"
	"strconv"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
)

// op is one thing that can happen to a breaker. The local state machine
// (state.apply) and the shared one (script, in Redis) implement the same
// ops with the same rules; TestScriptMatchesLocal checks that they agree.
type op string

const (
	// opAcquire asks to admit a call: granted when closed, or when
	// half-open with a free probe slot. An open breaker whose open-until
	// time has passed turns half-open first.
	opAcquire op = "acquire"
	// opSuccess records a call that succeeded: a closed breaker forgets its
	// consecutive failures; a half-open one counts a successful probe,
	// frees its slot and closes after SuccessThreshold of them.
	opSuccess op = "success"
	// opFailure records a call that failed: a closed breaker counts it and
	// opens at FailureThreshold; a half-open one opens again.
	opFailure op = "failure"
	// opRelease gives back the slot of a probe that ended without an
	// outcome (its context was cancelled).
	opRelease op = "release"
	// opReset forces the breaker closed with no failures.
	opReset op = "reset"
)

// params are the settings a transition needs, times in milliseconds.
type params struct {
	failureThreshold int64
	successThreshold int64
	maxProbes        int64
	timeout          int64 // open period and probe lease, ms
	keyTTL           int64 // expiry of the Redis key, refreshed by each write, ms
}

// state is a breaker's state: the whole of it, as the local machine keeps
// it and as the Redis hash stores it (one field per member, same names as
// the script's).
type state struct {
	State     agentapi.BreakerState
	Failures  int64 // consecutive failures (closed); the count that opened it (open)
	Successes int64 // successful probes so far (half-open)
	Probes    int64 // probe slots handed out and not yet given back (half-open)
	OpenedAt  int64 // unix ms of the last opening
	Until     int64 // unix ms: open until (open)
	Lease     int64 // unix ms after which handed-out probe slots are presumed lost (half-open)
	Gen       int64 // bumped by every state change: outcomes of calls admitted under another Gen are ignored
	V         int64 // bumped by every write: orders two readings of the same key
}

// apply runs o at now (unix ms) for a call admitted under gen (acquire and
// reset ignore gen) and reports whether the call is admitted (acquire) and
// whether s changed. It is the Go twin of script.
func (s *state) apply(o op, now, gen int64, p params) (granted, changed bool) {
	if s.State == "" {
		s.State = agentapi.BreakerClosed
	}
	switch o {
	case opAcquire:
		if s.State == agentapi.BreakerOpen && now >= s.Until {
			s.State = agentapi.BreakerHalfOpen
			s.Probes, s.Successes, s.Lease = 0, 0, 0
			s.Gen++
			changed = true
		}
		switch s.State {
		case agentapi.BreakerClosed:
			granted = true
		case agentapi.BreakerHalfOpen:
			if s.Probes >= p.maxProbes && now >= s.Lease {
				s.Probes = 0 // every probe out is overdue: presume them lost
				changed = true
			}
			if s.Probes < p.maxProbes {
				s.Probes++
				s.Lease = now + p.timeout
				granted, changed = true, true
			}
		}
	case opSuccess:
		if gen != s.Gen {
			break
		}
		switch s.State {
		case agentapi.BreakerClosed:
			if s.Failures > 0 {
				s.Failures = 0
				changed = true
			}
		case agentapi.BreakerHalfOpen:
			s.Successes++
			if s.Probes > 0 {
				s.Probes--
			}
			if s.Successes >= p.successThreshold {
				s.close()
			}
			changed = true
		}
	case opFailure:
		if gen != s.Gen {
			break
		}
		switch s.State {
		case agentapi.BreakerClosed:
			s.Failures++
			if s.Failures >= p.failureThreshold {
				s.open(now, p)
			}
			changed = true
		case agentapi.BreakerHalfOpen:
			s.open(now, p)
			changed = true
		}
	case opRelease:
		if gen == s.Gen && s.State == agentapi.BreakerHalfOpen && s.Probes > 0 {
			s.Probes--
			changed = true
		}
	case opReset:
		*s = state{State: agentapi.BreakerClosed, Gen: s.Gen + 1, V: s.V}
		changed = true
	}
	if changed {
		s.V++
	}
	return granted, changed
}

func (s *state) open(now int64, p params) {
	s.State = agentapi.BreakerOpen
	s.OpenedAt, s.Until = now, now+p.timeout
	s.Successes, s.Probes, s.Lease = 0, 0, 0
	s.Gen++
}

func (s *state) close() {
	s.State = agentapi.BreakerClosed
	s.Failures, s.Successes, s.Probes, s.Until, s.Lease = 0, 0, 0, 0, 0
	s.Gen++
}

// script is the shared state machine: it reads the breaker's hash, applies
// one op exactly as state.apply does, writes the hash back (refreshing its
// TTL) when something changed, and returns the outcome and the new state.
//
// KEYS[1] the breaker's hash
// ARGV    op, now (unix ms), gen, failure threshold, success threshold,
//
//	timeout (ms), max probes, key TTL (ms)
//
// Returns {granted (0/1), state, failures, successes, probes, opened_at,
// open_until, probe_lease, gen, v}.
//
// Upstash compatible: one key, passed in KEYS; the time comes from the
// caller; only HGETALL, HSET and PEXPIRE. Numbers are written with
// string.format('%.0f') so that millisecond timestamps never turn into
// exponent notation.
var script = kv.NewScript(`
local key = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])
local gen = tonumber(ARGV[3])
local fth = tonumber(ARGV[4])
local sth = tonumber(ARGV[5])
local timeout = tonumber(ARGV[6])
local maxp = tonumber(ARGV[7])
local ttl = tonumber(ARGV[8])

local s = {state = 'closed', failures = 0, successes = 0, probes = 0,
  opened_at = 0, open_until = 0, probe_lease = 0, gen = 0, v = 0}
local h = redis.call('HGETALL', key)
for i = 1, #h, 2 do
  local f = h[i]
  if f == 'state' then
    s.state = h[i + 1]
  elseif s[f] ~= nil then
    s[f] = tonumber(h[i + 1]) or 0
  end
end

local function open()
  s.state = 'open'
  s.opened_at = now
  s.open_until = now + timeout
  s.successes = 0
  s.probes = 0
  s.probe_lease = 0
  s.gen = s.gen + 1
end

local function close()
  s.state = 'closed'
  s.failures = 0
  s.successes = 0
  s.probes = 0
  s.open_until = 0
  s.probe_lease = 0
  s.gen = s.gen + 1
end

local granted, changed = 0, false
if op == 'acquire' then
  if s.state == 'open' and now >= s.open_until then
    s.state = 'half_open'
    s.probes = 0
    s.successes = 0
    s.probe_lease = 0
    s.gen = s.gen + 1
    changed = true
  end
  if s.state == 'closed' then
    granted = 1
  elseif s.state == 'half_open' then
    if s.probes >= maxp and now >= s.probe_lease then
      s.probes = 0
      changed = true
    end
    if s.probes < maxp then
      s.probes = s.probes + 1
      s.probe_lease = now + timeout
      granted = 1
      changed = true
    end
  end
elseif op == 'success' then
  if gen == s.gen then
    if s.state == 'closed' then
      if s.failures > 0 then
        s.failures = 0
        changed = true
      end
    elseif s.state == 'half_open' then
      s.successes = s.successes + 1
      if s.probes > 0 then s.probes = s.probes - 1 end
      if s.successes >= sth then close() end
      changed = true
    end
  end
elseif op == 'failure' then
  if gen == s.gen then
    if s.state == 'closed' then
      s.failures = s.failures + 1
      if s.failures >= fth then open() end
      changed = true
    elseif s.state == 'half_open' then
      open()
      changed = true
    end
  end
elseif op == 'release' then
  if gen == s.gen and s.state == 'half_open' and s.probes > 0 then
    s.probes = s.probes - 1
    changed = true
  end
elseif op == 'reset' then
  s.state = 'closed'
  s.failures = 0
  s.successes = 0
  s.probes = 0
  s.opened_at = 0
  s.open_until = 0
  s.probe_lease = 0
  s.gen = s.gen + 1
  changed = true
else
  return redis.error_reply('ERR breaker: unknown op ' .. tostring(op))
end

if changed then
  s.v = s.v + 1
  local function n(x) return string.format('%.0f', x) end
  redis.call('HSET', key, 'state', s.state, 'failures', n(s.failures),
    'successes', n(s.successes), 'probes', n(s.probes),
    'opened_at', n(s.opened_at), 'open_until', n(s.open_until),
    'probe_lease', n(s.probe_lease), 'gen', n(s.gen), 'v', n(s.v))
  redis.call('PEXPIRE', key, ttl)
end
return {granted, s.state, s.failures, s.successes, s.probes, s.opened_at,
  s.open_until, s.probe_lease, s.gen, s.v}
`)

// scriptArgs are the ARGV of script for o.
func scriptArgs(o op, now, gen int64, p params) []string {
	return []string{
		string(o),
		strconv.FormatInt(now, 10),
		strconv.FormatInt(gen, 10),
		strconv.FormatInt(p.failureThreshold, 10),
		strconv.FormatInt(p.successThreshold, 10),
		strconv.FormatInt(p.timeout, 10),
		strconv.FormatInt(p.maxProbes, 10),
		strconv.FormatInt(p.keyTTL, 10),
	}
}

// parseScript decodes script's reply.
func parseScript(v kv.Value) (s state, granted bool, err error) {
	arr, err := v.Array()
	if err != nil || len(arr) != 10 {
		return state{}, false, fmt.Errorf("breaker: unexpected script reply %v", v)
	}
	st, err := arr[1].Text()
	if err != nil {
		return state{}, false, fmt.Errorf("breaker: script reply state: %w", err)
	}
	var n [9]int64
	for i, j := range []int{0, 2, 3, 4, 5, 6, 7, 8, 9} {
		if n[i], err = arr[j].Int(); err != nil {
			return state{}, false, fmt.Errorf("breaker: script reply field %d: %w", j, err)
		}
	}
	s = state{State: agentapi.BreakerState(st), Failures: n[1], Successes: n[2], Probes: n[3],
		OpenedAt: n[4], Until: n[5], Lease: n[6], Gen: n[7], V: n[8]}
	if err := s.check(); err != nil {
		return state{}, false, err
	}
	return s, n[0] == 1, nil
}

// parseHash decodes an HGETALL reply of a breaker's hash; a missing key
// is a closed breaker that never failed.
func parseHash(v kv.Value) (state, error) {
	s := state{State: agentapi.BreakerClosed}
	if v.IsNil() {
		return s, nil
	}
	kvs, err := v.Strings()
	if err != nil {
		return state{}, fmt.Errorf("breaker: HGETALL reply: %w", err)
	}
	if len(kvs)%2 != 0 {
		return state{}, fmt.Errorf("breaker: HGETALL reply has %d elements", len(kvs))
	}
	for i := 0; i < len(kvs); i += 2 {
		f, x := kvs[i], kvs[i+1]
		var dst *int64
		switch f {
		case "state":
			s.State = agentapi.BreakerState(x)
			continue
		case "failures":
			dst = &s.Failures
		case "successes":
			dst = &s.Successes
		case "probes":
			dst = &s.Probes
		case "opened_at":
			dst = &s.OpenedAt
		case "open_until":
			dst = &s.Until
		case "probe_lease":
			dst = &s.Lease
		case "gen":
			dst = &s.Gen
		case "v":
			dst = &s.V
		default:
			continue
		}
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return state{}, fmt.Errorf("breaker: field %s = %q: not an integer", f, x)
		}
		*dst = n
	}
	return s, s.check()
}

func (s state) check() error {
	switch s.State {
	case agentapi.BreakerClosed, agentapi.BreakerOpen, agentapi.BreakerHalfOpen:
		return nil
	}
	return fmt.Errorf("breaker: unknown state %q", s.State)
}
