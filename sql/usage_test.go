package sql

import (
	"testing"

	"github.com/agentapi-mt/agentapi/storetest"
	"github.com/agentapi-mt/agentapi/usage"
)

func TestUsageConformance(t *testing.T) {
	t.Parallel()
	both(t, func(t *testing.T, newURL func(*testing.T) string, driver string) {
		storetest.RunUsageDB(t, func(t *testing.T) usage.DB {
			if driver == DriverSQLite {
				return openSQLiteTemp(t)
			}
			return open(t, newURL(t), "")
		})
	})
}
