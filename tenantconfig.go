package agentapi

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"sort"
	"time"
)

// TenantConfig is what a tenant's operator may set for it. A zero field
// means "the server's default" (its environment configuration); nothing
// here can raise a limit above what the operator allows, because only
// platform admins change it.
type TenantConfig struct {
	// RateLimitPerMinute and RateLimitBurst limit the requests of the whole
	// tenant (all its users together). 0: no tenant-wide limit.
	RateLimitPerMinute int `json:"rate_limit_per_minute,omitempty" minimum:"0" maximum:"1000000"`
	RateLimitBurst     int `json:"rate_limit_burst,omitempty" minimum:"0" maximum:"1000000"`
	// UserRateLimitPerMinute and UserRateLimitBurst replace the server's
	// per-user limit (RATE_LIMIT_REQUESTS_PER_MINUTE, RATE_LIMIT_BURST_SIZE)
	// for this tenant's users. 0: the server's.
	UserRateLimitPerMinute int `json:"user_rate_limit_per_minute,omitempty" minimum:"0" maximum:"1000000"`
	UserRateLimitBurst     int `json:"user_rate_limit_burst,omitempty" minimum:"0" maximum:"1000000"`
	// MaxSessions and MaxSessionsPerUser bound concurrently running agent
	// sessions. 0: the server's.
	MaxSessions        int `json:"max_sessions,omitempty" minimum:"0" maximum:"100000"`
	MaxSessionsPerUser int `json:"max_sessions_per_user,omitempty" minimum:"0" maximum:"100000"`
	// IdleTimeoutSeconds stops agents unused for that long. 0: the server's.
	IdleTimeoutSeconds int `json:"idle_timeout_seconds,omitempty" minimum:"0" maximum:"31536000"`
	// AllowedAgents restricts the agent types the tenant may start, among
	// the server's catalog. Empty: all of them.
	AllowedAgents []string `json:"allowed_agents,omitempty" maxItems:"100"`
	// MonthlyMessageQuota caps the messages the tenant's users send to
	// agents per calendar month (UTC). 0: no quota.
	MonthlyMessageQuota int64 `json:"monthly_message_quota,omitempty" minimum:"0"`
	// Flags override the global feature flags for this tenant.
	Flags map[string]Flag `json:"flags,omitempty"`

	// Version counts the changes; UpdatedAt is the last one. Set by the
	// store.
	Version   int64     `json:"version" readOnly:"true"`
	UpdatedAt time.Time `json:"updated_at,omitzero" readOnly:"true"`
}

// Flag is a feature flag's setting: off, on, or on for a stable share of
// users.
type Flag struct {
	Enabled bool `json:"enabled"`
	// Percent, when Enabled, is the share of users (0-100) that get the
	// feature; each user is in or out by a stable hash of the flag name,
	// tenant and user, so raising Percent only adds users. nil: everyone.
	Percent *int `json:"percent,omitempty" minimum:"0" maximum:"100"`
}

// On reports whether the flag is on for user of tenant.
func (f Flag) On(name, tenantID, userID string) bool {
	if !f.Enabled {
		return false
	}
	if f.Percent == nil || *f.Percent >= 100 {
		return true
	}
	if *f.Percent <= 0 {
		return false
	}
	return RolloutBucket(name, tenantID, userID) < *f.Percent
}

// RolloutBucket places a user in one of 100 buckets for flag name, stably.
func RolloutBucket(name, tenantID, userID string) int {
	h := fnv.New64a()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(tenantID))
	h.Write([]byte{0})
	h.Write([]byte(userID))
	return int(h.Sum64() % 100)
}

// Feature flags the server itself consults, and their built-in defaults.
// Operators may define other flags for their own clients.
const (
	FlagRawInput   = "raw_input"   // POST .../message with type "raw"
	FlagFileUpload = "file_upload" // POST .../upload
	FlagWebUI      = "web_ui"      // the browser UI under /ui/
)

