package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"

	"github.com/danielgtaylor/huma/v2"

	"github.com/agentapi-mt/agentapi"
)

type tenantConfigBody struct{ Body agentapi.TenantConfig }

type putTenantConfigInput struct {
	TenantPath
	Body agentapi.TenantConfig
}

type flagPath struct {
	Name string `path:"name" maxLength:"64"`
}

type putFlagInput struct {
	Name string `path:"name" maxLength:"64"`
	Body agentapi.Flag
}

type tenantFlagPath struct {
	TenantPath
	Name string `path:"name" maxLength:"64"`
}

type putTenantFlagInput struct {
	TenantPath
	Name string `path:"name" maxLength:"64"`
	Body agentapi.Flag
}

type flagsBody struct {
	Body struct {
		Flags map[string]agentapi.Flag `json:"flags" nullable:"false"`
	}
}

// FlagState is a flag as one user sees it.
type FlagState struct {
	agentapi.Flag
	On bool `json:"on" doc:"Whether the flag is on for the caller."`
}

type myFlagsBody struct {
	Body struct {
		TenantID string               `json:"tenant_id"`
		Flags    map[string]FlagState `json:"flags" nullable:"false"`
	}
}

func (v *V1) configRoutes(api huma.API) {
	if v.Config == nil {
		return
	}
	known := func(a string) bool { _, ok := v.Catalog[a]; return ok }
	huma.Register(api, op("get-tenant-config", http.MethodGet, "/v1/admin/tenants/{tenant}/config", "A tenant's configuration (limits, allowed agents, quota, flag overrides)", 401, 403, 404), func(ctx context.Context, in *TenantPath) (*tenantConfigBody, error) {
		if _, err := v.adminOf(ctx, in.Tenant); err != nil {
			return nil, err
		}
		c, err := v.Config.Config(ctx, in.Tenant)
		if err != nil {
			return nil, v.humaError(err)
		}
		return &tenantConfigBody{Body: c}, nil
	})
	huma.Register(api, op("put-tenant-config", http.MethodPut, "/v1/admin/tenants/{tenant}/config", "Replace a tenant's configuration (platform admins); every instance honours it within a second", 400, 401, 403, 404, 503), func(ctx context.Context, in *putTenantConfigInput) (*tenantConfigBody, error) {
		p, err := v.platform(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := v.Tenants.GetTenant(ctx, in.Tenant); err != nil {
			return nil, v.humaError(err)
		}
		c, err := v.Config.Put(ctx, in.Tenant, in.Body, known)
		if c.Version > 0 {
			v.invalidate(ctx, in.Tenant, scopeConfig)
			v.audit(ctx, p, in.Tenant, "tenant.config", in.Tenant, fmt.Sprintf("version %d", c.Version))
		}
		if err != nil {
			return nil, v.humaError(err)
		}
		return &tenantConfigBody{Body: c}, nil
	})
	setTenantFlag := func(ctx context.Context, tenant, name string, f *agentapi.Flag) (*tenantConfigBody, error) {
		p, err := v.platform(ctx)
		if err != nil {
			return nil, err
		}
		c, err := v.Config.Config(ctx, tenant)
		if err != nil {
			return nil, v.humaError(err)
		}
		flags := make(map[string]agentapi.Flag, len(c.Flags)+1)
		for k, val := range c.Flags {
			flags[k] = val
		}
		action := "flag.tenant.delete"
		if f != nil {
			if err := agentapi.ValidateFlag(name, *f); err != nil {
				return nil, v.humaError(err)
			}
			flags[name], action = *f, "flag.tenant.put"
		} else if _, ok := flags[name]; !ok {
			return nil, v.humaError(agentapi.E("flags", agentapi.KindNotFound, errors.New("the tenant has no override of flag "+name)))
		} else {
			delete(flags, name)
		}
		c.Flags = flags
		c, err = v.Config.Put(ctx, tenant, c, nil)
		if c.Version > 0 {
			v.invalidate(ctx, tenant, scopeConfig)
			v.audit(ctx, p, tenant, action, name, flagDetail(f))
		}
		if err != nil {
			return nil, v.humaError(err)
		}
		return &tenantConfigBody{Body: c}, nil
	}
	huma.Register(api, op("put-tenant-flag", http.MethodPut, "/v1/admin/tenants/{tenant}/flags/{name}", "Override a feature flag for one tenant (platform admins)", 400, 401, 403, 404, 503), func(ctx context.Context, in *putTenantFlagInput) (*tenantConfigBody, error) {
		return setTenantFlag(ctx, in.Tenant, in.Name, &in.Body)
	})
	huma.Register(api, op("delete-tenant-flag", http.MethodDelete, "/v1/admin/tenants/{tenant}/flags/{name}", "Remove a tenant's override of a feature flag (platform admins)", 401, 403, 404, 503), func(ctx context.Context, in *tenantFlagPath) (*tenantConfigBody, error) {
		return setTenantFlag(ctx, in.Tenant, in.Name, nil)
	})

	huma.Register(api, op("list-global-flags", http.MethodGet, "/v1/admin/flags", "Global feature flags: built-in defaults replaced by stored ones (platform admins)", 401, 403), func(ctx context.Context, _ *struct{}) (*flagsBody, error) {
		if _, err := v.platform(ctx); err != nil {
			return nil, err
		}
		flags, err := v.Config.GlobalFlags(ctx)
		if err != nil {
			return nil, v.humaError(err)
		}
		out := &flagsBody{}
		out.Body.Flags = flags
		return out, nil
	})
	huma.Register(api, op("put-global-flag", http.MethodPut, "/v1/admin/flags/{name}", "Set a global feature flag (platform admins)", 400, 401, 403, 503), func(ctx context.Context, in *putFlagInput) (*struct{}, error) {
		p, err := v.platform(ctx)
		if err != nil {
			return nil, err
		}
		if err := agentapi.ValidateFlag(in.Name, in.Body); err != nil {
			return nil, v.humaError(err)
		}
		err = v.Config.PutGlobalFlag(ctx, in.Name, in.Body)
		if err == nil || agentapi.KindOf(err) == agentapi.KindUnavailable {
			v.audit(ctx, p, agentapi.PlatformTenantID, "flag.global.put", in.Name, flagDetail(&in.Body))
		}
		if err != nil {
			return nil, v.humaError(err)
		}
		return nil, nil
	})
	huma.Register(api, op("delete-global-flag", http.MethodDelete, "/v1/admin/flags/{name}", "Remove a stored global flag; a built-in flag returns to its default (platform admins)", 401, 403, 404, 503), func(ctx context.Context, in *flagPath) (*struct{}, error) {
		p, err := v.platform(ctx)
		if err != nil {
			return nil, err
		}
		err = v.Config.DeleteGlobalFlag(ctx, in.Name)
		if err == nil || agentapi.KindOf(err) == agentapi.KindUnavailable {
			v.audit(ctx, p, agentapi.PlatformTenantID, "flag.global.delete", in.Name, "")
		}
		if err != nil {
			return nil, v.humaError(err)
		}
		return nil, nil
	})

	huma.Register(api, op("get-my-tenant-config", http.MethodGet, "/v1/tenant/config", "Your tenant's configuration (read-only)", 401), func(ctx context.Context, _ *struct{}) (*tenantConfigBody, error) {
		p, err := v.principal(ctx)
		if err != nil {
			return nil, err
		}
		c, err := v.Config.Config(ctx, p.TenantID)
		if err != nil {
			return nil, v.humaError(err)
		}
		return &tenantConfigBody{Body: c}, nil
	})
	huma.Register(api, op("get-my-flags", http.MethodGet, "/v1/tenant/flags", "Feature flags in effect for your tenant, and whether each is on for you", 401), func(ctx context.Context, _ *struct{}) (*myFlagsBody, error) {
		p, err := v.principal(ctx)
		if err != nil {
			return nil, err
		}
		flags, err := v.Config.Flags(ctx, p.TenantID)
		if err != nil {
			return nil, v.humaError(err)
		}
		out := &myFlagsBody{}
		out.Body.TenantID = p.TenantID
		out.Body.Flags = make(map[string]FlagState, len(flags))
		names := make([]string, 0, len(flags))
		for n := range flags {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			f := flags[n]
			out.Body.Flags[n] = FlagState{Flag: f, On: f.On(n, p.TenantID, p.UserID)}
		}
		return out, nil
	})
}

func flagDetail(f *agentapi.Flag) string {
	if f == nil {
		return ""
	}
	if f.Percent != nil {
		return fmt.Sprintf("enabled=%v percent=%d", f.Enabled, *f.Percent)
	}
	return fmt.Sprintf("enabled=%v", f.Enabled)
}
