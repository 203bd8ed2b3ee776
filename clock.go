package agentapi

import "time"

// Clock tells the time. Everything that decides by time takes a Clock so that
// tests drive time instead of sleeping.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }
