package cache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/cache"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/redistest"
)

// benchBackends are the backends the benchmarks compare. The Redis ones
// share one private server, started on first use.
func benchBackends(b *testing.B) []struct {
	name string
	new  func(b *testing.B) (reader, writer cache.Backend)
} {
	var (
		once    sync.Once
		url     string
		restFor func(testing.TB) kv.Client
	)
	server := func() string {
		once.Do(func() {
			url = redistest.Start(b, redistest.Options{}).URL()
			restFor = startREST(b, url)
		})
		return url
	}
	return []struct {
		name string
		new  func(b *testing.B) (reader, writer cache.Backend)
	}{
		{"memory", func(b *testing.B) (cache.Backend, cache.Backend) {
			m := cache.NewMemory(cache.MemoryOptions{})
			return m, m
		}},
		{"native", func(b *testing.B) (cache.Backend, cache.Backend) {
			o := cache.RedisOptions{Prefix: randomPrefix()}
			return cache.NewRedis(dialNative(b, server()), o), cache.NewRedis(dialNative(b, server()), o)
		}},
		{"native-localcache", func(b *testing.B) (cache.Backend, cache.Backend) {
			o := cache.RedisOptions{Prefix: randomPrefix(), LocalTTL: time.Minute}
			return cache.NewRedis(dialNative(b, server()), o), cache.NewRedis(dialNative(b, server()), o)
		}},
		{"rest", func(b *testing.B) (cache.Backend, cache.Backend) {
			server()
			o := cache.RedisOptions{Prefix: randomPrefix()}
			return cache.NewRedis(restFor(b), o), cache.NewRedis(restFor(b), o)
		}},
	}
}

// BenchmarkLoaderHit measures GetOrLoad on a hot entry of 4 KiB, from
// parallel goroutines.
func BenchmarkLoaderHit(b *testing.B) {
	value := make([]byte, 4<<10)
	for _, bb := range benchBackends(b) {
		b.Run(bb.name, func(b *testing.B) {
			// Another instance stores the entry, so that the reader is in
			// the steady state of a hot key (no own-write window).
			reader, writer := bb.new(b)
			l := newLoader(b, "bench", reader, cache.LoaderOptions{})
			ctx := testCtx(b)
			load := func(context.Context) (cache.Entry, error) { return cache.Entry{Value: value}, nil }
			if _, _, err := newLoader(b, "bench", writer, cache.LoaderOptions{}).GetOrLoad(ctx, "t", "s", "k", time.Hour, load); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(value)))
			b.SetParallelism(8) // 8 goroutines per CPU, as a busy server has
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, hit, err := l.GetOrLoad(ctx, "t", "s", "k", time.Hour, load); err != nil || !hit {
						b.Fatalf("hit %v, %v", hit, err)
					}
				}
			})
			b.StopTimer()
			if s := l.Stats(); s.Errors != 0 {
				b.Fatalf("backend errors: %+v", s)
			}
		})
	}
}

// benchPage is the work a cacheable endpoint does per request in
// BenchmarkHandler: encode a listing of 200 records as JSON.
func benchPage() http.Handler {
	type record struct {
		ID      string    `json:"id"`
		Name    string    `json:"name"`
		State   string    `json:"state"`
		Created time.Time `json:"created"`
		Tags    []string  `json:"tags"`
	}
	recs := make([]record, 200)
	for i := range recs {
		recs[i] = record{fmt.Sprintf("sess-%06d", i), fmt.Sprintf("session %d", i), "running", time.Unix(int64(i), 0).UTC(), []string{"a", "b"}}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(recs)
	})
}

// BenchmarkHandler compares a JSON listing served by its handler
// ("uncached") with the same listing through Loader.Handler, hot, per
// backend. The body is about 20 KiB.
func BenchmarkHandler(b *testing.B) {
	page := benchPage()
	keyOf := func(r *http.Request) (string, string, string, bool) { return "t", "pages", r.URL.Path, true }
	run := func(b *testing.B, h http.Handler) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest("GET", "/sessions", nil))
				if w.Code != 200 {
					b.Fatalf("status %d", w.Code)
				}
			}
		})
	}
	b.Run("uncached", func(b *testing.B) { run(b, page) })
	for _, bb := range benchBackends(b) {
		b.Run(bb.name, func(b *testing.B) {
			reader, writer := bb.new(b)
			l := newLoader(b, "bench", reader, cache.LoaderOptions{})
			h := l.Handler(keyOf, time.Hour, page)
			newLoader(b, "bench", writer, cache.LoaderOptions{}).Handler(keyOf, time.Hour, page).
				ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/sessions", nil))
			b.ResetTimer()
			run(b, h)
			b.StopTimer()
			if s := l.Stats(); s.Errors != 0 || s.Misses != 0 {
				b.Fatalf("stats %+v, want hits only", s)
			}
		})
	}
}
