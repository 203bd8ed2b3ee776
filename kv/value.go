package kv

import (
	"fmt"
	"strconv"
)

// Type is the type of a reply Value. Transports normalise what their
// protocol returns to these: RESP3 maps become flat key/value arrays,
// booleans become integers 1 and 0, doubles and big numbers become strings,
// simple and bulk strings are both String, and an error reply nested inside
// an array (as a script returning redis.pcall's result produces) is a String
// holding the error's text.
type Type uint8

// Reply types.
const (
	Nil Type = iota
	String
	Int
	Array
)

func (t Type) String() string {
	switch t {
	case Nil:
		return "nil"
	case String:
		return "string"
	case Int:
		return "int"
	case Array:
		return "array"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Value is one Redis reply. The zero Value is a nil reply.
type Value struct {
	typ Type
	str string
	num int64
	arr []Value
}

// NilValue, StringValue, IntValue and ArrayValue build replies; transports
// and tests use them.
func NilValue() Value              { return Value{} }
func StringValue(s string) Value   { return Value{typ: String, str: s} }
func IntValue(n int64) Value       { return Value{typ: Int, num: n} }
func ArrayValue(vs ...Value) Value { return Value{typ: Array, arr: vs} }

// Type reports the reply's type.
func (v Value) Type() Type { return v.typ }

// IsNil reports whether the reply is nil (a missing key, an empty slot).
func (v Value) IsNil() bool { return v.typ == Nil }

// Text returns a string reply, or an integer reply in decimal. A nil reply
// returns ErrNil; an array is an error.
func (v Value) Text() (string, error) {
	switch v.typ {
	case String:
		return v.str, nil
	case Int:
		return strconv.FormatInt(v.num, 10), nil
	case Nil:
		return "", ErrNil
	}
	return "", fmt.Errorf("kv: %s reply is not text", v.typ)
}

// Int returns an integer reply, or a string reply that parses as one. A nil
// reply returns ErrNil.
func (v Value) Int() (int64, error) {
	switch v.typ {
	case Int:
		return v.num, nil
	case String:
		n, err := strconv.ParseInt(v.str, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("kv: reply %q is not an integer", v.str)
		}
		return n, nil
	case Nil:
		return 0, ErrNil
	}
	return 0, fmt.Errorf("kv: %s reply is not an integer", v.typ)
}

// Array returns the elements of an array reply. A nil reply returns ErrNil.
func (v Value) Array() ([]Value, error) {
	switch v.typ {
	case Array:
		return v.arr, nil
	case Nil:
		return nil, ErrNil
	}
	return nil, fmt.Errorf("kv: %s reply is not an array", v.typ)
}

// Strings returns an array reply's elements as text; nil elements become "".
func (v Value) Strings() ([]string, error) {
	arr, err := v.Array()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(arr))
	for i, e := range arr {
		if e.IsNil() {
			continue
		}
		s, err := e.Text()
		if err != nil {
			return nil, fmt.Errorf("kv: element %d: %w", i, err)
		}
		out[i] = s
	}
	return out, nil
}

// String renders the reply for logs and test failures.
func (v Value) String() string {
	switch v.typ {
	case Nil:
		return "(nil)"
	case String:
		return strconv.Quote(v.str)
	case Int:
		return "(integer) " + strconv.FormatInt(v.num, 10)
	}
	s := "["
	for i, e := range v.arr {
		if i > 0 {
			s += " "
		}
		s += e.String()
	}
	return s + "]"
}

// Equal reports whether two replies are the same type and content.
func (v Value) Equal(w Value) bool {
	if v.typ != w.typ || v.str != w.str || v.num != w.num || len(v.arr) != len(w.arr) {
		return false
	}
	for i := range v.arr {
		if !v.arr[i].Equal(w.arr[i]) {
			return false
		}
	}
	return true
}