// DefaultFlags are the built-in values of the server's own flags.
func DefaultFlags() map[string]Flag {
	return map[string]Flag{
		FlagRawInput:   {Enabled: true},
		FlagFileUpload: {Enabled: true},
		FlagWebUI:      {Enabled: true},
	}
}

var flagName = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)

// ValidateFlag checks a flag's name and setting.
func ValidateFlag(name string, f Flag) error {
	if !flagName.MatchString(name) {
		return E("flags", KindInvalid, fmt.Errorf("flag name %q: use 1-64 lowercase letters, digits, _ . -, starting with a letter", name))
	}
	if f.Percent != nil && (*f.Percent < 0 || *f.Percent > 100) {
		return E("flags", KindInvalid, fmt.Errorf("flag %q: percent must be between 0 and 100", name))
	}
	return nil
}

// Validate checks a configuration; known lists agent types the server can
// run (nil: not checked).
func (c TenantConfig) Validate(known func(agent string) bool) error {
	var errs []error
	for name, v := range map[string]int{
		"rate_limit_per_minute": c.RateLimitPerMinute, "rate_limit_burst": c.RateLimitBurst,
		"user_rate_limit_per_minute": c.UserRateLimitPerMinute, "user_rate_limit_burst": c.UserRateLimitBurst,
		"max_sessions": c.MaxSessions, "max_sessions_per_user": c.MaxSessionsPerUser,
		"idle_timeout_seconds": c.IdleTimeoutSeconds,
	} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", name))
		}
	}
	if c.MonthlyMessageQuota < 0 {
		errs = append(errs, errors.New("monthly_message_quota must not be negative"))
	}
	if c.RateLimitBurst > 0 && c.RateLimitPerMinute == 0 {
		errs = append(errs, errors.New("rate_limit_burst needs rate_limit_per_minute"))
	}
	if c.UserRateLimitBurst > 0 && c.UserRateLimitPerMinute == 0 {
		errs = append(errs, errors.New("user_rate_limit_burst needs user_rate_limit_per_minute"))
	}
	for _, a := range c.AllowedAgents {
		if known != nil && !known(a) {
			errs = append(errs, fmt.Errorf("allowed_agents: %q is not an agent this server can run", a))
		}
	}
	names := make([]string, 0, len(c.Flags))
	for n := range c.Flags {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := ValidateFlag(n, c.Flags[n]); err != nil {
			errs = append(errs, errors.Unwrap(err))
		}
	}
	if len(errs) > 0 {
		sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
		return E("tenant.config", KindInvalid, errors.Join(errs...))
	}
	return nil
}

// AllowsAgent reports whether the tenant may start agent type name.
func (c TenantConfig) AllowsAgent(name string) bool {
	if len(c.AllowedAgents) == 0 {
		return true
	}
	for _, a := range c.AllowedAgents {
		if a == name {
			return true
		}
	}
	return false
}

// TenantConfigStore keeps tenant configurations and the global feature
// flags. Contract, for every implementation:
//
//   - TenantConfig of an existing tenant that never had one is the zero
//     configuration (Version 0); of a missing tenant, KindNotFound.
//   - PutTenantConfig replaces the whole configuration of an existing
//     tenant (KindNotFound otherwise), stores Version = previous + 1 and
//     UpdatedAt = at, and returns what it stored. Deleting the tenant
//     deletes its configuration.
//   - GlobalFlags returns every stored global flag (empty map when none);
//     PutGlobalFlag creates or replaces one; DeleteGlobalFlag of a missing
//     flag is KindNotFound.
type TenantConfigStore interface {
	TenantConfig(ctx context.Context, tenantID string) (TenantConfig, error)
	PutTenantConfig(ctx context.Context, tenantID string, c TenantConfig, at time.Time) (TenantConfig, error)
	GlobalFlags(ctx context.Context) (map[string]Flag, error)
	PutGlobalFlag(ctx context.Context, name string, f Flag, at time.Time) error
	DeleteGlobalFlag(ctx context.Context, name string) error
}
