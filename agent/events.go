package agent

import (
	"sync"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// Event types, as upstream AgentAPI names them, plus agent_error.
const (
	EventMessageUpdate = "message_update"
	EventStatusChange  = "status_change"
	EventAgentError    = "agent_error"
)

// MessageUpdate is the payload of a message_update event. Upstream names
// the content "message" here (and "content" in GET /messages).
type MessageUpdate struct {
	ID      int           `json:"id"`
	Role    agentapi.Role `json:"role"`
	Message string        `json:"message"`
	Time    time.Time     `json:"time"`
}

// StatusChange is the payload of a status_change event.
type StatusChange struct {
	Status    agentapi.AgentStatus `json:"status"`
	AgentType string               `json:"agent_type"`
}

// AgentError is the payload of an agent_error event: something is wrong
// with the agent itself (it exited, it never showed a prompt, it ignored a
// message), as opposed to an error answering one request.
type AgentError struct {
	Message string    `json:"message"`
	Time    time.Time `json:"time"`
}

// Event is one server-sent event. ID is 0 for the events that describe the
// current state on connect (only the last of those carries the log's head
// ID, so a client that disconnects half way through gets the state again).
type Event struct {
	ID   int64
	Type string
	Data any
}

// eventLog numbers events and keeps the most recent ones so that a client
// that reconnects with Last-Event-ID receives exactly what it missed.
type eventLog struct {
	mu     sync.Mutex
	ring   []Event // the last len(ring) events, oldest first
	max    int
	head   int64 // ID of the newest event; 0 when none yet
	subs   map[*subscriber]struct{}
	closed bool
}

type subscriber struct {
	ch chan Event
}

const subscriberBuffer = 256

func newEventLog(max int) *eventLog {
	return &eventLog{max: max, subs: map[*subscriber]struct{}{}}
}

// publish appends an event and hands it to every subscriber. A subscriber
// whose buffer is full is dropped (its channel closed): it reconnects with
// its last ID and resumes from the log, so nothing is lost.
func (l *eventLog) publish(typ string, data any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.head++
	ev := Event{ID: l.head, Type: typ, Data: data}
	l.ring = append(l.ring, ev)
	if len(l.ring) > l.max {
		l.ring = l.ring[len(l.ring)-l.max:]
	}
	for s := range l.subs {
		select {
		case s.ch <- ev:
		default:
			close(s.ch)
			delete(l.subs, s)
		}
	}
}

// subscribe returns the events a client must see first and a channel of
// later ones. With lastID inside the kept range it replays what came after
// lastID; otherwise (0, too old, or from another run) it returns state(),
// the events that rebuild the current state. cancel must be called.
func (l *eventLog) subscribe(lastID int64, state func(head int64) []Event) (first []Event, ch <-chan Event, cancel func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := &subscriber{ch: make(chan Event, subscriberBuffer)}
	oldest := l.head - int64(len(l.ring)) // IDs after this one are kept
	switch {
	case lastID > 0 && lastID >= oldest && lastID <= l.head:
		for _, ev := range l.ring {
			if ev.ID > lastID {
				first = append(first, ev)
			}
		}
	default:
		first = state(l.head)
	}
	if l.closed {
		close(s.ch)
	} else {
		l.subs[s] = struct{}{}
	}
	return first, s.ch, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if _, ok := l.subs[s]; ok {
			delete(l.subs, s)
			close(s.ch)
		}
	}
}

// close ends every subscription.
func (l *eventLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for s := range l.subs {
		close(s.ch)
		delete(l.subs, s)
	}
}
