package auth_test

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/agentapi-mt/agentapi/auth"
)

func TestNewAPIKey(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		secret, prefix, hash := auth.NewAPIKey()
		if !strings.HasPrefix(secret, "agk_") || len(secret) != 47 {
			t.Fatalf("secret %q: want agk_ and 43 characters", secret)
		}
		if prefix != secret[:12] {
			t.Fatalf("prefix %q, want the first 12 characters of %q", prefix, secret)
		}
		sum := sha256.Sum256([]byte(secret))
		if !bytes.Equal(hash, sum[:]) || !bytes.Equal(auth.HashAPIKey(secret), hash) {
			t.Fatalf("hash is not SHA-256 of the secret")
		}
		if !auth.LooksLikeAPIKey(secret) {
			t.Fatalf("LooksLikeAPIKey(%q) = false", secret)
		}
		if seen[secret] {
			t.Fatalf("secret %q generated twice", secret)
		}
		seen[secret] = true
	}
}

func TestLooksLikeAPIKey(t *testing.T) {
	secret, _, _ := auth.NewAPIKey()
	for _, s := range []string{
		"",
		"agk_",
		secret[:46],
		secret + "0",
		"agx_" + secret[4:],
		"AGK_" + secret[4:],
		secret[:10] + "-" + secret[11:],
		secret[:10] + "_" + secret[11:],
		secret[:10] + "é" + secret[12:],
		strings.Repeat("A", 43), // a session token's shape
	} {
		if auth.LooksLikeAPIKey(s) {
			t.Errorf("LooksLikeAPIKey(%q) = true", s)
		}
	}
}
