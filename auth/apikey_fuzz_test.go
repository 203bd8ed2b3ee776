package auth

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"math/big"
	"strings"
	"testing"
)

// FuzzLooksLikeAPIKey checks API key recognition on arbitrary strings: it
// never panics, agrees with the format written out (prefix "agk_" then 43
// base62 characters), and a key it accepts hashes to its SHA-256 while any
// change of one character (a different key) hashes differently. Keys from
// NewAPIKey are always recognised.
func FuzzLooksLikeAPIKey(f *testing.F) {
	secret, prefix, hash := NewAPIKey()
	if !LooksLikeAPIKey(secret) || prefix != secret[:12] || !bytes.Equal(hash, HashAPIKey(secret)) {
		f.Fatalf("NewAPIKey() = %q, %q: not a well-formed key", secret, prefix)
	}
	for _, s := range []string{
		"agk_" + strings.Repeat("0", 43), "agk_" + strings.Repeat("z", 43), "agk_" + strings.Repeat("Z", 42) + "_",
		"agk_" + strings.Repeat("a", 42), "agk_" + strings.Repeat("a", 44), "AGK_" + strings.Repeat("a", 43),
		"agk_" + strings.Repeat("é", 21) + "a", "", "agk_", "Bearer agk_x",
	} {
		f.Add(s, uint8(0))
	}
	f.Add(secret, uint8(5))
	f.Fuzz(func(t *testing.T, s string, pos uint8) {
		got := LooksLikeAPIKey(s)
		want := len(s) == 47 && strings.HasPrefix(s, "agk_") && strings.Trim(s[4:], base62Alphabet) == ""
		if got != want {
			t.Fatalf("LooksLikeAPIKey(%q) = %v, want %v", s, got, want)
		}
		h := HashAPIKey(s)
		if sum := sha256.Sum256([]byte(s)); !bytes.Equal(h, sum[:]) {
			t.Fatalf("HashAPIKey(%q) is not its SHA-256", s)
		}
		if !got {
			return
		}
		// Another key, one character changed, has another hash.
		b := []byte(s)
		i := 4 + int(pos)%43
		b[i] = base62Alphabet[(strings.IndexByte(base62Alphabet, b[i])+1)%62]
		if !LooksLikeAPIKey(string(b)) || bytes.Equal(HashAPIKey(string(b)), h) {
			t.Fatalf("changing %q to %q: not a key, or the same hash", s, b)
		}
	})
}

// FuzzBase62 checks the encoding of API key secrets: any 32 bytes become
// exactly 43 base62 digits that decode back to the same number.
func FuzzBase62(f *testing.F) {
	f.Add(uint64(0), uint64(0), uint64(0), uint64(0))
	f.Add(^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0))
	f.Add(uint64(0), uint64(0), uint64(0), uint64(1))
	f.Add(uint64(1)<<63, uint64(0), uint64(0), uint64(0))
	f.Fuzz(func(t *testing.T, a, b, c, d uint64) {
		raw := binary.BigEndian.AppendUint64(nil, a)
		raw = binary.BigEndian.AppendUint64(raw, b)
		raw = binary.BigEndian.AppendUint64(raw, c)
		raw = binary.BigEndian.AppendUint64(raw, d)
		enc := base62(raw)
		if len(enc) != apiKeyBody || strings.Trim(enc, base62Alphabet) != "" {
			t.Fatalf("base62(%x) = %q", raw, enc)
		}
		n := new(big.Int)
		for _, c := range []byte(enc) {
			n.Mul(n, big.NewInt(62))
			n.Add(n, big.NewInt(int64(strings.IndexByte(base62Alphabet, c))))
		}
		if n.Cmp(new(big.Int).SetBytes(raw)) != 0 {
			t.Fatalf("base62(%x) = %q decodes to %x", raw, enc, n)
		}
		if !LooksLikeAPIKey(APIKeyPrefix + enc) {
			t.Fatalf("%q is not recognised as a key", APIKeyPrefix+enc)
		}
	})
}
