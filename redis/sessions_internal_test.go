package redis

import (
	"strconv"
	"testing"
	"time"
)

func TestStampsBounded(t *testing.T) {
	l := newStamps(100)
	now := time.Now()
	for i := range 10_000 {
		l.claim(strconv.Itoa(i), now, time.Hour, time.Minute)
		if n := l.Len(); n > 100 {
			t.Fatalf("touch log holds %d ids, bound 100", n)
		}
	}
	// The most recent ids are still remembered: no refresh due.
	if l.claim("9999", now.Add(time.Second), time.Hour, time.Minute) {
		t.Error("recently refreshed id claimed again")
	}
	// A refresh is due once it would extend the expiry by every.
	if !l.claim("9999", now.Add(time.Minute), time.Hour, time.Minute) {
		t.Error("id not due a minute later")
	}
	// A longer ttl makes a refresh due at once.
	if !l.claim("9998", now.Add(time.Second), 2*time.Hour, time.Minute) {
		t.Error("longer ttl did not make a refresh due")
	}
	l.forget("9999")
	if !l.claim("9999", now.Add(time.Minute+time.Second), time.Hour, time.Minute) {
		t.Error("forgotten id not due")
	}
}

func TestStampsBefore(t *testing.T) {
	s := newStamps(10)
	now := time.Now()
	s.record("a", now.Add(time.Second))
	if !s.before("a", now) || s.before("a", now.Add(time.Second)) || s.before("b", now) {
		t.Error("before does not follow the recorded deadline")
	}
}
