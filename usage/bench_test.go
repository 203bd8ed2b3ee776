package usage_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/agentapi-mt/agentapi/usage"
)

// BenchmarkRecorderAdd measures Add, the request-path call, from parallel
// goroutines, with the push loop running (every second, to a Memory
// store): on one hot counter, and spread over 1000 tenants × 10 users.
func BenchmarkRecorderAdd(b *testing.B) {
	for _, c := range []struct {
		name           string
		tenants, users int
		journal        bool
	}{
		{"hot", 1, 1, false},
		{"spread", 1000, 10, false},
		{"hot/journal", 1, 1, true},
		{"spread/journal", 1000, 10, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			o := usage.Options{Store: usage.NewMemory(usage.MemoryOptions{}), DB: nopDB{}, FlushInterval: -1}
			if c.journal {
				o.Journal = filepath.Join(b.TempDir(), "usage.journal")
			}
			r, err := usage.New(o)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close(context.Background())
			tenants := make([]string, c.tenants)
			for i := range tenants {
				tenants[i] = fmt.Sprint("tenant-", i)
			}
			users := make([]string, c.users)
			for i := range users {
				users[i] = fmt.Sprint("user-", i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					r.Add(tenants[i%len(tenants)], users[i%len(users)], usage.Requests, 1)
					i++
				}
			})
			b.StopTimer()
			if st := r.Stats(); st.Dropped != 0 {
				b.Errorf("dropped %d", st.Dropped)
			}
		})
	}
}
