package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/danielgtaylor/huma/v2"

	"github.com/agentapi-mt/agentapi/breaker"
)

type breakersBody struct {
	Body struct {
		Enabled  bool             `json:"enabled"`
		Breakers []breaker.Status `json:"breakers" nullable:"false"`
	}
}

type breakerPath struct {
	Name string `path:"name" maxLength:"200"`
}

func (v *V1) breakerRoutes(api huma.API) {
	if v.Breakers == nil {
		return
	}
	huma.Register(api, op("list-breakers", http.MethodGet, "/v1/admin/breakers", "Circuit breakers this instance has used, with their shared state", 401, 403), func(ctx context.Context, _ *struct{}) (*breakersBody, error) {
		if _, err := v.platform(ctx); err != nil {
			return nil, err
		}
		out := &breakersBody{}
		out.Body.Enabled = v.Breakers.Enabled()
		out.Body.Breakers = append([]breaker.Status{}, v.Breakers.List()...)
		return out, nil
	})
	huma.Register(api, op("reset-breaker", http.MethodPost, "/v1/admin/breakers/{name}/reset", "Close a breaker on every instance", 401, 403, 503), func(ctx context.Context, in *breakerPath) (*struct{}, error) {
		p, err := v.platform(ctx)
		if err != nil {
			return nil, err
		}
		if err := v.Breakers.Reset(ctx, in.Name); err != nil {
			return nil, v.humaError(err)
		}
		v.audit(ctx, p, p.TenantID, "breaker.reset", in.Name, "")
		return nil, nil
	})
}

// retryHeaders adds Retry-After to the answer for an error refused by an
// open breaker.
func retryHeaders(err error, out error) error {
	if d := breaker.RetryAfter(err); d > 0 {
		h := http.Header{}
		h.Set("Retry-After", strconv.Itoa(int((d+999_999_999)/1_000_000_000)))
		return huma.ErrorWithHeaders(out, h)
	}
	return out
}
