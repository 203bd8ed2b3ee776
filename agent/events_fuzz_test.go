package agent

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzEventLogSubscribe resumes a stream from an arbitrary Last-Event-ID
// header, parsed the way agenthttp parses it, against event logs of
// various sizes and lengths. It must never panic; an id inside the kept
// range replays exactly the events after it (ids id+1..head, in order);
// any other value (garbage, 0, negative, too old, from the future) starts
// from the current state instead; and the subscription then receives the
// next event.
func FuzzEventLogSubscribe(f *testing.F) {
	for _, s := range []string{
		"", "0", "1", "5", "6", "7", "10", "11", "-1", " 8 ", "+8", "08", "8\n", "0x8", "8.0", "1e1",
		"9223372036854775807", "9223372036854775808", "-9223372036854775808", "٨", "\x00",
	} {
		f.Add(s, uint16(4), uint16(10))
	}
	f.Add("3", uint16(1024), uint16(3))
	f.Add("1", uint16(1), uint16(1))
	f.Add("1", uint16(1), uint16(0))
	f.Add("1024", uint16(1024), uint16(2047))
	f.Fuzz(func(t *testing.T, header string, max, n uint16) {
		max = 1 + max%1024
		n %= 2048
		l := newEventLog(int(max))
		for i := range n {
			l.publish(EventStatusChange, int(i))
		}
		head := int64(n)
		kept := int64(min(n, max))

		last, _ := strconv.ParseInt(strings.TrimSpace(header), 10, 64) // as agenthttp does
		var stateHead int64 = -1
		first, ch, cancel := l.subscribe(last, func(h int64) []Event {
			stateHead = h
			return []Event{{ID: h, Type: "state"}}
		})
		defer cancel()

		if last > 0 && last >= head-kept && last <= head {
			if stateHead >= 0 {
				t.Fatalf("Last-Event-ID %q (%d) is in the kept range %d..%d, but the state was sent", header, last, head-kept, head)
			}
			if int64(len(first)) != head-last {
				t.Fatalf("Last-Event-ID %d with head %d: replayed %d events", last, head, len(first))
			}
			for i, ev := range first {
				if ev.ID != last+1+int64(i) || ev.Data != int(ev.ID-1) {
					t.Fatalf("replayed event %d is %+v, want id %d", i, ev, last+1+int64(i))
				}
			}
		} else {
			if stateHead != head || len(first) != 1 || first[0].Type != "state" {
				t.Fatalf("Last-Event-ID %q (%d) outside %d..%d: got %+v (state head %d), want the state at head %d", header, last, head-kept, head, first, stateHead, head)
			}
		}

		l.publish(EventAgentError, "next")
		select {
		case ev := <-ch:
			if ev.ID != head+1 {
				t.Fatalf("the event after subscribing has id %d, want %d", ev.ID, head+1)
			}
		default:
			t.Fatal("the event after subscribing was not delivered")
		}
	})
}
