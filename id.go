package agentapi

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
)

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewID returns prefix + "_" + 16 random bytes in lower-case base32, e.g.
// "ses_5k2x...". Prefixes make ids readable in logs; the randomness makes
// them unguessable, so an id alone grants nothing.
func NewID(prefix string) string {
	b := make([]byte, 16)
	rand.Read(b)
	return prefix + "_" + strings.ToLower(idEncoding.EncodeToString(b))
}
