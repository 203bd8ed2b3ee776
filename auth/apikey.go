package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"math/big"
	"strings"
)

// API key secrets look like "agk_" followed by 43 base62 characters
// (digits and ASCII letters) encoding 32 random bytes. Base62 keeps the
// whole secret one word, so a double click selects all of it, and the
// "agk_" prefix lets secret scanners and LooksLikeAPIKey recognise one.
const (
	APIKeyPrefix    = "agk_"
	apiKeyBody      = 43 // 62^43 > 2^256
	apiKeyLen       = len(APIKeyPrefix) + apiKeyBody
	apiKeyShownLen  = 12 // characters of the secret kept as APIKey.Prefix
	base62Alphabet  = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	apiKeyRandBytes = 32
)

// NewAPIKey returns a fresh secret (shown to its owner once, never
// stored), its non-secret prefix (the first 12 characters, for listings)
// and its hash (what APIKeyStore keeps and looks keys up by).
//
// The hash is plain SHA-256: the secret has 256 bits of entropy, so a slow
// password hash would add nothing but latency to every request.
func NewAPIKey() (secret, prefix string, hash []byte) {
	var raw [apiKeyRandBytes]byte
	rand.Read(raw[:]) // never fails (crypto/rand since Go 1.24)
	secret = APIKeyPrefix + base62(raw[:])
	return secret, secret[:apiKeyShownLen], HashAPIKey(secret)
}

// HashAPIKey is the SHA-256 of a secret, as stored in APIKey.Hash.
func HashAPIKey(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// LooksLikeAPIKey reports whether s has the shape of a secret from
// NewAPIKey, so that a request can be routed to API key or session token
// checking (and a pasted session token is not hashed as a key). It says
// nothing about whether the key exists.
func LooksLikeAPIKey(s string) bool {
	if len(s) != apiKeyLen || !strings.HasPrefix(s, APIKeyPrefix) {
		return false
	}
	for i := len(APIKeyPrefix); i < len(s); i++ {
		if strings.IndexByte(base62Alphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}

// base62 encodes b as a big-endian number in exactly apiKeyBody digits.
func base62(b []byte) string {
	n := new(big.Int).SetBytes(b)
	base := big.NewInt(62)
	mod := new(big.Int)
	out := make([]byte, apiKeyBody)
	for i := apiKeyBody - 1; i >= 0; i-- {
		n.DivMod(n, base, mod)
		out[i] = base62Alphabet[mod.Int64()]
	}
	return string(out)
}
