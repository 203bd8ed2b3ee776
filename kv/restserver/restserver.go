// Package restserver serves the Upstash Redis REST protocol in front of a real
// Redis server.
//
// It exists so that the project's Upstash REST client can be exercised against
// a faithful peer in tests, and so developers can run the REST code path
// locally without an Upstash account. The handler translates each HTTP request
// into Redis commands sent through a rueidis client and renders the replies as
// Upstash does:
//
//   - POST / with a JSON array body (["SET","k","v","EX",100]) runs one command.
//   - GET or POST /cmd/arg1/arg2 runs one command given in path form; for POST
//     a non-empty raw body is appended as the last argument.
//   - POST /pipeline runs an array of commands (not atomically) and answers an
//     array of {"result":...} / {"error":"..."} objects.
//   - POST /multi-exec runs an array of commands inside MULTI/EXEC on a
//     dedicated connection.
//
// Requests authenticate with "Authorization: Bearer <token>" or the _token
// query parameter. The "Upstash-Encoding: base64" request header makes every
// string in a result base64 encoded, except the status reply "OK". Every
// response carries an "upstash-sync-token" header, and the last such header
// sent by a client is remembered (see Server.LastSyncToken).
//
// The server also offers fault injection (Server.FailNext), token rotation
// (Server.SetToken) and a request counter (Server.Requests) for tests.
package restserver

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/rueidis"
)

// MaxBodyBytes is the largest request body the server accepts. Larger bodies
// are answered with HTTP 413.
const MaxBodyBytes = 1 << 20

// SyncTokenHeader is the header that carries the read-your-writes sync token
// in both directions.
const SyncTokenHeader = "Upstash-Sync-Token"

// EncodingHeader is the request header that selects the response encoding.
// Its only meaningful value is "base64".
const EncodingHeader = "Upstash-Encoding"

// Server is an http.Handler that speaks the Upstash Redis REST protocol and
// executes the commands on a Redis server through a rueidis client.
// A Server is safe for concurrent use. The zero value is not usable; create
// one with New.
type Server struct {
	client rueidis.Client

	mu        sync.Mutex
	token     string
	failLeft  int
	failCode  int
	lastToken string

	syncToken atomic.Int64
	requests  atomic.Int64
}

// New returns a Server that runs commands on client and accepts requests
// authenticated with token. An empty token disables authentication.
//
// The client should be created with DisableCache set. For reply shapes that
// match Upstash exactly, it should also use RESP2 (ClientOption.AlwaysRESP2),
// as NewRedisClient does: with RESP3 some commands answer with different
// shapes (for example ZRANGE ... WITHSCORES), and RESP3 maps are flattened
// with their keys in sorted order because rueidis does not expose the
// server's order. The Server does not take ownership of client; the caller
// closes it.
func New(client rueidis.Client, token string) *Server {
	return &Server{client: client, token: token}
}

// NewRedisClient connects a rueidis client to the Redis server at redisURL
// (for example "redis://127.0.0.1:6379/0", parsed with rueidis.ParseURL) with
// the options the Server expects: client-side caching disabled and RESP2
// replies, which mirror what Upstash returns.
func NewRedisClient(redisURL string) (rueidis.Client, error) {
	opt, err := rueidis.ParseURL(redisURL)
	if err != nil {
		return nil, fmt.Errorf("restserver: parse redis URL: %w", err)
	}
	opt.DisableCache = true
	opt.AlwaysRESP2 = true
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("restserver: connect to redis: %w", err)
	}
	return client, nil
}

// SetToken replaces the token that requests must present. Requests that are
// already past authentication are not affected. An empty token disables
// authentication.
func (s *Server) SetToken(token string) {
	s.mu.Lock()
	s.token = token
	s.mu.Unlock()
}

// LastSyncToken returns the value of the most recent non-empty
// upstash-sync-token header received from a client, or "" if none was seen.
func (s *Server) LastSyncToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastToken
}

// Requests returns the number of HTTP requests the server has handled,
// including rejected and fault-injected ones.
func (s *Server) Requests() int64 {
	return s.requests.Load()
}

