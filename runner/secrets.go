package runner

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/agentapi-mt/agentapi"
)

// Opener unseals a value; *auth.Keyring implements it.
type Opener interface {
	Open(sealed, aad []byte) ([]byte, error)
}

// SecretAAD binds a sealed secret to its tenant and name, so a sealed value
// copied to another tenant or name does not open.
func SecretAAD(tenantID, name string) []byte {
	return []byte("tenant-secret\x00" + tenantID + "\x00" + name)
}

var secretName = regexp.MustCompile(`^[A-Z_][A-Z0-9_]{0,127}$`)

// CheckSecretName reports whether name may be a secret: an environment
// variable name that does not replace what every agent relies on.
func CheckSecretName(name string) error {
	if !secretName.MatchString(name) {
		return agentapi.E("secrets", agentapi.KindInvalid, fmt.Errorf("secret name %q: use upper-case letters, digits and _, as for an environment variable", name))
	}
	switch {
	case name == "PATH" || name == "HOME" || name == "LANG" || name == "TERM" || name == "COLORTERM" || strings.HasPrefix(name, "LD_"):
		return agentapi.E("secrets", agentapi.KindInvalid, fmt.Errorf("secret name %q is reserved", name))
	}
	return nil
}

// SecretEnv returns an Options.Env that gives agents their tenant's
// secrets, unsealed just before the agent starts.
func SecretEnv(store agentapi.TenantSecretStore, kr Opener) func(ctx context.Context, tenantID string) (map[string]string, error) {
	return func(ctx context.Context, tenantID string) (map[string]string, error) {
		sealed, err := store.Secrets(ctx, tenantID)
		if err != nil {
			return nil, err
		}
		env := make(map[string]string, len(sealed))
		for name, v := range sealed {
			plain, err := kr.Open(v, SecretAAD(tenantID, name))
			if err != nil {
				return nil, fmt.Errorf("secret %s does not open (was TOKEN_ENCRYPTION_KEY changed without keeping the old one in TOKEN_ENCRYPTION_KEY_PREVIOUS?): %w", name, err)
			}
			env[name] = string(plain)
		}
		return env, nil
	}
}
