package auth

import (
	"bytes"
	"math/big"
	"testing"
)

func TestBase62FixedWidth(t *testing.T) {
	zero := make([]byte, 32)
	if got := base62(zero); got != string(bytes.Repeat([]byte{'0'}, 43)) {
		t.Errorf("base62(zeros) = %q", got)
	}
	ones := bytes.Repeat([]byte{0xff}, 32)
	got := base62(ones)
	if len(got) != 43 {
		t.Fatalf("base62(max) has %d digits", len(got))
	}
	// Decode it back.
	n := new(big.Int)
	for _, c := range []byte(got) {
		n.Mul(n, big.NewInt(62))
		n.Add(n, big.NewInt(int64(bytes.IndexByte([]byte(base62Alphabet), c))))
	}
	if !bytes.Equal(n.Bytes(), ones) {
		t.Errorf("base62(max) = %q does not decode back", got)
	}
}