// FailNext makes the next n requests fail with HTTP status and the body
// {"error":"injected"}, without authenticating them or touching Redis.
// A call replaces any failures still pending; n <= 0 cancels them. A status
// outside 100..999 is replaced by 500.
func (s *Server) FailNext(n int, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n < 0 {
		n = 0
	}
	if status < 100 || status > 999 {
		status = http.StatusInternalServerError
	}
	s.failLeft = n
	s.failCode = status
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	w.Header().Set(SyncTokenHeader, strconv.FormatInt(s.syncToken.Add(1), 10))

	injected, status := s.beginRequest(r)
	if injected {
		writeError(w, status, "injected")
		return
	}
	if !s.authorized(r) {
		writeError(w, http.StatusUnauthorized, "Unauthorized")
		return
	}

	enc := encoder{base64: strings.EqualFold(strings.TrimSpace(r.Header.Get(EncodingHeader)), "base64")}
	switch r.URL.Path {
	case "/pipeline":
		s.servePipeline(w, r, enc)
	case "/multi-exec":
		s.serveMultiExec(w, r, enc)
	case "/", "":
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, http.StatusMethodNotAllowed, "ERR method not allowed: send the command as a JSON array with POST")
			return
		}
		body, ok := readBody(w, r)
		if !ok {
			return
		}
		cmd, err := parseCommand(body)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.serveSingle(w, r, cmd, enc)
	default:
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, POST")
			writeError(w, http.StatusMethodNotAllowed, "ERR method not allowed")
			return
		}
		cmd, err := pathCommand(r.URL.EscapedPath())
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if r.Method == http.MethodPost {
			body, ok := readBody(w, r)
			if !ok {
				return
			}
			if len(body) > 0 {
				cmd = append(cmd, string(body))
			}
		}
		s.serveSingle(w, r, cmd, enc)
	}
}

// beginRequest records the client's sync token and consumes one injected
// failure if any is pending.
func (s *Server) beginRequest(r *http.Request) (injected bool, status int) {
	tok := r.Header.Get(SyncTokenHeader)
	s.mu.Lock()
	defer s.mu.Unlock()
	if tok != "" {
		s.lastToken = tok
	}
	if s.failLeft > 0 {
		s.failLeft--
		return true, s.failCode
	}
	return false, 0
}

