// Package rest is the kv transport that speaks Upstash's Redis REST API:
// each command is a JSON array POSTed with a Bearer token; /pipeline and
// /multi-exec carry several at once. No maintained Go client exists, so it
// is written here.
//
// Replies are requested base64-encoded (Upstash-Encoding: base64) so that any
// stored bytes survive the JSON envelope; the status reply "OK" is the one
// string the server leaves as it is. The upstash-sync-token header of each
// reply is sent back on the next request, which gives read-your-writes
// consistency across Upstash's replicas.
//
// Network errors and 5xx answers are retried with exponential backoff (a
// bounded number of times); a 4xx is never retried. Like Upstash's own SDKs,
// a retried write may run twice if the first attempt reached the server but
// its answer was lost; the feature stores keep their writes idempotent or
// inside scripts for that reason.
package rest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/agentapi-mt/agentapi/kv"
)

// Options configure a Client.
type Options struct {
	// URL is the database's REST URL (UPSTASH_REDIS_REST_URL).
	URL string
	// Token is the REST token (UPSTASH_REDIS_REST_TOKEN).
	Token string
	// Timeout bounds each HTTP attempt, connection included. Default 5s.
	Timeout time.Duration
	// PoolSize is the number of idle keep-alive connections kept. Default 10.
	PoolSize int
	// MaxRetries is how many times a failed attempt is retried. Default 3;
	// negative means none.
	MaxRetries int
	// Backoff is the first retry delay; it doubles, with jitter, up to 1s.
	// Default 50ms.
	Backoff time.Duration
	// HTTPClient replaces the client built from the options above.
	HTTPClient *http.Client
}

// Client is a kv.Client over the Upstash REST API.
type Client struct {
	base       string
	auth       string
	hc         *http.Client
	ownsHC     bool
	maxRetries int
	backoff    time.Duration
	stats      kv.TransportCounters

	mu        sync.Mutex
	syncToken string
	closed    bool
}

var _ kv.Client = (*Client)(nil)
var _ kv.StatsReporter = (*Client)(nil)

// New returns a Client for o. It does not contact the server.
func New(o Options) (*Client, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, kv.Invalid("kv.rest", fmt.Errorf("REST URL %q: want https://host", o.URL))
	}
	if o.Token == "" {
		return nil, kv.Invalid("kv.rest", errors.New("REST token is empty"))
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.PoolSize <= 0 {
		o.PoolSize = 10
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = 3
	} else if o.MaxRetries < 0 {
		o.MaxRetries = 0
	}
	if o.Backoff <= 0 {
		o.Backoff = 50 * time.Millisecond
	}
	c := &Client{
		base:       strings.TrimRight(o.URL, "/"),
		auth:       "Bearer " + o.Token,
		hc:         o.HTTPClient,
		maxRetries: o.MaxRetries,
		backoff:    o.Backoff,
	}
	if c.hc == nil {
		c.ownsHC = true
		c.stats.TrackConns()
		dialer := &net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}
		c.hc = &http.Client{
			Timeout: o.Timeout,
			Transport: &http.Transport{
				Proxy: http.ProxyFromEnvironment,
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					return c.stats.Dialed(dialer.DialContext(ctx, network, addr))
				},
				TLSHandshakeTimeout: o.Timeout,
				MaxIdleConns:        o.PoolSize,
				MaxIdleConnsPerHost: o.PoolSize,
				IdleConnTimeout:     90 * time.Second,
				ForceAttemptHTTP2:   true,
			},
		}
	}
	return c, nil
}

// URL is the REST endpoint, for status reports.
func (c *Client) URL() string { return c.base }

// Do implements kv.Client.
func (c *Client) Do(ctx context.Context, args ...string) (kv.Value, error) {
	if err := checkArgs(args); err != nil {
		return kv.Value{}, err
	}
	var env envelope
	if err := c.post(ctx, "kv.rest.do", "", args, &env); err != nil {
		return kv.Value{}, err
	}
	return env.decode()
}

// Pipeline implements kv.Client.
func (c *Client) Pipeline(ctx context.Context, cmds ...[]string) ([]kv.Result, error) {
	return c.batch(ctx, "kv.rest.pipeline", "/pipeline", cmds)
}

// MultiExec implements kv.Client.
func (c *Client) MultiExec(ctx context.Context, cmds ...[]string) ([]kv.Result, error) {
	return c.batch(ctx, "kv.rest.multiexec", "/multi-exec", cmds)
}

func (c *Client) batch(ctx context.Context, op, path string, cmds [][]string) ([]kv.Result, error) {
	if len(cmds) == 0 {
		return nil, nil
	}
	for _, args := range cmds {
		if err := checkArgs(args); err != nil {
			return nil, err
		}
	}
	var envs []envelope
	if err := c.post(ctx, op, path, cmds, &envs); err != nil {
		return nil, err
	}
	if len(envs) != len(cmds) {
		return nil, kv.Unavailable(op, fmt.Errorf("server answered %d results for %d commands", len(envs), len(cmds)))
	}
	out := make([]kv.Result, len(envs))
	for i := range envs {
		out[i].Value, out[i].Err = envs[i].decode()
	}
	return out, nil
}

// Eval implements kv.Client.
func (c *Client) Eval(ctx context.Context, s *kv.Script, keys []string, args ...string) (kv.Value, error) {
	return kv.EvalWith(ctx, c.Do, s, keys, args...)
}

