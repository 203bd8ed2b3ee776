package storetest

import (
	"strings"
	"testing"
	"time"

	agentapi "github.com/agentapi-mt/agentapi"
)

func TestDiff(t *testing.T) {
	local := time.FixedZone("X", 3600)
	key := agentapi.APIKey{ID: "k", Hash: []byte{1, 2}, CreatedAt: t0, LastUsedAt: ptr(t0)}
	for _, tc := range []struct {
		name      string
		got, want any
		mention   string // "" when equal
	}{
		{"equal", key, key, ""},
		{"same instant, want in another zone", key, func() agentapi.APIKey { k := key; k.CreatedAt = t0.In(local); return k }(), ""},
		{"got not in UTC", func() agentapi.APIKey { k := key; k.CreatedAt = t0.In(local); return k }(), key, "want it in UTC"},
		{"other instant", func() agentapi.APIKey { k := key; k.CreatedAt = at(1); return k }(), key, "CreatedAt"},
		{"nil pointer", func() agentapi.APIKey { k := key; k.LastUsedAt = nil; return k }(), key, "LastUsedAt: got nil"},
		{"bytes", func() agentapi.APIKey { k := key; k.Hash = []byte{1}; return k }(), key, "Hash"},
		{"lengths", []agentapi.APIKey{key}, []agentapi.APIKey{}, "got 1 elements [k], want 0 []"},
		{"element", []agentapi.APIKey{key}, []agentapi.APIKey{{ID: "x", Hash: key.Hash, CreatedAt: t0, LastUsedAt: ptr(t0)}}, "[0].ID"},
	} {
		d := diff(tc.got, tc.want)
		switch {
		case tc.mention == "" && d != "":
			t.Errorf("%s: diff = %q, want none", tc.name, d)
		case tc.mention != "" && !strings.Contains(d, tc.mention):
			t.Errorf("%s: diff = %q, want it to mention %q", tc.name, d, tc.mention)
		}
	}
}
