package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/auth"
)

// TenantPath, UserPath and KeyPath are path parameters, embedded in
// request types (exported, so huma sees their fields).
type TenantPath struct {
	Tenant string `path:"tenant" maxLength:"100"`
}

type tenantBody struct {
	Body agentapi.Tenant
}

type tenantsBody struct {
	Body struct {
		Tenants []agentapi.Tenant `json:"tenants" nullable:"false"`
	}
}

type createTenantInput struct {
	Body struct {
		ID   string `json:"id,omitempty" maxLength:"64" pattern:"^[a-z0-9][a-z0-9-]*$" doc:"Optional id (lower-case letters, digits, dashes); generated when omitted."`
		Name string `json:"name" minLength:"1" maxLength:"200"`
	}
}

type updateTenantInput struct {
	TenantPath
	Body struct {
		Name     *string `json:"name,omitempty" minLength:"1" maxLength:"200"`
		Disabled *bool   `json:"disabled,omitempty" doc:"A disabled tenant's users are locked out at once."`
	}
}

type UserPath struct {
	TenantPath
	User string `path:"user" maxLength:"100"`
}

type userBody struct{ Body agentapi.User }

type usersBody struct {
	Body struct {
		Users []agentapi.User `json:"users" nullable:"false"`
	}
}

type createUserInput struct {
	TenantPath
	Body struct {
		Name string            `json:"name" minLength:"1" maxLength:"200"`
		Role agentapi.UserRole `json:"role" enum:"admin,member,platform_admin"`
	}
}

type updateUserInput struct {
	UserPath
	Body struct {
		Name *string            `json:"name,omitempty" minLength:"1" maxLength:"200"`
		Role *agentapi.UserRole `json:"role,omitempty" enum:"admin,member,platform_admin"`
	}
}

type createKeyInput struct {
	UserPath
	Body struct {
		Name string `json:"name,omitempty" maxLength:"200"`
	}
}

type createdKey struct {
	Body struct {
		agentapi.APIKey
		Secret string `json:"secret" doc:"The key itself. It is shown this once and cannot be recovered."`
	}
}

type keysBody struct {
	Body struct {
		Keys []agentapi.APIKey `json:"keys" nullable:"false"`
	}
}

type KeyPath struct {
	TenantPath
	Key string `path:"key" maxLength:"100"`
}

type auditInput struct {
	TenantPath
	Limit int `query:"limit" minimum:"1" maximum:"1000" default:"100"`
}

type auditBody struct {
	Body struct {
		Entries []agentapi.AuditEntry `json:"entries" nullable:"false"`
	}
}

func (v *V1) checkRole(p *Principal, tenant string, role agentapi.UserRole) error {
	if role == agentapi.RolePlatformAdmin && (!p.Platform() || tenant != agentapi.PlatformTenantID) {
		return agentapi.E("admin", agentapi.KindInvalid, errors.New("the platform_admin role exists only in the platform tenant and only platform admins grant it"))
	}
	if role != agentapi.RolePlatformAdmin && tenant == agentapi.PlatformTenantID {
		return agentapi.E("admin", agentapi.KindInvalid, errors.New("users of the platform tenant are platform admins"))
	}
	return nil
}

