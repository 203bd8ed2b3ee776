package runner

import (
	"context"
	"errors"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// transcriptLog remembers, per message id, the content last stored, so
// that storing a session's transcript writes only what changed.
type transcriptLog struct {
	stored map[int]string
}

// store writes every message of s's transcript that differs from what was
// last stored. Writers of one session take turns (s.recording); one that
// waits for its turn gives up when ctx ends.
func (m *Manager) store(ctx context.Context, s *session) error {
	select {
	case s.recording <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.recording }()
	if s.log.stored == nil {
		s.log.stored = map[int]string{}
	}
	for _, msg := range s.agent.Messages() {
		if c, ok := s.log.stored[msg.ID]; ok && c == msg.Content {
			continue
		}
		if err := m.o.Store.PutMessage(ctx, s.rec.TenantID, s.rec.ID, msg); err != nil {
			return err
		}
		s.log.stored[msg.ID] = msg.Content
	}
	return nil
}

// Record stores the transcript of a session running here as it is now,
// retrying until the store takes it or ctx ends. The HTTP layer calls it
// before acknowledging a message (so that an acknowledged message is in
// the records even if this instance dies the next moment) and before
// showing a transcript (so that what a client read is never lost).
// Unknown or ended sessions are KindNotFound: their transcript is stored
// already.
func (m *Manager) Record(ctx context.Context, tenantID, id string) error {
	m.mu.Lock()
	s, ok := m.running[id]
	ok = ok && s.ready && s.rec.TenantID == tenantID
	m.mu.Unlock()
	if !ok {
		return agentapi.E("runner.record", agentapi.KindNotFound, errors.New("the session is not running here"))
	}
	wait := 50 * time.Millisecond
	for {
		err := m.store(ctx, s)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return agentapi.E("runner.record", agentapi.KindUnavailable, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}