// Close implements kv.Client.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	if c.ownsHC {
		c.hc.CloseIdleConnections()
	}
	return nil
}

// TransportStats implements kv.StatsReporter: retries, and the
// connections of the client's own HTTP transport (not tracked when
// Options.HTTPClient was given).
func (c *Client) TransportStats() kv.TransportStats { return c.stats.Snapshot() }

// SyncToken is the last upstash-sync-token the server sent.
func (c *Client) SyncToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.syncToken
}

func checkArgs(args []string) error {
	if len(args) == 0 || args[0] == "" {
		return kv.Invalid("kv.rest", errors.New("empty command"))
	}
	for i, a := range args {
		if !utf8.ValidString(a) {
			return kv.Invalid("kv.rest", fmt.Errorf("argument %d is not valid UTF-8; the REST API carries text only (encode binary values)", i))
		}
	}
	return nil
}

// post sends body to base+path, retrying transient failures, and decodes
// a 200 answer into out.
func (c *Client) post(ctx context.Context, op, path string, body any, out any) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return kv.ErrClosed
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return kv.Invalid(op, err)
	}
	delay := c.backoff
	for attempt := 0; ; attempt++ {
		status, respBody, err := c.once(ctx, path, payload)
		if err == nil {
			switch {
			case status == http.StatusOK:
				if err := json.Unmarshal(respBody, out); err != nil {
					return kv.Unavailable(op, fmt.Errorf("undecodable reply: %w", err))
				}
				return nil
			case status == http.StatusUnauthorized || status == http.StatusForbidden:
				return kv.Unauthorized(op, fmt.Errorf("HTTP %d: %s", status, errorText(respBody)))
			case status >= 400 && status < 500:
				// Redis refused the command (or the request was malformed).
				return kv.ReplyError(op, &kv.ServerError{Msg: errorText(respBody)})
			}
			err = fmt.Errorf("HTTP %d: %s", status, errorText(respBody))
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", op, ctx.Err())
		}
		if attempt >= c.maxRetries {
			return kv.Unavailable(op, err)
		}
		c.stats.Retried()
		// Full jitter keeps many instances from retrying in step.
		wait := delay/2 + rand.N(delay/2+1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", op, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
	}
}

func (c *Client) once(ctx context.Context, path string, payload []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(payload))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Upstash-Encoding", "base64")
	if tok := c.SyncToken(); tok != "" {
		req.Header.Set("Upstash-Sync-Token", tok)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	// Reading to EOF and closing returns the connection to the pool.
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	resp.Body.Close()
	if err != nil {
		return 0, nil, err
	}
	if tok := resp.Header.Get("Upstash-Sync-Token"); tok != "" {
		c.mu.Lock()
		c.syncToken = tok
		c.mu.Unlock()
	}
	return resp.StatusCode, body, nil
}

func errorText(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	if s == "" {
		s = "empty reply"
	}
	return s
}

// envelope is one {"result": ...} or {"error": "..."} object.
type envelope struct {
	Result json.RawMessage `json:"result"`
	Error  *string         `json:"error"`
}

func (e envelope) decode() (kv.Value, error) {
	if e.Error != nil {
		return kv.Value{}, kv.ReplyError("kv.rest", &kv.ServerError{Msg: *e.Error})
	}
	return DecodeResult(e.Result)
}

// DecodeResult converts one "result" member of a base64-encoded Upstash
// reply to a kv.Value: strings are base64 (except the status "OK"), numbers
// are integers, null is nil, arrays nest.
func DecodeResult(raw json.RawMessage) (kv.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var x any
	if len(bytes.TrimSpace(raw)) == 0 {
		return kv.NilValue(), nil
	}
	if err := dec.Decode(&x); err != nil {
		return kv.Value{}, kv.Unavailable("kv.rest.decode", err)
	}
	// One value, nothing after it: "1 2" is not a reply.
	if _, err := dec.Token(); err != io.EOF {
		return kv.Value{}, kv.Unavailable("kv.rest.decode", errors.New("data after the result value"))
	}
	return fromJSON(x)
}

func fromJSON(x any) (kv.Value, error) {
	switch t := x.(type) {
	case nil:
		return kv.NilValue(), nil
	case string:
		if t == "OK" {
			return kv.StringValue(t), nil
		}
		b, err := base64.StdEncoding.DecodeString(t)
		if err != nil {
			return kv.Value{}, kv.Unavailable("kv.rest.decode", fmt.Errorf("string reply is not base64: %w", err))
		}
		return kv.StringValue(string(b)), nil
	case json.Number:
		if n, err := t.Int64(); err == nil {
			return kv.IntValue(n), nil
		}
		return kv.StringValue(t.String()), nil
	case bool:
		if t {
			return kv.IntValue(1), nil
		}
		return kv.IntValue(0), nil
	case []any:
		vs := make([]kv.Value, len(t))
		for i, e := range t {
			v, err := fromJSON(e)
			if err != nil {
				return kv.Value{}, err
			}
			vs[i] = v
		}
		return kv.ArrayValue(vs...), nil
	}
	return kv.Value{}, kv.Unavailable("kv.rest.decode", fmt.Errorf("unexpected %T in reply", x))
}
