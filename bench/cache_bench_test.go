package bench

// Go benchmarks for response caching and tenant configuration (see
// README.md, "Caching and tenant configuration"):
//
//	go test -run '^$' -bench 'SessionListRead|TenantConfigLookup' ./bench
//
// BenchmarkSessionListRead/db=D/cache=C serves GET /v1/sessions' work -- a
// tenant's 50 session records read from the database and encoded as JSON
// -- through cache.Loader.Handler, as serve does: uncached (every request
// queries), or with the response cache in memory or in Redis (a hit is one
// script call). BenchmarkTenantConfigLookup is the per-request cost of
// reading a tenant's configuration from tenantcfg's local level.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/cache"
	"github.com/agentapi-mt/agentapi/kv/kvtest"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/pgtest"
	"github.com/agentapi-mt/agentapi/sql"
	"github.com/agentapi-mt/agentapi/tenantcfg"
)

func seededDB(b *testing.B, url string) *sql.DB {
	b.Helper()
	ctx := context.Background()
	db, err := sql.Open(ctx, url, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	now := time.Now().UTC()
	if err := db.CreateTenant(ctx, agentapi.Tenant{ID: "acme", Name: "Acme", CreatedAt: now, UpdatedAt: now}); err != nil {
		b.Fatal(err)
	}
	for i := range 50 {
		s := agentapi.AgentSession{ID: fmt.Sprintf("ses_%03d", i), TenantID: "acme", UserID: "usr_1", Name: fmt.Sprintf("work %d", i),
			AgentType: "claude", State: agentapi.SessionStopped, Instance: "api-1", CreatedAt: now, LastActivityAt: now, StoppedAt: &now}
		if err := db.CreateAgentSession(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
	return db
}

func BenchmarkSessionListRead(b *testing.B) {
	dbs := map[string]func(b *testing.B) *sql.DB{
		"sqlite":   func(b *testing.B) *sql.DB { return seededDB(b, "") },
		"postgres": func(b *testing.B) *sql.DB { return seededDB(b, pgtest.URL(b)) },
	}
	for _, dbName := range []string{"sqlite", "postgres"} {
		b.Run("db="+dbName, func(b *testing.B) {
			db := dbs[dbName](b)
			route := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ss, err := db.ListAgentSessions(r.Context(), "acme", "")
				if err != nil {
					http.Error(w, err.Error(), 500)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				json.NewEncoder(w).Encode(map[string]any{"sessions": ss})
			})
			key := func(r *http.Request) (string, string, string, bool) { return "acme", "sessions", "list|usr_1", true }
			backends := []struct {
				name string
				mk   func(b *testing.B) cache.Backend
			}{
				{"none", nil},
				{"memory", func(b *testing.B) cache.Backend { return cache.NewMemory(cache.MemoryOptions{}) }},
				{"redis", func(b *testing.B) cache.Backend {
					c := kvtest.Native(b, native.Options{URL: rlRedisURL(b)})
					return cache.NewRedis(c, cache.RedisOptions{Prefix: UniquePrefix()})
				}},
			}
			for _, be := range backends {
				b.Run("cache="+be.name, func(b *testing.B) {
					h := http.Handler(route)
					if be.mk != nil {
						l := cache.NewLoader("responses", be.mk(b), cache.LoaderOptions{})
						b.Cleanup(func() { l.Close() })
						h = l.Handler(key, time.Minute, route)
					}
					b.ReportAllocs()
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							rec := httptest.NewRecorder()
							h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/sessions", nil))
							if rec.Code != 200 {
								b.Fatalf("status %d", rec.Code)
							}
						}
					})
				})
			}
		})
	}
}

func BenchmarkTenantConfigLookup(b *testing.B) {
	db := seededDB(b, "")
	s := tenantcfg.New(tenantcfg.Options{Store: db})
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Put(ctx, "acme", agentapi.TenantConfig{MaxSessions: 5, MonthlyMessageQuota: 1000}, nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Config(ctx, "acme"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