func (s *Server) authorized(r *http.Request) bool {
	s.mu.Lock()
	want := s.token
	s.mu.Unlock()
	if want == "" {
		return true
	}
	var got string
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			got = strings.TrimSpace(rest)
		}
	}
	if got == "" {
		got = r.URL.Query().Get("_token")
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (s *Server) serveSingle(w http.ResponseWriter, r *http.Request, cmd []string, enc encoder) {
	if err := checkCommand(cmd); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	res := s.client.Do(r.Context(), s.build(s.client, cmd))
	if err := res.NonRedisError(); err != nil {
		writeError(w, http.StatusInternalServerError, "ERR redis unavailable: "+err.Error())
		return
	}
	msg, _ := res.ToMessage()
	if text, isErr := errorText(&msg); isErr {
		writeError(w, http.StatusBadRequest, text)
		return
	}
	writeJSON(w, http.StatusOK, resultBody{Result: enc.value(&msg)})
}

func (s *Server) servePipeline(w http.ResponseWriter, r *http.Request, enc encoder) {
	cmds, ok := readCommandList(w, r)
	if !ok {
		return
	}
	out := make([]any, len(cmds))
	var (
		built []rueidis.Completed
		index []int
	)
	for i, cmd := range cmds {
		if err := checkCommand(cmd); err != nil {
			out[i] = errorBody{Error: err.Error()}
			continue
		}
		built = append(built, s.build(s.client, cmd))
		index = append(index, i)
	}
	if len(built) > 0 {
		results := s.client.DoMulti(r.Context(), built...)
		for j, res := range results {
			if err := res.NonRedisError(); err != nil {
				writeError(w, http.StatusInternalServerError, "ERR redis unavailable: "+err.Error())
				return
			}
			out[index[j]] = enc.item(res)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) serveMultiExec(w http.ResponseWriter, r *http.Request, enc encoder) {
	cmds, ok := readCommandList(w, r)
	if !ok {
		return
	}
	for _, cmd := range cmds {
		if err := checkCommand(cmd); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	var results []rueidis.RedisResult
	err := s.client.Dedicated(func(c rueidis.DedicatedClient) error {
		built := make([]rueidis.Completed, 0, len(cmds)+2)
		built = append(built, c.B().Multi().Build())
		for _, cmd := range cmds {
			built = append(built, s.build(c, cmd))
		}
		built = append(built, c.B().Exec().Build())
		results = c.DoMulti(r.Context(), built...)
		return nil
	})
	if err == nil {
		for _, res := range results {
			if e := res.NonRedisError(); e != nil {
				err = e
				break
			}
		}
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "ERR redis unavailable: "+err.Error())
		return
	}
	// results[0] answers MULTI, results[1:len-1] are the QUEUED replies and
	// the last one is EXEC's reply, which is EXECABORT when any command was
	// refused at queue time.
	multiMsg, _ := results[0].ToMessage()
	if text, isErr := errorText(&multiMsg); isErr {
		writeError(w, http.StatusBadRequest, text)
		return
	}
	execMsg, _ := results[len(results)-1].ToMessage()
	if text, isErr := errorText(&execMsg); isErr {
		writeError(w, http.StatusBadRequest, text)
		return
	}
	replies, err := execMsg.ToArray()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "ERR transaction aborted")
		return
	}
	out := make([]any, len(replies))
	for i := range replies {
		if text, isErr := errorText(&replies[i]); isErr {
			out[i] = errorBody{Error: text}
			continue
		}
		out[i] = resultBody{Result: enc.value(&replies[i])}
	}
	writeJSON(w, http.StatusOK, out)
}

// build turns an already checked command into a rueidis command, marking
// commands that can block the connection so rueidis runs them on its
// dedicated pool instead of the shared pipeline.
func (s *Server) build(c rueidis.CoreClient, cmd []string) rueidis.Completed {
	a := c.B().Arbitrary(cmd[0]).Args(cmd[1:]...)
	if isBlocking(cmd) {
		return a.Blocking()
	}
	return a.Build()
}

// rejected lists commands that would change the state of a pooled, shared
// connection or take it over; they cannot be served over REST.
var rejected = map[string]bool{
	"MULTI": true, "EXEC": true, "DISCARD": true, "WATCH": true, "UNWATCH": true,
	"SELECT": true, "HELLO": true, "AUTH": true, "RESET": true, "QUIT": true,
	"MONITOR": true, "SYNC": true, "PSYNC": true, "READONLY": true, "READWRITE": true,
	"REPLCONF": true,
}

// rejectedClient lists CLIENT subcommands that change connection state.
var rejectedClient = map[string]bool{
	"REPLY": true, "TRACKING": true, "CACHING": true, "SETNAME": true,
	"NO-EVICT": true, "NO-TOUCH": true, "SETINFO": true,
}

// checkCommand refuses commands the server cannot run safely. Its errors are
// formatted like Redis error replies.
func checkCommand(cmd []string) error {
	if len(cmd) == 0 || cmd[0] == "" {
		return errors.New("ERR empty command")
	}
	name := strings.ToUpper(cmd[0])
	if rejected[name] || strings.HasSuffix(name, "SUBSCRIBE") ||
		(name == "CLIENT" && len(cmd) > 1 && rejectedClient[strings.ToUpper(cmd[1])]) {
		return fmt.Errorf("ERR command is not available over REST: '%s'", strings.ToLower(cmd[0]))
	}
	return nil
}

var blocking = map[string]bool{
	"BLPOP": true, "BRPOP": true, "BRPOPLPUSH": true, "BLMOVE": true, "BLMPOP": true,
	"BZPOPMIN": true, "BZPOPMAX": true, "BZMPOP": true, "WAIT": true, "WAITAOF": true,
}

func isBlocking(cmd []string) bool {
	name := strings.ToUpper(cmd[0])
	if blocking[name] {
		return true
	}
	if name == "XREAD" || name == "XREADGROUP" {
		for _, a := range cmd[1:] {
			if strings.EqualFold(a, "BLOCK") {
				return true
			}
		}
	}
	return false
}

// readBody reads the whole request body, answering 413 or 400 itself when it
// cannot.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge,
				fmt.Sprintf("ERR request body exceeds %d bytes", MaxBodyBytes))
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "ERR cannot read request body: "+err.Error())
		return nil, false
	}
	return body, true
}

// readCommandList reads and parses the body of /pipeline and /multi-exec,
// answering the error itself when it cannot.
func readCommandList(w http.ResponseWriter, r *http.Request) ([][]string, bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "ERR method not allowed: use POST")
		return nil, false
	}
	body, ok := readBody(w, r)
	if !ok {
		return nil, false
	}
	var raw []json.RawMessage
	if err := decodeStrict(body, &raw); err != nil {
		writeError(w, http.StatusBadRequest, "ERR invalid request body: expected a JSON array of command arrays: "+err.Error())
		return nil, false
	}
	if len(raw) == 0 {
		writeError(w, http.StatusBadRequest, "ERR empty command list")
		return nil, false
	}
	cmds := make([][]string, len(raw))
	for i, item := range raw {
		cmd, err := parseCommand(item)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%v (command %d)", err, i))
			return nil, false
		}
		cmds[i] = cmd
	}
	return cmds, true
}

