package demo

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// keyKind is the kind of a decoded keyboard event.
type keyKind int

const (
	keyRune      keyKind = iota // a printable rune (or a tab)
	keyEnter                    // \r (or \n)
	keyBackspace                // 0x7f or 0x08
	keyCtrlC                    // 0x03
	keyCtrlD                    // 0x04
	keyEsc                      // a lone ESC
	keyUp                       // ESC[A or ESC O A
	keyDown                     // ESC[B or ESC O B
	keyPaste                    // a complete bracketed paste
)

// key is one decoded keyboard event.
type key struct {
	kind keyKind
	r    rune   // for keyRune
	text string // for keyPaste, with line endings normalised to \n
}

var (
	pasteStart = []byte("\x1b[200~")
	pasteEnd   = []byte("\x1b[201~")
)

// maxCSI bounds the parameter and intermediate bytes of a control sequence we
// are willing to wait for; anything longer is malformed and dropped.
const maxCSI = 32

// keyParser turns the raw byte stream read from the terminal into key events.
// It keeps incomplete escape sequences, UTF-8 runes and paste end markers
// across calls, so input split at any byte boundary decodes the same.
type keyParser struct {
	buf     []byte // undecoded bytes
	inPaste bool   // between ESC[200~ and ESC[201~
	paste   []byte // text pasted so far
}

// feed decodes data (appended to any held bytes) into events.
func (p *keyParser) feed(data []byte) []key {
	p.buf = append(p.buf, data...)
	var keys []key
	for len(p.buf) > 0 {
		if p.inPaste {
			if i := bytes.Index(p.buf, pasteEnd); i >= 0 {
				p.paste = append(p.paste, p.buf[:i]...)
				p.buf = p.buf[i+len(pasteEnd):]
				p.inPaste = false
				keys = append(keys, key{kind: keyPaste, text: normalizeNewlines(string(p.paste))})
				p.paste = nil
				continue
			}
			// Keep a possible beginning of the end marker for the next read.
			keep := partialSuffix(p.buf, pasteEnd)
			p.paste = append(p.paste, p.buf[:len(p.buf)-keep]...)
			p.buf = append(p.buf[:0], p.buf[len(p.buf)-keep:]...)
			break
		}
		n, k, ok := decodeOne(p.buf)
		if n == 0 {
			break // incomplete: wait for more bytes (or the escape timeout)
		}
		isPasteStart := bytes.HasPrefix(p.buf, pasteStart) && n == len(pasteStart)
		p.buf = p.buf[n:]
		switch {
		case isPasteStart:
			p.inPaste = true
			p.paste = p.paste[:0]
		case ok:
			keys = append(keys, k)
		}
	}
	if len(p.buf) == 0 {
		p.buf = nil
	}
	return keys
}

// waiting reports whether bytes outside a paste are held because they could
// be the start of an escape sequence or rune; the caller then arms a timer and
// calls flush if nothing completes them.
func (p *keyParser) waiting() bool {
	return !p.inPaste && len(p.buf) > 0
}

// flush resolves held bytes after the escape timeout: a held ESC (alone or
// starting an unfinished sequence) is the Esc key; anything else is dropped.
func (p *keyParser) flush() []key {
	if p.inPaste || len(p.buf) == 0 {
		return nil
	}
	esc := p.buf[0] == 0x1b
	p.buf = nil
	if esc {
		return []key{{kind: keyEsc}}
	}
	return nil
}

// decodeOne decodes the event at the start of b. It returns the number of
// bytes consumed (0 when b holds only the beginning of an event) and, when ok,
// the event; consumed bytes with !ok are ignored input.
func decodeOne(b []byte) (n int, k key, ok bool) {
	c := b[0]
	switch {
	case c == 0x1b:
		return decodeEscape(b)
	case c == '\r' || c == '\n':
		return 1, key{kind: keyEnter}, true
	case c == 0x7f || c == 0x08:
		return 1, key{kind: keyBackspace}, true
	case c == 0x03:
		return 1, key{kind: keyCtrlC}, true
	case c == 0x04:
		return 1, key{kind: keyCtrlD}, true
	case c == '\t':
		return 1, key{kind: keyRune, r: '\t'}, true
	case c < 0x20:
		return 1, key{}, false
	case c < utf8.RuneSelf:
		return 1, key{kind: keyRune, r: rune(c)}, true
	}
	if !utf8.FullRune(b) {
		return 0, key{}, false
	}
	r, size := utf8.DecodeRune(b)
	if r == utf8.RuneError && size == 1 {
		return 1, key{}, false // invalid byte
	}
	if r >= 0x80 && r <= 0x9f {
		return size, key{}, false // C1 control
	}
	return size, key{kind: keyRune, r: r}, true
}

// decodeEscape decodes an ESC-introduced event at the start of b.
func decodeEscape(b []byte) (int, key, bool) {
	if len(b) < 2 {
		return 0, key{}, false
	}
	switch b[1] {
	case '[':
		i := 2
		for i < len(b) && b[i] >= 0x30 && b[i] <= 0x3f {
			i++
		}
		for i < len(b) && b[i] >= 0x20 && b[i] <= 0x2f {
			i++
		}
		if i-2 > maxCSI {
			return i, key{}, false // absurdly long: drop it
		}
		if i == len(b) {
			return 0, key{}, false
		}
		final := b[i]
		if final < 0x40 || final > 0x7e {
			return i, key{}, false // malformed: drop what we saw
		}
		params := string(b[2:i])
		switch {
		case final == 'A' && isArrowParams(params):
			return i + 1, key{kind: keyUp}, true
		case final == 'B' && isArrowParams(params):
			return i + 1, key{kind: keyDown}, true
		}
		// ESC[200~ is recognised by the caller; ESC[201~ outside a paste,
		// other arrows, function keys and reports are ignored.
		return i + 1, key{}, false
	case 'O':
		if len(b) < 3 {
			return 0, key{}, false
		}
		switch b[2] {
		case 'A':
			return 3, key{kind: keyUp}, true
		case 'B':
			return 3, key{kind: keyDown}, true
		}
		return 3, key{}, false
	}
	// ESC followed by something that starts no sequence: the Esc key; the
	// next byte is decoded on its own.
	return 1, key{kind: keyEsc}, true
}

// isArrowParams accepts the parameters of a plain or modified cursor key
// (ESC[A, ESC[1;2A, ...).
func isArrowParams(p string) bool {
	return p == "" || strings.HasPrefix(p, "1;") || p == "1"
}

// partialSuffix returns the length of the longest proper suffix of b that is
// a prefix of marker.
func partialSuffix(b, marker []byte) int {
	n := len(marker) - 1
	if n > len(b) {
		n = len(b)
	}
	for ; n > 0; n-- {
		if bytes.HasSuffix(b, marker[:n]) {
			return n
		}
	}
	return 0
}

// normalizeNewlines turns the \r\n and \r that terminals send for pasted line
// breaks into \n.
func normalizeNewlines(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n")
}
