package kv_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
)

func TestValueAccessors(t *testing.T) {
	var zero kv.Value
	if !zero.IsNil() || zero.Type() != kv.Nil || !zero.Equal(kv.NilValue()) {
		t.Errorf("zero Value is not nil: %v", zero)
	}
	for name, f := range map[string]func() error{
		"Text":    func() error { _, err := zero.Text(); return err },
		"Int":     func() error { _, err := zero.Int(); return err },
		"Array":   func() error { _, err := zero.Array(); return err },
		"Strings": func() error { _, err := zero.Strings(); return err },
	} {
		if err := f(); !errors.Is(err, kv.ErrNil) || agentapi.KindOf(err) != agentapi.KindNotFound {
			t.Errorf("nil %s() error = %v, want ErrNil of kind not found", name, err)
		}
	}

	if s, err := kv.IntValue(-3).Text(); err != nil || s != "-3" {
		t.Errorf("IntValue Text() = %q, %v", s, err)
	}
	if n, err := kv.StringValue("42").Int(); err != nil || n != 42 {
		t.Errorf("StringValue(42) Int() = %d, %v", n, err)
	}
	if _, err := kv.StringValue("4x").Int(); err == nil {
		t.Error("StringValue(4x) Int(): no error")
	}
	if _, err := kv.ArrayValue().Text(); err == nil {
		t.Error("array Text(): no error")
	}
	ss, err := kv.ArrayValue(kv.StringValue("a"), kv.NilValue(), kv.IntValue(7)).Strings()
	if err != nil || !slices.Equal(ss, []string{"a", "", "7"}) {
		t.Errorf("Strings() = %q, %v", ss, err)
	}
	if _, err := kv.ArrayValue(kv.ArrayValue()).Strings(); err == nil {
		t.Error("Strings() of a nested array: no error")
	}

	a := kv.ArrayValue(kv.StringValue("x"), kv.ArrayValue(kv.IntValue(1), kv.NilValue()))
	if !a.Equal(kv.ArrayValue(kv.StringValue("x"), kv.ArrayValue(kv.IntValue(1), kv.NilValue()))) {
		t.Error("equal arrays compare unequal")
	}
	for _, other := range []kv.Value{
		kv.ArrayValue(kv.StringValue("x")),
		kv.ArrayValue(kv.StringValue("x"), kv.ArrayValue(kv.IntValue(1), kv.StringValue(""))),
		kv.StringValue("x"),
	} {
		if a.Equal(other) {
			t.Errorf("%v equals %v", a, other)
		}
	}
	// "1" and 1 are different replies, as are "" and nil.
	if kv.StringValue("1").Equal(kv.IntValue(1)) || kv.StringValue("").Equal(kv.NilValue()) {
		t.Error("values of different types compare equal")
	}
	if got := a.String(); got != `["x" [(integer) 1 (nil)]]` {
		t.Errorf("String() = %s", got)
	}
}

func TestServerError(t *testing.T) {
	for msg, prefix := range map[string]string{
		"WRONGTYPE Operation against a key holding the wrong kind of value": "WRONGTYPE",
		"ERR value is not an integer or out of range":                       "ERR",
		"NOSCRIPT No matching script. Please use EVAL.":                     "NOSCRIPT",
		"EXECABORT": "EXECABORT",
	} {
		se := &kv.ServerError{Msg: msg}
		if se.Prefix() != prefix {
			t.Errorf("Prefix(%q) = %q, want %q", msg, se.Prefix(), prefix)
		}
		if se.Error() != "redis: "+msg {
			t.Errorf("Error() = %q", se.Error())
		}
	}
	wrapped := errors.Join(errors.New("context"), &kv.ServerError{Msg: "NOSCRIPT No matching script."})
	if !kv.IsServerError(wrapped) || !kv.IsNoScript(wrapped) {
		t.Error("IsServerError/IsNoScript do not see through wrapping")
	}
	if kv.IsNoScript(&kv.ServerError{Msg: "ERR NOSCRIPT"}) || kv.IsServerError(io.EOF) {
		t.Error("IsNoScript/IsServerError false positive")
	}
}

func TestErrorWrapping(t *testing.T) {
	cause := io.ErrUnexpectedEOF
	u := kv.Unavailable("kv.test", cause)
	if !errors.Is(u, kv.ErrUnavailable) || !errors.Is(u, cause) || errors.Is(u, kv.ErrUnauthorized) {
		t.Errorf("Unavailable(%v) does not match as documented", u)
	}
	if agentapi.KindOf(u) != agentapi.KindUnavailable {
		t.Errorf("KindOf(Unavailable) = %v", agentapi.KindOf(u))
	}
	if u.Error() != "kv.test: redis unavailable: unexpected EOF" {
		t.Errorf("Unavailable message %q", u.Error())
	}
	a := kv.Unauthorized("kv.test", errors.New("HTTP 401"))
	if !errors.Is(a, kv.ErrUnauthorized) || errors.Is(a, kv.ErrUnavailable) {
		t.Errorf("Unauthorized(%v) does not match as documented", a)
	}
	if s := kv.Unavailable("kv.test", nil).Error(); s != "kv.test: kv: redis unavailable" {
		t.Errorf("Unavailable without cause: %q", s)
	}
	if err := kv.Invalid("kv.test", errors.New("bad")); agentapi.KindOf(err) != agentapi.KindInvalid {
		t.Errorf("KindOf(Invalid) = %v", agentapi.KindOf(err))
	}
}

func TestScript(t *testing.T) {
	s := kv.NewScript("return 1")
	// sha1("return 1")
	if s.SHA1() != "e0e1f9fabfc9d4800c877a703b823ac0578ff8db" || s.Source() != "return 1" {
		t.Errorf("Script = %s %q", s.SHA1(), s.Source())
	}
}

// EvalWith sends EVALSHA and falls back to EVAL only on NOSCRIPT.
func TestEvalWith(t *testing.T) {
	s := kv.NewScript("return ARGV[1]")
	var calls [][]string
	known := false
	do := func(_ context.Context, args ...string) (kv.Value, error) {
		calls = append(calls, slices.Clone(args))
		switch args[0] {
		case "EVALSHA":
			if !known {
				return kv.Value{}, &kv.ServerError{Msg: "NOSCRIPT No matching script. Please use EVAL."}
			}
		case "EVAL":
			known = true
		}
		return kv.StringValue("ran"), nil
	}
	v, err := kv.EvalWith(context.Background(), do, s, []string{"k1", "k2"}, "a1")
	if err != nil || !v.Equal(kv.StringValue("ran")) {
		t.Fatalf("EvalWith = %v, %v", v, err)
	}
	want := [][]string{
		{"EVALSHA", s.SHA1(), "2", "k1", "k2", "a1"},
		{"EVAL", s.Source(), "2", "k1", "k2", "a1"},
	}
	if !slices.EqualFunc(calls, want, slices.Equal) {
		t.Errorf("calls = %q, want %q", calls, want)
	}

	calls = nil
	kv.EvalWith(context.Background(), do, s, nil)
	if len(calls) != 1 || strings.Join(calls[0], " ") != "EVALSHA "+s.SHA1()+" 0" {
		t.Errorf("known script: calls = %q, want one EVALSHA", calls)
	}

	// Other errors are returned as they are, without a second try.
	for _, failure := range []error{
		&kv.ServerError{Msg: "ERR boom"},
		kv.Unavailable("kv.test", io.EOF),
	} {
		calls = nil
		_, err := kv.EvalWith(context.Background(), func(context.Context, ...string) (kv.Value, error) {
			calls = append(calls, nil)
			return kv.Value{}, failure
		}, s, nil)
		if err != failure || len(calls) != 1 {
			t.Errorf("EvalWith with %v: err %v after %d calls", failure, err, len(calls))
		}
	}
}

// Without a caching client DoCached is a plain Do.
func TestDoCachedFallsBackToDo(t *testing.T) {
	c := &recorder{}
	v, err := kv.DoCached(context.Background(), c, 0, "GET", "k")
	if err != nil || !v.Equal(kv.StringValue("GET k")) {
		t.Errorf("DoCached = %v, %v", v, err)
	}
}

type recorder struct{ kv.Client }

func (recorder) Do(_ context.Context, args ...string) (kv.Value, error) {
	return kv.StringValue(strings.Join(args, " ")), nil
}

// TestReplyError: replies saying the server cannot serve now match
// ErrUnavailable and stay *ServerError; others are the ServerError itself.
func TestReplyError(t *testing.T) {
	for _, msg := range []string{"CLUSTERDOWN The cluster is down", "LOADING Redis is loading the dataset in memory", "MASTERDOWN Link with MASTER is down"} {
		err := kv.ReplyError("op", &kv.ServerError{Msg: msg})
		var se *kv.ServerError
		if !errors.Is(err, kv.ErrUnavailable) || !errors.As(err, &se) || se.Msg != msg {
			t.Errorf("%q: %v (unavailable %v)", msg, err, errors.Is(err, kv.ErrUnavailable))
		}
		if agentapi.KindOf(err) != agentapi.KindUnavailable {
			t.Errorf("%q: kind %v", msg, agentapi.KindOf(err))
		}
	}
	se := &kv.ServerError{Msg: "WRONGTYPE Operation against a key holding the wrong kind of value"}
	if err := kv.ReplyError("op", se); err != error(se) || errors.Is(err, kv.ErrUnavailable) {
		t.Errorf("WRONGTYPE: %v", err)
	}
}