func (v *V1) adminRoutes(api huma.API) {
	// Tenants: platform admins only.
	huma.Register(api, op("list-tenants", http.MethodGet, "/v1/admin/tenants", "List tenants", 401, 403), func(ctx context.Context, _ *struct{}) (*tenantsBody, error) {
		if _, err := v.platform(ctx); err != nil {
			return nil, err
		}
		ts, err := v.Tenants.ListTenants(ctx)
		if err != nil {
			return nil, v.humaError(err)
		}
		out := &tenantsBody{}
		out.Body.Tenants = append([]agentapi.Tenant{}, ts...)
		return out, nil
	})
	huma.Register(api, op("create-tenant", http.MethodPost, "/v1/admin/tenants", "Create a tenant", 400, 401, 403, 409), func(ctx context.Context, in *createTenantInput) (*tenantBody, error) {
		p, err := v.platform(ctx)
		if err != nil {
			return nil, err
		}
		id := in.Body.ID
		if id == "" {
			id = agentapi.NewID("ten")
		}
		now := v.Now().UTC()
		t := agentapi.Tenant{ID: id, Name: strings.TrimSpace(in.Body.Name), CreatedAt: now, UpdatedAt: now}
		if err := v.Tenants.CreateTenant(ctx, t); err != nil {
			return nil, v.humaError(err)
		}
		v.audit(ctx, p, t.ID, "tenant.create", t.ID, t.Name)
		return &tenantBody{Body: t}, nil
	})
	huma.Register(api, op("get-tenant", http.MethodGet, "/v1/admin/tenants/{tenant}", "Get a tenant", 401, 403, 404), func(ctx context.Context, in *TenantPath) (*tenantBody, error) {
		if _, err := v.adminOf(ctx, in.Tenant); err != nil {
			return nil, err
		}
		t, err := v.Tenants.GetTenant(ctx, in.Tenant)
		if err != nil {
			return nil, v.humaError(err)
		}
		return &tenantBody{Body: t}, nil
	})
	huma.Register(api, op("update-tenant", http.MethodPatch, "/v1/admin/tenants/{tenant}", "Rename, disable or enable a tenant", 400, 401, 403, 404), func(ctx context.Context, in *updateTenantInput) (*tenantBody, error) {
		p, err := v.platform(ctx)
		if err != nil {
			return nil, err
		}
		t, err := v.Tenants.GetTenant(ctx, in.Tenant)
		if err != nil {
			return nil, v.humaError(err)
		}
		if in.Body.Disabled != nil && *in.Body.Disabled && t.ID == agentapi.PlatformTenantID {
			return nil, v.humaError(agentapi.E("admin", agentapi.KindInvalid, errors.New("the platform tenant cannot be disabled")))
		}
		if in.Body.Name != nil {
			t.Name = strings.TrimSpace(*in.Body.Name)
		}
		if in.Body.Disabled != nil {
			t.Disabled = *in.Body.Disabled
		}
		t.UpdatedAt = v.Now().UTC()
		if err := v.Tenants.UpdateTenant(ctx, t); err != nil {
			return nil, v.humaError(err)
		}
		if t.Disabled {
			v.Runner.StopTenant(t.ID, false) // locked out: its agents stop too
		}
		action := "tenant.update"
		if in.Body.Disabled != nil {
			action = map[bool]string{true: "tenant.disable", false: "tenant.enable"}[*in.Body.Disabled]
		}
		v.audit(ctx, p, t.ID, action, t.ID, t.Name)
		t, _ = v.Tenants.GetTenant(ctx, in.Tenant)
		return &tenantBody{Body: t}, nil
	})
	huma.Register(api, op("delete-tenant", http.MethodDelete, "/v1/admin/tenants/{tenant}", "Delete a tenant and everything it owns", 400, 401, 403, 404), func(ctx context.Context, in *TenantPath) (*struct{}, error) {
		p, err := v.platform(ctx)
		if err != nil {
			return nil, err
		}
		if in.Tenant == agentapi.PlatformTenantID {
			return nil, v.humaError(agentapi.E("admin", agentapi.KindInvalid, errors.New("the platform tenant cannot be deleted")))
		}
		users, err := v.Users.ListUsers(ctx, in.Tenant)
		if err != nil {
			return nil, v.humaError(err)
		}
		if err := v.Tenants.DeleteTenant(ctx, in.Tenant); err != nil {
			return nil, v.humaError(err)
		}
		// Its agents hold its secrets: stop them, and remove its files.
		v.Runner.StopTenant(in.Tenant, true)
		if v.Config != nil {
			if err := v.Config.Forget(ctx, in.Tenant); err != nil {
				v.Log.Warn("dropping a deleted tenant's cached configuration failed", "tenant", in.Tenant, "error", err)
			}
		}
		for _, u := range users {
			if err := v.endLogins(ctx, u.TenantID, u.ID); err != nil {
				return nil, err
			}
		}
		v.audit(ctx, p, in.Tenant, "tenant.delete", in.Tenant, "")
		return nil, nil
	})

	// Users: platform admins, and tenant admins within their tenant.
	huma.Register(api, op("list-users", http.MethodGet, "/v1/admin/tenants/{tenant}/users", "List a tenant's users", 401, 403, 404), func(ctx context.Context, in *TenantPath) (*usersBody, error) {
		if _, err := v.adminOf(ctx, in.Tenant); err != nil {
			return nil, err
		}
		us, err := v.Users.ListUsers(ctx, in.Tenant)
		if err != nil {
			return nil, v.humaError(err)
		}
		out := &usersBody{}
		out.Body.Users = append([]agentapi.User{}, us...)
		return out, nil
	})
	huma.Register(api, op("create-user", http.MethodPost, "/v1/admin/tenants/{tenant}/users", "Create a user", 400, 401, 403, 404), func(ctx context.Context, in *createUserInput) (*userBody, error) {
		p, err := v.adminOf(ctx, in.Tenant)
		if err != nil {
			return nil, err
		}
		if err := v.checkRole(p, in.Tenant, in.Body.Role); err != nil {
			return nil, v.humaError(err)
		}
		now := v.Now().UTC()
		u := agentapi.User{ID: agentapi.NewID("usr"), TenantID: in.Tenant, Name: strings.TrimSpace(in.Body.Name), Role: in.Body.Role, CreatedAt: now, UpdatedAt: now}
		if err := v.Users.CreateUser(ctx, u); err != nil {
			return nil, v.humaError(err)
		}
		v.audit(ctx, p, in.Tenant, "user.create", u.ID, string(u.Role))
		return &userBody{Body: u}, nil
	})
	huma.Register(api, op("get-user", http.MethodGet, "/v1/admin/tenants/{tenant}/users/{user}", "Get a user", 401, 403, 404), func(ctx context.Context, in *UserPath) (*userBody, error) {
		if _, err := v.adminOf(ctx, in.Tenant); err != nil {
			return nil, err
		}
		u, err := v.Users.GetUser(ctx, in.Tenant, in.User)
		if err != nil {
			return nil, v.humaError(err)
		}
		return &userBody{Body: u}, nil
	})
	huma.Register(api, op("update-user", http.MethodPatch, "/v1/admin/tenants/{tenant}/users/{user}", "Rename a user or change their role", 400, 401, 403, 404), func(ctx context.Context, in *updateUserInput) (*userBody, error) {
		p, err := v.adminOf(ctx, in.Tenant)
		if err != nil {
			return nil, err
		}
		u, err := v.Users.GetUser(ctx, in.Tenant, in.User)
		if err != nil {
			return nil, v.humaError(err)
		}
		if in.Body.Role != nil {
			if err := v.checkRole(p, in.Tenant, *in.Body.Role); err != nil {
				return nil, v.humaError(err)
			}
			u.Role = *in.Body.Role
		}
		if in.Body.Name != nil {
			u.Name = strings.TrimSpace(*in.Body.Name)
		}
		u.UpdatedAt = v.Now().UTC()
		if err := v.Users.UpdateUser(ctx, u); err != nil {
			return nil, v.humaError(err)
		}
		if in.Body.Role != nil {
			// Sessions carry the role they were created with: end them.
			if err := v.endLogins(ctx, u.TenantID, u.ID); err != nil {
				return nil, err
			}
		}
		v.audit(ctx, p, in.Tenant, "user.update", u.ID, string(u.Role))
		return &userBody{Body: u}, nil
	})
	huma.Register(api, op("delete-user", http.MethodDelete, "/v1/admin/tenants/{tenant}/users/{user}", "Delete a user, their keys and login sessions", 400, 401, 403, 404), func(ctx context.Context, in *UserPath) (*struct{}, error) {
		p, err := v.adminOf(ctx, in.Tenant)
		if err != nil {
			return nil, err
		}
		if in.Tenant == agentapi.PlatformTenantID {
			if err := v.keepAPlatformAdmin(ctx, in.User, ""); err != nil {
				return nil, err
			}
		}
		if err := v.Users.DeleteUser(ctx, in.Tenant, in.User); err != nil {
			return nil, v.humaError(err)
		}
		if err := v.endLogins(ctx, in.Tenant, in.User); err != nil {
			return nil, err
		}
		v.audit(ctx, p, in.Tenant, "user.delete", in.User, "")
		return nil, nil
	})

	// API keys.
	huma.Register(api, op("create-api-key", http.MethodPost, "/v1/admin/tenants/{tenant}/users/{user}/keys", "Create an API key (the secret is shown once)", 400, 401, 403, 404), func(ctx context.Context, in *createKeyInput) (*createdKey, error) {
		p, err := v.adminOf(ctx, in.Tenant)
		if err != nil {
			return nil, err
		}
		if _, err := v.Users.GetUser(ctx, in.Tenant, in.User); err != nil {
			return nil, v.humaError(err)
		}
		secret, prefix, hash := auth.NewAPIKey()
		k := agentapi.APIKey{ID: agentapi.NewID("key"), TenantID: in.Tenant, UserID: in.User, Name: strings.TrimSpace(in.Body.Name), Prefix: prefix, Hash: hash, CreatedAt: v.Now().UTC()}
		if err := v.Keys.CreateAPIKey(ctx, k); err != nil {
			return nil, v.humaError(err)
		}
		v.audit(ctx, p, in.Tenant, "apikey.create", k.ID, k.Prefix)
		out := &createdKey{}
		out.Body.APIKey, out.Body.Secret = k, secret
		return out, nil
	})
	huma.Register(api, op("list-api-keys", http.MethodGet, "/v1/admin/tenants/{tenant}/keys", "List a tenant's API keys (prefix and last use, never the secret)", 401, 403, 404), func(ctx context.Context, in *TenantPath) (*keysBody, error) {
		if _, err := v.adminOf(ctx, in.Tenant); err != nil {
			return nil, err
		}
		ks, err := v.Keys.ListAPIKeys(ctx, in.Tenant, "")
		if err != nil {
			return nil, v.humaError(err)
		}
		out := &keysBody{}
		out.Body.Keys = append([]agentapi.APIKey{}, ks...)
		return out, nil
	})
	huma.Register(api, op("revoke-api-key", http.MethodDelete, "/v1/admin/tenants/{tenant}/keys/{key}", "Revoke an API key and end its user's login sessions", 401, 403, 404), func(ctx context.Context, in *KeyPath) (*struct{}, error) {
		p, err := v.adminOf(ctx, in.Tenant)
		if err != nil {
			return nil, err
		}
		ks, err := v.Keys.ListAPIKeys(ctx, in.Tenant, "")
		if err != nil {
			return nil, v.humaError(err)
		}
		var owner string
		for _, k := range ks {
			if k.ID == in.Key {
				owner = k.UserID
			}
		}
		if in.Tenant == agentapi.PlatformTenantID {
			if err := v.keepAPlatformAdmin(ctx, "", in.Key); err != nil {
				return nil, err
			}
		}
		if err := v.Keys.RevokeAPIKey(ctx, in.Tenant, in.Key, v.Now().UTC()); err != nil {
			return nil, v.humaError(err)
		}
		if owner != "" {
			// Logins made with the key would outlive it otherwise.
			if err := v.endLogins(ctx, in.Tenant, owner); err != nil {
				return nil, err
			}
		}
		v.audit(ctx, p, in.Tenant, "apikey.revoke", in.Key, "")
		return nil, nil
	})
	huma.Register(api, op("list-audit", http.MethodGet, "/v1/admin/tenants/{tenant}/audit", "A tenant's audit log, newest first", 401, 403, 404), func(ctx context.Context, in *auditInput) (*auditBody, error) {
		if _, err := v.adminOf(ctx, in.Tenant); err != nil {
			return nil, err
		}
		es, err := v.Audit.ListAudit(ctx, in.Tenant, in.Limit)
		if err != nil {
			return nil, v.humaError(err)
		}
		t, err := v.Tenants.GetTenant(ctx, in.Tenant)
		if err != nil {
			return nil, v.humaError(err)
		}
		out := &auditBody{}
		out.Body.Entries = []agentapi.AuditEntry{}
		for _, e := range es {
			// A deleted tenant's entries stay in the log; a new tenant that
			// reuses its id must not read them.
			if !e.At.Before(t.CreatedAt) {
				out.Body.Entries = append(out.Body.Entries, e)
			}
		}
		return out, nil
	})
}

// keepAPlatformAdmin refuses to delete user (or revoke key) when that
// would leave no platform admin with a working API key: the platform could
// not be administered any more, and bootstrap runs only on an empty
// database.
func (v *V1) keepAPlatformAdmin(ctx context.Context, user, key string) error {
	keys, err := v.Keys.ListAPIKeys(ctx, agentapi.PlatformTenantID, "")
	if err != nil {
		return v.humaError(err)
	}
	for _, k := range keys {
		if k.RevokedAt == nil && k.UserID != user && k.ID != key {
			return nil
		}
	}
	return v.humaError(agentapi.E("admin", agentapi.KindInvalid, errors.New("this would leave no platform admin with a working API key; create another first")))
}
