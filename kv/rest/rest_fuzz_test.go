package rest_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/rest"
)

// FuzzDecodeResult feeds arbitrary bytes to the decoder of one "result"
// member of a base64-encoded Upstash reply. It must never panic; what it
// refuses is a kv.ErrUnavailable (the server sent something it should
// not have); what it accepts is one JSON value (or nothing: a missing
// result), and re-encoding the Value the way Upstash does decodes to the
// same Value.
func FuzzDecodeResult(f *testing.F) {
	for _, s := range []string{
		`"OK"`, `"T0s="`, `"VDBzPQ=="`, `"aGk="`, `"8J+agA=="`, `""`, `null`, ``, ` `,
		`42`, `-7`, `-0`, `9223372036854775807`, `9223372036854775808`, `-9223372036854775809`,
		`1.5`, `1e3`, `true`, `false`, `[]`, `[[[]]]`,
		`["aGk=", null, 1, ["T0s=", [], "OK"]]`,
		`"not base64!"`, `"aGk"`, `"aG\nk="`, `{"a":1}`, `[1, "%%%"]`, `[1,`, `"\u00ff"`,
		`"aGk=" trailing`, `1 2`, `[] []`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		v, err := rest.DecodeResult(raw)
		if err != nil {
			if !errors.Is(err, kv.ErrUnavailable) {
				t.Fatalf("DecodeResult(%q) error %v does not match kv.ErrUnavailable", raw, err)
			}
			if !v.IsNil() {
				t.Fatalf("DecodeResult(%q) failed (%v) but returned %v", raw, err, v)
			}
			return
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			if !v.IsNil() {
				t.Fatalf("DecodeResult(%q) = %v, want nil", raw, v)
			}
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("DecodeResult(%q) accepted what is not one JSON value: %v", raw, v)
		}
		again, err := rest.DecodeResult(encodeUpstash(t, v, false))
		if err != nil || !again.Equal(v) {
			t.Fatalf("DecodeResult(%q) = %v, but its re-encoding decodes to %v, %v", raw, v, again, err)
		}
	})
}

// FuzzDecodeRoundTrip builds a Value from the fuzzer's bytes, encodes it
// the way an Upstash server does with Upstash-Encoding: base64 (every
// string base64, except a status reply "OK" sent as is; integers as
// numbers; nil as null; arrays nested), and checks that the decoder, and
// the whole client reading that reply from /pipeline, give it back.
func FuzzDecodeRoundTrip(f *testing.F) {
	f.Add([]byte{1, 2, 'h', 'i'}, false)
	f.Add([]byte{1, 2, 'O', 'K'}, true) // the status reply OK
	f.Add([]byte{1, 2, 'O', 'K'}, false)
	f.Add([]byte{1, 4, 'T', '0', 's', '='}, false) // a stored "T0s="
	f.Add([]byte{1, 3, 0xff, 0xfe, 0x00}, false)   // binary
	f.Add([]byte{2, 0x80, 0, 0, 0, 0, 0, 0, 0}, false)
	f.Add([]byte{0}, false)
	f.Add([]byte{3, 3, 0, 2, 1, 0, 1, 1, 'x', 3, 0}, true)
	c := fakeClient(f)
	f.Fuzz(func(t *testing.T, data []byte, statusOK bool) {
		v := buildValue(&data, 0)
		enc := encodeUpstash(t, v, statusOK)
		got, err := rest.DecodeResult(enc)
		if err != nil {
			t.Fatalf("DecodeResult(%s) for %v: %v", enc, v, err)
		}
		if !got.Equal(v) {
			t.Fatalf("DecodeResult(%s) = %v, want %v", enc, got, v)
		}

		// The same value inside a /pipeline reply, next to an error.
		body := []byte(`[{"result":` + string(enc) + `},{"error":"ERR fuzz"}]`)
		res, err := c.reply(200, body).Pipeline(context.Background(), []string{"GET", "k"}, []string{"GET", "k"})
		if err != nil {
			t.Fatalf("Pipeline over %s: %v", body, err)
		}
		if res[0].Err != nil || !res[0].Value.Equal(v) {
			t.Fatalf("Pipeline result 0 = %v, %v; want %v", res[0].Value, res[0].Err, v)
		}
		var se *kv.ServerError
		if !errors.As(res[1].Err, &se) || se.Msg != "ERR fuzz" {
			t.Fatalf("Pipeline result 1 error = %v, want ServerError ERR fuzz", res[1].Err)
		}
	})
}