// parseCommand parses a JSON array of strings and numbers into command
// arguments. Numbers become their decimal text.
func parseCommand(data []byte) ([]string, error) {
	var raw []any
	if err := decodeStrict(data, &raw); err != nil {
		return nil, fmt.Errorf("ERR invalid command: expected a JSON array: %v", err)
	}
	if len(raw) == 0 {
		return nil, errors.New("ERR empty command")
	}
	cmd := make([]string, len(raw))
	for i, v := range raw {
		switch v := v.(type) {
		case string:
			cmd[i] = v
		case json.Number:
			cmd[i] = numberText(v)
		default:
			return nil, fmt.Errorf("ERR invalid command argument %d: only strings and numbers are allowed", i)
		}
	}
	return cmd, nil
}

// decodeStrict decodes exactly one JSON value from data into v, keeping
// numbers as json.Number.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// numberText renders a JSON number as decimal text: integers keep their
// digits exactly; other numbers are written without an exponent.
func numberText(n json.Number) string {
	s := n.String()
	if _, err := strconv.ParseInt(s, 10, 64); err == nil {
		return s
	}
	if isDigits(strings.TrimPrefix(s, "-")) {
		return s // an integer too large for int64: keep it exact
	}
	f, err := n.Float64()
	if err != nil {
		return s
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// pathCommand splits a path such as /set/k/v into URL-decoded arguments. A
// single trailing slash is ignored.
func pathCommand(escaped string) ([]string, error) {
	p := strings.TrimPrefix(escaped, "/")
	p = strings.TrimSuffix(p, "/")
	if p == "" {
		return nil, errors.New("ERR empty command")
	}
	parts := strings.Split(p, "/")
	cmd := make([]string, len(parts))
	for i, part := range parts {
		v, err := url.PathUnescape(part)
		if err != nil {
			return nil, fmt.Errorf("ERR invalid path segment %d: %v", i, err)
		}
		cmd[i] = v
	}
	return cmd, nil
}

// resultBody and errorBody are the two response envelopes.
type resultBody struct {
	Result any `json:"result"`
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"ERR cannot encode reply"}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// errorText reports whether m is a Redis error reply and returns its full
// text, including the "ERR " prefix that rueidis strips from its error values.
func errorText(m *rueidis.RedisMessage) (string, bool) {
	err := m.Error()
	if err == nil || rueidis.IsRedisNil(err) {
		return "", false
	}
	// For error replies ToString returns the raw text along with the error.
	if s, _ := m.ToString(); s != "" {
		return s, true
	}
	return err.Error(), true
}

// encoder converts Redis replies to JSON values.
type encoder struct {
	base64 bool
}

// item converts one pipeline result into its envelope.
func (e encoder) item(res rueidis.RedisResult) any {
	msg, _ := res.ToMessage()
	if text, isErr := errorText(&msg); isErr {
		return errorBody{Error: text}
	}
	return resultBody{Result: e.value(&msg)}
}

// value converts a reply: strings become JSON strings (base64 encoded when
// requested, except the status reply OK), integers numbers, nil null, arrays
// and sets arrays, maps flat key/value arrays, booleans 1/0 and doubles
// strings.
func (e encoder) value(m *rueidis.RedisMessage) any {
	switch {
	case m.IsNil():
		return nil
	case m.IsInt64():
		n, _ := m.ToInt64()
		return n
	case m.IsBool():
		if b, _ := m.ToBool(); b {
			return int64(1)
		}
		return int64(0)
	case m.IsArray():
		vals, _ := m.ToArray()
		out := make([]any, len(vals))
		for i := range vals {
			out[i] = e.value(&vals[i])
		}
		return out
	case m.IsMap():
		return e.mapValue(m)
	}
	s, _ := m.ToString()
	if text, isErr := errorText(m); isErr {
		// An error nested in a reply (a script's pcall result): its text,
		// encoded like any other string, which is how kv.Value presents it.
		s = text
	}
	if !e.base64 || (s == "OK" && isStatus(m)) {
		return s
	}
	return base64.StdEncoding.EncodeToString([]byte(s))
}

// mapValue flattens a RESP3 map. rueidis only exposes maps as Go maps, so
// the pairs are emitted in key order.
func (e encoder) mapValue(m *rueidis.RedisMessage) any {
	kv, err := m.AsMap()
	if err != nil {
		return []any{}
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		v := kv[k]
		key := k
		if e.base64 {
			key = base64.StdEncoding.EncodeToString([]byte(k))
		}
		out = append(out, key, e.value(&v))
	}
	return out
}

// isStatus reports whether a string reply is a RESP simple string (a status
// reply such as +OK) rather than a bulk string. rueidis does not expose the
// distinction directly; its cache serialization starts with 7 TTL bytes
// followed by the RESP type byte. If that layout ever changes, every "OK"
// is treated as a status reply.
func isStatus(m *rueidis.RedisMessage) bool {
	b := m.CacheMarshal(nil)
	if len(b) < 8 {
		return true
	}
	return b[7] != '$'
}
