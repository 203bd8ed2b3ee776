package storetest

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	agentapi "github.com/agentapi-mt/agentapi"
)

// must fails the test at once when err is not nil.
func must(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: unexpected error: %v", what, err)
	}
}

// wantKind checks that err is an *agentapi.Error of the given kind.
func wantKind(t *testing.T, err error, kind agentapi.Kind, what string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: got no error, want kind %q", what, kind)
		return
	}
	if got := agentapi.KindOf(err); got != kind {
		t.Errorf("%s: got error %v of kind %q, want kind %q", what, err, got, kind)
	}
}

// wantEqual reports the differences between got and want, records or
// slices of records; see diff.
func wantEqual(t *testing.T, got, want any, what string) {
	t.Helper()
	if d := diff(got, want); d != "" {
		t.Errorf("%s: %s", what, d)
	}
}

var timeType = reflect.TypeFor[time.Time]()

// diff describes how got differs from want, or returns "". Times are
// compared as instants and must be in UTC in got; everything else must be
// deeply equal.
func diff(got, want any) string {
	var out []string
	diffValue(reflect.ValueOf(got), reflect.ValueOf(want), "", &out)
	return strings.Join(out, "; ")
}

func diffValue(g, w reflect.Value, path string, out *[]string) {
	if !g.IsValid() || !w.IsValid() {
		if g.IsValid() != w.IsValid() {
			*out = append(*out, fmt.Sprintf("%s: got %v, want %v", name(path), g, w))
		}
		return
	}
	if g.Type() != w.Type() {
		*out = append(*out, fmt.Sprintf("%s: got type %s, want %s", name(path), g.Type(), w.Type()))
		return
	}
	switch {
	case g.Type() == timeType:
		gt, wt := g.Interface().(time.Time), w.Interface().(time.Time)
		switch {
		case !gt.Equal(wt):
			*out = append(*out, fmt.Sprintf("%s: got %s, want %s", name(path), gt.Format(time.RFC3339Nano), wt.Format(time.RFC3339Nano)))
		case gt.Location() != time.UTC:
			*out = append(*out, fmt.Sprintf("%s: got %s, want it in UTC", name(path), gt))
		}
	case g.Kind() == reflect.Pointer:
		switch {
		case g.IsNil() && w.IsNil():
		case g.IsNil() || w.IsNil():
			*out = append(*out, fmt.Sprintf("%s: got %s, want %s", name(path), describe(g), describe(w)))
		default:
			diffValue(g.Elem(), w.Elem(), path, out)
		}
	case g.Kind() == reflect.Struct:
		for i := range g.NumField() {
			f := g.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			diffValue(g.Field(i), w.Field(i), join(path, f.Name), out)
		}
	case g.Kind() == reflect.Slice && g.Type().Elem().Kind() != reflect.Uint8:
		if g.Len() != w.Len() {
			*out = append(*out, fmt.Sprintf("%s: got %d elements %s, want %d %s", name(path), g.Len(), ids(g), w.Len(), ids(w)))
			return
		}
		for i := range g.Len() {
			diffValue(g.Index(i), w.Index(i), fmt.Sprintf("%s[%d]", path, i), out)
		}
	default:
		if !reflect.DeepEqual(g.Interface(), w.Interface()) {
			*out = append(*out, fmt.Sprintf("%s: got %#v, want %#v", name(path), g.Interface(), w.Interface()))
		}
	}
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func name(path string) string {
	if path == "" {
		return "value"
	}
	return path
}

func describe(v reflect.Value) string {
	if v.IsNil() {
		return "nil"
	}
	if t, ok := v.Elem().Interface().(time.Time); ok {
		return t.Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("%v", v.Elem().Interface())
}

// ids lists the ID fields of a slice of records, for short messages.
func ids(v reflect.Value) string {
	var s []string
	for i := range v.Len() {
		e := v.Index(i)
		if e.Kind() == reflect.Struct {
			if f := e.FieldByName("ID"); f.IsValid() {
				s = append(s, fmt.Sprint(f.Interface()))
				continue
			}
		}
		s = append(s, fmt.Sprint(e.Interface()))
	}
	return "[" + strings.Join(s, " ") + "]"
}