// FuzzClientReply answers the client's request with an arbitrary status
// and body (through an http.RoundTripper, no network). The client must
// never panic; an error must be one of the documented kinds for that
// status; a success needs a 200 with a JSON body.
func FuzzClientReply(f *testing.F) {
	f.Add(uint16(200), []byte(`{"result":"aGk="}`), uint8(0))
	f.Add(uint16(200), []byte(`{"result":"OK"}`), uint8(0))
	f.Add(uint16(200), []byte(`{"error":"WRONGTYPE Operation against a key"}`), uint8(0))
	f.Add(uint16(200), []byte(`{}`), uint8(0))
	f.Add(uint16(200), []byte(`null`), uint8(0))
	f.Add(uint16(200), []byte(`[{"result":1},{"result":null}]`), uint8(1))
	f.Add(uint16(200), []byte(`[{"result":1}]`), uint8(1))
	f.Add(uint16(200), []byte(`[{"result":["T0s=",1]},{"error":"EXECABORT"}]`), uint8(2))
	f.Add(uint16(200), []byte(`not json`), uint8(0))
	f.Add(uint16(400), []byte(`{"error":"ERR unknown command"}`), uint8(0))
	f.Add(uint16(401), []byte(`{"error":"Unauthorized"}`), uint8(1))
	f.Add(uint16(404), []byte(``), uint8(0))
	f.Add(uint16(500), []byte(`{"error":"boom"}`), uint8(2))
	f.Add(uint16(302), []byte(`moved`), uint8(0))
	c := fakeClient(f)
	f.Fuzz(func(t *testing.T, status uint16, body []byte, mode uint8) {
		if status < 100 || status > 599 {
			return
		}
		cl := c.reply(int(status), body)
		ctx := context.Background()
		var err error
		switch mode % 3 {
		case 0:
			_, err = cl.Do(ctx, "GET", "k")
		case 1:
			var res []kv.Result
			res, err = cl.Pipeline(ctx, []string{"GET", "a"}, []string{"GET", "b"})
			if err == nil && len(res) != 2 {
				t.Fatalf("Pipeline returned %d results for 2 commands", len(res))
			}
		case 2:
			var res []kv.Result
			res, err = cl.MultiExec(ctx, []string{"INCR", "a"}, []string{"GET", "b"})
			if err == nil && len(res) != 2 {
				t.Fatalf("MultiExec returned %d results for 2 commands", len(res))
			}
		}
		var se *kv.ServerError
		switch {
		case err == nil:
			if status != http.StatusOK || !json.Valid(body) {
				t.Fatalf("HTTP %d %q accepted", status, body)
			}
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			if !errors.Is(err, kv.ErrUnauthorized) {
				t.Fatalf("HTTP %d: error %v, want kv.ErrUnauthorized", status, err)
			}
		case status >= 400 && status < 500:
			if !errors.As(err, &se) || se.Msg == "" {
				t.Fatalf("HTTP %d: error %v, want a *kv.ServerError with a message", status, err)
			}
		default:
			// A 200 may carry a per-command error (a ServerError inside
			// Do's envelope); anything else is the server being unusable.
			if !errors.Is(err, kv.ErrUnavailable) && !(status == http.StatusOK && errors.As(err, &se)) {
				t.Fatalf("HTTP %d %q: error %v, want kv.ErrUnavailable", status, body, err)
			}
		}
	})
}

// fixedReply is an http.RoundTripper answering every request with one
// status and body.
type fixedReply struct {
	status int
	body   []byte
}

func (r *fixedReply) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	return &http.Response{
		StatusCode: r.status,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(bytes.NewReader(r.body)),
		Request:    req,
	}, nil
}

type replyClient struct {
	c  *rest.Client
	rt *fixedReply
}

// reply sets what the next requests are answered with. Fuzz functions run
// one input at a time per process, so one client is reused.
func (c replyClient) reply(status int, body []byte) *rest.Client {
	c.rt.status, c.rt.body = status, body
	return c.c
}

func fakeClient(tb testing.TB) replyClient {
	rt := &fixedReply{}
	c, err := rest.New(rest.Options{
		URL: "https://fuzz.invalid", Token: "t", MaxRetries: -1,
		HTTPClient: &http.Client{Transport: rt, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return replyClient{c: c, rt: rt}
}

// buildValue consumes data to build a Value: a tag byte (nil, string,
// integer, array) then its content. Arrays nest at most four deep.
func buildValue(data *[]byte, depth int) kv.Value {
	next := func() byte {
		if len(*data) == 0 {
			return 0
		}
		b := (*data)[0]
		*data = (*data)[1:]
		return b
	}
	switch next() % 4 {
	case 1:
		n := min(int(next()), len(*data))
		s := string((*data)[:n])
		*data = (*data)[n:]
		return kv.StringValue(s)
	case 2:
		var buf [8]byte
		n := copy(buf[:], *data)
		*data = (*data)[n:]
		return kv.IntValue(int64(binary.BigEndian.Uint64(buf[:])))
	case 3:
		if depth >= 4 {
			return kv.NilValue()
		}
		vs := make([]kv.Value, int(next()%6))
		for i := range vs {
			vs[i] = buildValue(data, depth+1)
		}
		return kv.ArrayValue(vs...)
	}
	return kv.NilValue()
}

// encodeUpstash renders v as an Upstash server does with base64 encoding.
// statusOK sends the string "OK" as a status reply (as is) rather than a
// bulk string (base64): both must decode to "OK".
func encodeUpstash(t *testing.T, v kv.Value, statusOK bool) []byte {
	t.Helper()
	var conv func(v kv.Value) any
	conv = func(v kv.Value) any {
		switch v.Type() {
		case kv.Nil:
			return nil
		case kv.Int:
			n, _ := v.Int()
			return n
		case kv.String:
			s, _ := v.Text()
			if statusOK && s == "OK" {
				return s
			}
			return base64.StdEncoding.EncodeToString([]byte(s))
		}
		arr, _ := v.Array()
		out := make([]any, len(arr))
		for i, e := range arr {
			out[i] = conv(e)
		}
		return out
	}
	b, err := json.Marshal(conv(v))
	if err != nil {
		t.Fatalf("encoding %v: %v", v, err)
	}
	return b
}
