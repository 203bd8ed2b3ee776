// Package kv is the one way the rest of AgentAPI talks to Redis.
//
// Feature stores (sessions, rate limits, breakers, cache, tenant state) are
// written against the small Client interface below and never see which
// transport carries their commands: the native RESP protocol (package
// kv/native, over rueidis) or Upstash's REST API (package kv/rest). Switch
// puts one or two transports behind a single Client, falls back from the
// preferred one to the other when it cannot be reached, and switches back when
// it recovers.
//
// Values are Go strings. Over the native protocol any bytes round-trip; over
// REST arguments travel inside JSON and must be valid UTF-8, so a store that
// keeps binary data encodes it (base64) itself. Transports reject arguments
// they cannot carry with an error of kind KindInvalid instead of mangling
// them.
package kv

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// Client runs Redis commands. Implementations are safe for concurrent use.
//
// Errors: a reply error from Redis is a *ServerError (the command ran and
// was refused, e.g. WRONGTYPE). A transport that cannot reach its server, or
// whose breaker is open, returns an error matching ErrUnavailable; bad
// credentials match ErrUnauthorized. A missing key is not an error: the
// reply is a nil Value. Cancelling ctx abandons the call and returns
// ctx.Err() (wrapped); whether the command ran is then unknown.
//
// # Redis Cluster
//
// A transport over a Redis Cluster (kv/native, which finds out when it
// dials) sends each command to the node that serves its keys' hash slot
// (see Slot), so what one call may touch is narrower than on one server:
//
//   - One command's keys must share a slot (DEL a b, MGET, ...).
//   - MultiExec: the keys of all its commands must share one slot; the
//     transaction runs on that node.
//   - Eval: every key in keys must share one slot. A script without keys
//     runs on one node, whichever.
//   - Pipeline may span slots: the transport splits it by node and returns
//     the results in the order of cmds. Commands on one slot run in the
//     order given; commands on different slots run on different nodes, in
//     no defined order relative to each other. A caller that needs one
//     write to land before another in a different slot waits for the
//     first one's reply.
//   - A command without keys runs on one node, whichever; except that
//     SCRIPT LOAD, SCRIPT FLUSH and SCRIPT EXISTS (through Do) go to every
//     node, so that EVALSHA finds a loaded script wherever its keys are.
//
// A call that breaks the one-slot rules fails before anything is sent
// with an error matching ErrCrossSlot (kind KindInvalid), or, for a
// command whose keys the transport cannot locate, with Redis's CROSSSLOT
// *ServerError; IsCrossSlot matches both. Keys that share a hash tag,
// {...}, share a slot: the feature stores put a tenant's keys under
// {t:<tenant>} and follow these rules on every transport, so that the same
// code runs on one server, on Upstash and on a cluster. On a single server
// the rules restrict nothing.
type Client interface {
	// Do runs one command, e.g. Do(ctx, "SET", "k", "v", "PX", "1000").
	Do(ctx context.Context, args ...string) (Value, error)

	// Pipeline sends cmds in one round trip and returns one Result per
	// command, in order. It is not atomic: other clients' commands may run in
	// between. On one server the commands run in the order given; on a
	// cluster only those of one slot do (see Client). The error is non-nil
	// only when the round trip itself failed, in which case none, some or
	// all of the commands may have run.
	Pipeline(ctx context.Context, cmds ...[]string) ([]Result, error)

	// MultiExec runs cmds atomically (MULTI ... EXEC) and returns one Result
	// per command. A command that Redis rejects when queueing aborts the
	// whole transaction: nothing runs and the error is a *ServerError. On a
	// cluster every key of every command must be in one slot.
	MultiExec(ctx context.Context, cmds ...[]string) ([]Result, error)

	// Eval runs s with EVALSHA and, when the server does not know the script
	// yet (NOSCRIPT), with EVAL, which also loads it. Every key the script
	// touches must be in keys, and on a cluster in one slot.
	Eval(ctx context.Context, s *Script, keys []string, args ...string) (Value, error)

	// Close releases connections. Calls after Close fail.
	Close() error
}

// Result is the outcome of one command in a Pipeline or MultiExec.
type Result struct {
	Value Value
	Err   error // a *ServerError when Redis refused this command
}

// CachingClient is implemented by clients that can serve reads from a local
// cache kept coherent by the server (RESP3 client-side caching). Use
// DoCached rather than asserting it directly.
type CachingClient interface {
	// DoCached runs a read-only command, serving it from the local cache
	// when the server guarantees the cached reply is current; ttl bounds how
	// long an entry may live locally.
	DoCached(ctx context.Context, ttl time.Duration, args ...string) (Value, error)
}

// DoCached runs a read-only command through c's client-side cache when c has
// one, and as a plain Do otherwise.
func DoCached(ctx context.Context, c Client, ttl time.Duration, args ...string) (Value, error) {
	if cc, ok := c.(CachingClient); ok {
		return cc.DoCached(ctx, ttl, args...)
	}
	return c.Do(ctx, args...)
}

