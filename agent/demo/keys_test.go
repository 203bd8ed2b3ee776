package demo

import (
	"reflect"
	"testing"
)

func decodeAll(p *keyParser, chunks ...string) []key {
	var keys []key
	for _, c := range chunks {
		keys = append(keys, p.feed([]byte(c))...)
	}
	return keys
}

func TestKeyParser(t *testing.T) {
	r := func(c rune) key { return key{kind: keyRune, r: c} }
	tests := []struct {
		name  string
		input string
		want  []key
	}{
		{"text", "hé世\r", []key{r('h'), r('é'), r('世'), {kind: keyEnter}}},
		{"controls", "\x7f\x08\x03\x04\n\x01\t", []key{{kind: keyBackspace}, {kind: keyBackspace}, {kind: keyCtrlC}, {kind: keyCtrlD}, {kind: keyEnter}, r('\t')}},
		{"arrows", "\x1b[A\x1b[B\x1bOA\x1bOB\x1b[1;2A\x1b[C\x1b[D", []key{{kind: keyUp}, {kind: keyDown}, {kind: keyUp}, {kind: keyDown}, {kind: keyUp}}},
		{"paste", "\x1b[200~a\r\nb\rc\x03\x1b[A\x1b[201~x", []key{{kind: keyPaste, text: "a\nb\nc\x03\x1b[A"}, r('x')}},
		{"stray paste end and function keys", "\x1b[201~\x1b[15~\x1b[?1;2cz", []key{r('z')}},
		{"esc then text", "\x1bq", []key{{kind: keyEsc}, r('q')}},
		{"double esc", "\x1b\x1b[A", []key{{kind: keyEsc}, {kind: keyUp}}},
		{"invalid utf8 and C1", "\xff\xc2\x9bok", []key{r('o'), r('k')}},
		{"malformed csi", "\x1b[12\x01k", []key{r('k')}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Whole, then one byte per read: the same events either way.
			var p keyParser
			if got := decodeAll(&p, tc.input); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("whole: got %+v, want %+v", got, tc.want)
			}
			var q keyParser
			var chunks []string
			for i := 0; i < len(tc.input); i++ {
				chunks = append(chunks, tc.input[i:i+1])
			}
			if got := decodeAll(&q, chunks...); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("bytewise: got %+v, want %+v", got, tc.want)
			}
			if p.waiting() || q.waiting() || p.inPaste || q.inPaste {
				t.Errorf("parser left holding bytes")
			}
		})
	}
}

func TestKeyParserEscTimeout(t *testing.T) {
	var p keyParser
	if got := p.feed([]byte("\x1b")); len(got) != 0 || !p.waiting() {
		t.Fatalf("lone ESC decoded before the timeout: %+v", got)
	}
	if got := p.flush(); !reflect.DeepEqual(got, []key{{kind: keyEsc}}) {
		t.Fatalf("flush = %+v, want Esc", got)
	}
	// An unfinished sequence at the timeout is the Esc key; its rest is dropped.
	p.feed([]byte("\x1b[1"))
	if got := p.flush(); !reflect.DeepEqual(got, []key{{kind: keyEsc}}) {
		t.Fatalf("flush = %+v, want Esc", got)
	}
	if got := p.feed([]byte("a")); !reflect.DeepEqual(got, []key{{kind: keyRune, r: 'a'}}) {
		t.Fatalf("after flush got %+v", got)
	}
	// Inside a paste nothing is flushed: the end marker may still come.
	p.feed([]byte("\x1b[200~abc\x1b[20"))
	if p.waiting() || p.flush() != nil {
		t.Fatal("paste flushed before its end marker")
	}
	if got := p.feed([]byte("1~")); !reflect.DeepEqual(got, []key{{kind: keyPaste, text: "abc"}}) {
		t.Fatalf("paste = %+v", got)
	}
	// A partial rune is held, then dropped by the timeout.
	p.feed([]byte("\xe4\xb8"))
	if !p.waiting() || p.flush() != nil || p.waiting() {
		t.Fatal("partial rune not held and dropped")
	}
}
