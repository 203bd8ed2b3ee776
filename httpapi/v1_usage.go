package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/usage"
)

type usageQuery struct {
	From string `query:"from" doc:"First day, YYYY-MM-DD (UTC), included. Default: no bound." example:"2026-11-01"`
	To   string `query:"to" doc:"Last day, YYYY-MM-DD (UTC), included. Default: no bound." example:"2026-11-30"`
	User string `query:"user" maxLength:"100" doc:"Only this user's counts (admins; members always see only their own)."`
}

type adminUsageQuery struct {
	usageQuery
	Tenant string `query:"tenant" maxLength:"100" doc:"Only this tenant. Default: every tenant."`
}

// UsageRow is one counter of a usage report.
type UsageRow struct {
	TenantID string `json:"tenant_id"`
	UserID   string `json:"user_id"`
	Day      string `json:"day"`
	Metric   string `json:"metric" enum:"requests,messages,session_seconds,upload_bytes,rate_limited"`
	Count    int64  `json:"count"`
}

type usageBody struct {
	Body struct {
		From   string           `json:"from,omitempty"`
		To     string           `json:"to,omitempty"`
		Rows   []UsageRow       `json:"rows" nullable:"false"`
		Totals map[string]int64 `json:"totals" nullable:"false" doc:"Sum of each metric over the rows."`
	}
}

func (v *V1) usageRoutes(api huma.API) {
	if v.Usage == nil {
		return
	}
	report := func(ctx context.Context, tenant, user string, q usageQuery) (*usageBody, error) {
		rows, err := v.Usage.Report(ctx, usage.Query{TenantID: tenant, From: q.From, To: q.To})
		if err != nil {
			return nil, v.humaError(err)
		}
		out := &usageBody{}
		out.Body.From, out.Body.To = q.From, q.To
		out.Body.Rows = []UsageRow{}
		out.Body.Totals = map[string]int64{}
		for _, m := range usage.Metrics {
			out.Body.Totals[string(m)] = 0
		}
		for _, r := range rows {
			if user != "" && r.UserID != user {
				continue
			}
			out.Body.Rows = append(out.Body.Rows, UsageRow{TenantID: r.TenantID, UserID: r.UserID, Day: r.Day, Metric: string(r.Metric), Count: r.Count})
			out.Body.Totals[string(r.Metric)] += r.Count
		}
		return out, nil
	}
	huma.Register(api, op("get-usage", http.MethodGet, "/v1/usage", "Your tenant's usage per user and day (members: their own); exact, including counts not yet in the database", 400, 401, 503), func(ctx context.Context, in *usageQuery) (*usageBody, error) {
		p, err := v.principal(ctx)
		if err != nil {
			return nil, err
		}
		user := in.User
		if p.Role != agentapi.RoleAdmin && !p.Platform() {
			user = p.UserID
		}
		return report(ctx, p.TenantID, user, *in)
	})
	huma.Register(api, op("get-admin-usage", http.MethodGet, "/v1/admin/usage", "Usage across tenants (platform admins)", 400, 401, 403, 503), func(ctx context.Context, in *adminUsageQuery) (*usageBody, error) {
		if _, err := v.platform(ctx); err != nil {
			return nil, err
		}
		return report(ctx, in.Tenant, in.User, in.usageQuery)
	})
}
