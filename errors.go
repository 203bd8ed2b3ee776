// Package agentapi holds the domain types of AgentAPI Multitenant and the small
// interfaces the rest of the module implements. It imports no driver: every
// backend lives in a package named for what it wraps, and cmd/agentapi wires
// them together by hand.
package agentapi

import (
	"errors"
	"fmt"
)

// Kind classifies an error so that every layer can react to it the same way
// and the HTTP layer can map it to one status code in one place.
type Kind uint8

// The kinds of error. Keep the list short: a new kind is only worth adding
// when some caller must behave differently for it.
const (
	KindOther           Kind = iota // unclassified; treated as internal
	KindInvalid                     // the caller's input is wrong; nothing changed
	KindNotFound                    // no such thing, or not visible to the caller
	KindConflict                    // the thing exists or changed underneath
	KindUnauthenticated             // no or bad credentials
	KindForbidden                   // credentials fine, action not allowed
	KindRateLimited                 // too many requests; retry later
	KindUnavailable                 // a dependency is down; retry later
	KindInternal                    // a bug or an impossible state
)

var kindNames = [...]string{
	KindOther:           "other",
	KindInvalid:         "invalid",
	KindNotFound:        "not found",
	KindConflict:        "conflict",
	KindUnauthenticated: "unauthenticated",
	KindForbidden:       "forbidden",
	KindRateLimited:     "rate limited",
	KindUnavailable:     "unavailable",
	KindInternal:        "internal",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Error is an error with the operation that failed and its kind. Wrap errors
// with E at the boundary where the operation is known; callers inspect them
// with KindOf and errors.Is/As.
type Error struct {
	Op   string // the operation, e.g. "kv.native.do" or "config.load"
	Kind Kind
	Err  error // the underlying error; may be nil
}

// E builds an *Error. When err is already an *Error with a kind and kind is
// KindOther, the inner kind is kept.
func E(op string, kind Kind, err error) error {
	return &Error{Op: op, Kind: kind, Err: err}
}

func (e *Error) Error() string {
	switch {
	case e.Op != "" && e.Err != nil:
		return e.Op + ": " + e.Err.Error()
	case e.Err != nil:
		return e.Err.Error()
	case e.Op != "":
		return e.Op + ": " + e.Kind.String()
	default:
		return e.Kind.String()
	}
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf reports the kind of err: the first kind other than KindOther found
// walking the wrap chain, or KindOther.
func KindOf(err error) Kind {
	for err != nil {
		var e *Error
		if !errors.As(err, &e) {
			return KindOther
		}
		if e.Kind != KindOther {
			return e.Kind
		}
		err = e.Err
	}
	return KindOther
}
