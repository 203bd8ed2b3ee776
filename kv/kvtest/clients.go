package kvtest

import (
	"context"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/kv/rest"
)

// Native dials a native client with o (a 5s connect timeout unless set)
// and closes it when t ends. Each call makes its own connections and its
// own client-side cache: two calls are two "instances".
func Native(t testing.TB, o native.Options) *native.Client {
	t.Helper()
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := native.Dial(ctx, o)
	if err != nil {
		t.Fatalf("native.Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// REST returns a REST client for base with token, retrying quickly (tests
// inject failures), closed when t ends.
func REST(t testing.TB, base, token string) *rest.Client {
	t.Helper()
	c, err := rest.New(rest.Options{URL: base, Token: token, Backoff: time.Millisecond})
	if err != nil {
		t.Fatalf("rest.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