// Script is a Lua script identified by its SHA1, as EVALSHA wants.
type Script struct {
	src string
	sha string
}

// NewScript returns a Script for src.
func NewScript(src string) *Script {
	sum := sha1.Sum([]byte(src))
	return &Script{src: src, sha: hex.EncodeToString(sum[:])}
}

// Source is the script's Lua text.
func (s *Script) Source() string { return s.src }

// SHA1 is the hex SHA1 of the source, the name EVALSHA uses.
func (s *Script) SHA1() string { return s.sha }

// EvalWith runs s over do with EVALSHA, retrying with EVAL when the server
// answers NOSCRIPT. Transports implement Client.Eval with it so the fallback
// rule lives in one place.
func EvalWith(ctx context.Context, do func(context.Context, ...string) (Value, error), s *Script, keys []string, args ...string) (Value, error) {
	cmd := make([]string, 0, 3+len(keys)+len(args))
	cmd = append(cmd, "EVALSHA", s.sha, itoa(len(keys)))
	cmd = append(cmd, keys...)
	cmd = append(cmd, args...)
	v, err := do(ctx, cmd...)
	if err == nil || !IsNoScript(err) {
		return v, err
	}
	cmd[0], cmd[1] = "EVAL", s.src
	return do(ctx, cmd...)
}

// Errors shared by every transport. Match them with errors.Is.
var (
	// ErrUnavailable: the server could not be reached (refused, reset,
	// timed out, 5xx after retries) or the transport's breaker is open.
	ErrUnavailable = agentapi.E("kv", agentapi.KindUnavailable, errors.New("redis unavailable"))
	// ErrUnauthorized: the server rejected the credentials (NOAUTH,
	// WRONGPASS, HTTP 401).
	ErrUnauthorized = agentapi.E("kv", agentapi.KindUnavailable, errors.New("redis rejected the credentials"))
	// ErrNil is returned by Value accessors on a nil reply.
	ErrNil = agentapi.E("kv", agentapi.KindNotFound, errors.New("redis: nil reply"))
	// ErrClosed is returned by calls on a closed client.
	ErrClosed = agentapi.E("kv", agentapi.KindUnavailable, errors.New("redis client closed"))
)

// ServerError is an error reply from Redis: the command reached the server
// and was refused. Msg is the reply text, e.g. "WRONGTYPE Operation against
// a key holding the wrong kind of value".
type ServerError struct {
	Msg string
}

func (e *ServerError) Error() string { return "redis: " + e.Msg }

// Prefix is the error code, the first word of Msg (ERR, WRONGTYPE, NOSCRIPT...).
func (e *ServerError) Prefix() string {
	if i := strings.IndexByte(e.Msg, ' '); i >= 0 {
		return e.Msg[:i]
	}
	return e.Msg
}

// IsNoScript reports whether err is Redis's NOSCRIPT reply.
func IsNoScript(err error) bool {
	var se *ServerError
	return errors.As(err, &se) && se.Prefix() == "NOSCRIPT"
}

// ReplyError is how a transport reports the reply error se of a command:
// replies that say the server cannot serve right now -- CLUSTERDOWN (a
// cluster with a slot unserved, as while a replica is being promoted),
// LOADING (a restarted server reading its data) and MASTERDOWN (a replica
// that lost its master) -- match ErrUnavailable (and still *ServerError),
// like a connection that failed; any other is se itself.
func ReplyError(op string, se *ServerError) error {
	switch se.Prefix() {
	case "CLUSTERDOWN", "LOADING", "MASTERDOWN":
		return Unavailable(op, se)
	}
	return se
}

// IsServerError reports whether err is a reply error from Redis.
func IsServerError(err error) bool {
	var se *ServerError
	return errors.As(err, &se)
}

// Unavailable wraps cause so that it matches ErrUnavailable and still
// shows what went wrong.
func Unavailable(op string, cause error) error {
	return &wrapped{op: op, sentinel: ErrUnavailable, cause: cause}
}

// Unauthorized wraps cause so that it matches ErrUnauthorized.
func Unauthorized(op string, cause error) error {
	return &wrapped{op: op, sentinel: ErrUnauthorized, cause: cause}
}

// Invalid reports an argument the transport cannot carry.
func Invalid(op string, cause error) error {
	return agentapi.E(op, agentapi.KindInvalid, cause)
}

type wrapped struct {
	op       string
	sentinel error
	cause    error
}

func (w *wrapped) Error() string {
	if w.cause == nil {
		return w.op + ": " + w.sentinel.Error()
	}
	return w.op + ": " + w.sentinel.(*agentapi.Error).Err.Error() + ": " + w.cause.Error()
}

func (w *wrapped) Unwrap() []error { return []error{w.sentinel, w.cause} }

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
