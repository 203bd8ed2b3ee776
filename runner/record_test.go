package runner

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/sql"
)

// flakyStore fails transcript writes while down is set, and hangs them
// while hang is set (a database that stops answering).
type flakyStore struct {
	*sql.DB
	down   atomic.Bool
	hang   atomic.Pointer[chan struct{}]
	writes atomic.Int64
}

func (f *flakyStore) PutMessage(ctx context.Context, tenantID, sessionID string, m agentapi.Message) error {
	if h := f.hang.Load(); h != nil {
		<-*h // ignores ctx, as a black-holed connection can
	}
	if f.down.Load() {
		return agentapi.E("test.PutMessage", agentapi.KindUnavailable, errors.New("database down"))
	}
	f.writes.Add(1)
	return f.DB.PutMessage(ctx, tenantID, sessionID, m)
}

func stableSession(t *testing.T, m *Manager, id string) *session {
	t.Helper()
	m.mu.Lock()
	s := m.running[id]
	m.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for s.agent.Status() != agentapi.StatusStable || len(s.agent.Messages()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the agent never became stable")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

func hasMessage(t *testing.T, db *sql.DB, tenant, id, role, content string) bool {
	t.Helper()
	msgs, err := db.Messages(context.Background(), tenant, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if string(m.Role) == role && m.Content == content {
			return true
		}
	}
	return false
}

// TestRecordStoresTheTranscriptOrSaysItCouldNot: Record returns once the
// transcript as it is now is stored, retrying through a database outage;
// when the outage outlasts its context it fails with KindUnavailable, and
// the sweep stores the transcript once the database is back. Unchanged
// messages are not written again.
func TestRecordStoresTheTranscriptOrSaysItCouldNot(t *testing.T) {
	db, err := sql.Open(context.Background(), "", filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	now := time.Now().UTC()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(db.CreateTenant(context.Background(), agentapi.Tenant{ID: "acme", Name: "Acme", CreatedAt: now, UpdatedAt: now}))
	store := &flakyStore{DB: db}
	m, _ := newManager(t, Options{})
	m.o.Store = store // newManager's own store, wrapped
	ctx := context.Background()
	rec, err := m.Start(ctx, "acme", "u1", StartRequest{Agent: "echo"})
	must(err)
	s := stableSession(t, m, rec.ID)

	if err := m.Record(ctx, "acme", "ses_unknown"); agentapi.KindOf(err) != agentapi.KindNotFound {
		t.Fatalf("Record of an unknown session: %v", err)
	}
	if err := m.Record(ctx, "globex", rec.ID); agentapi.KindOf(err) != agentapi.KindNotFound {
		t.Fatalf("Record of another tenant's session: %v", err)
	}

	// Down: the message reaches the agent, Record gives up with its context.
	store.down.Store(true)
	must(s.agent.Send(ctx, "first"))
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = m.Record(short, "acme", rec.ID)
	cancel()
	if agentapi.KindOf(err) != agentapi.KindUnavailable {
		t.Fatalf("Record with the database down: %v, want KindUnavailable", err)
	}
	if hasMessage(t, db, "acme", rec.ID, "user", "first") {
		t.Fatal("stored with the database down")
	}
	// Back: the sweep stores what the failed writes left.
	store.down.Store(false)
	m.sweep(ctx)
	if !hasMessage(t, db, "acme", rec.ID, "user", "first") {
		t.Fatal("the sweep did not store the message the outage held back")
	}

	// Down, then back while Record retries: it returns once stored.
	s = stableSession(t, m, rec.ID)
	store.down.Store(true)
	must(s.agent.Send(ctx, "second"))
	go func() {
		time.Sleep(300 * time.Millisecond)
		store.down.Store(false)
	}()
	if err := m.Record(ctx, "acme", rec.ID); err != nil {
		t.Fatal(err)
	}
	if !hasMessage(t, db, "acme", rec.ID, "user", "second") {
		t.Fatal("Record returned before the message was stored")
	}
	// Nothing changed since: Record writes nothing.
	s = stableSession(t, m, rec.ID)
	must(m.Record(ctx, "acme", rec.ID))
	before := store.writes.Load()
	must(m.Record(ctx, "acme", rec.ID))
	if n := store.writes.Load() - before; n != 0 {
		t.Fatalf("Record of an unchanged transcript wrote %d messages", n)
	}
}

// TestRecordGivesUpOnAHungDatabase: while another write of the session's
// transcript hangs, Record returns when its context ends instead of
// waiting for its turn.
func TestRecordGivesUpOnAHungDatabase(t *testing.T) {
	m, db := newManager(t, Options{})
	store := &flakyStore{DB: db}
	m.o.Store = store
	ctx := context.Background()
	rec, err := m.Start(ctx, "acme", "u1", StartRequest{Agent: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	s := stableSession(t, m, rec.ID)
	release := make(chan struct{})
	store.hang.Store(&release)
	if err := s.agent.Send(ctx, "stuck"); err != nil {
		t.Fatal(err)
	}
	held := make(chan error, 1)
	go func() { held <- m.store(context.Background(), s) }() // takes the turn, then hangs
	for len(s.recording) == 0 {
		time.Sleep(time.Millisecond)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	start := time.Now()
	err = m.Record(short, "acme", rec.ID)
	cancel()
	if agentapi.KindOf(err) != agentapi.KindUnavailable || time.Since(start) > 2*time.Second {
		t.Fatalf("Record behind a hung write: %v after %v, want KindUnavailable at its deadline", err, time.Since(start))
	}
	store.hang.Store(nil)
	close(release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
}
