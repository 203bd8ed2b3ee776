package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/runner"
)

type secretPath struct {
	Tenant string `path:"tenant" maxLength:"100"`
	Name   string `path:"name" maxLength:"128"`
}

type putSecretInput struct {
	Tenant string `path:"tenant" maxLength:"100"`
	Name   string `path:"name" maxLength:"128"`
	Body   struct {
		Value string `json:"value" minLength:"1" maxLength:"16384" doc:"The secret. It is sealed at once and never shown again."`
	}
}

type secretsBody struct {
	Body struct {
		Secrets []agentapi.SecretInfo `json:"secrets" nullable:"false"`
	}
}

func (v *V1) secretRoutes(api huma.API) {
	huma.Register(api, op("put-secret", http.MethodPut, "/v1/admin/tenants/{tenant}/secrets/{name}", "Set a secret the tenant's agents receive as an environment variable", 400, 401, 403, 404), func(ctx context.Context, in *putSecretInput) (*struct{}, error) {
		p, err := v.adminOf(ctx, in.Tenant)
		if err != nil {
			return nil, err
		}
		if err := runner.CheckSecretName(in.Name); err != nil {
			return nil, v.humaError(err)
		}
		sealed, err := v.Keyring.Seal([]byte(in.Body.Value), runner.SecretAAD(in.Tenant, in.Name))
		if err != nil {
			return nil, v.humaError(err)
		}
		if err := v.Secrets.PutSecret(ctx, in.Tenant, in.Name, sealed, v.Now().UTC()); err != nil {
			return nil, v.humaError(err)
		}
		v.audit(ctx, p, in.Tenant, "secret.put", in.Name, "")
		return nil, nil
	})
	huma.Register(api, op("list-secrets", http.MethodGet, "/v1/admin/tenants/{tenant}/secrets", "List secret names (never values)", 401, 403, 404), func(ctx context.Context, in *TenantPath) (*secretsBody, error) {
		if _, err := v.adminOf(ctx, in.Tenant); err != nil {
			return nil, err
		}
		names, err := v.Secrets.SecretNames(ctx, in.Tenant)
		if err != nil {
			return nil, v.humaError(err)
		}
		out := &secretsBody{}
		out.Body.Secrets = append([]agentapi.SecretInfo{}, names...)
		return out, nil
	})
	huma.Register(api, op("delete-secret", http.MethodDelete, "/v1/admin/tenants/{tenant}/secrets/{name}", "Delete a secret", 401, 403, 404), func(ctx context.Context, in *secretPath) (*struct{}, error) {
		p, err := v.adminOf(ctx, in.Tenant)
		if err != nil {
			return nil, err
		}
		if err := v.Secrets.DeleteSecret(ctx, in.Tenant, in.Name); err != nil {
			return nil, v.humaError(err)
		}
		v.audit(ctx, p, in.Tenant, "secret.delete", in.Name, "")
		return nil, nil
	})
}
