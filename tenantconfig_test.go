package agentapi_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/agentapi-mt/agentapi"
)

func TestPercentRolloutIsStableAndCloseToTheShare(t *testing.T) {
	const users = 10000
	for _, pct := range []int{1, 10, 30, 50, 90} {
		f := agentapi.Flag{Enabled: true, Percent: &pct}
		on := 0
		for i := range users {
			u := fmt.Sprintf("usr_%d", i)
			got := f.On("beta", "tenant-a", u)
			if got != f.On("beta", "tenant-a", u) {
				t.Fatalf("user %s flips between evaluations", u)
			}
			if got {
				on++
			}
		}
		share := float64(on) / users * 100
		// The standard deviation of a binomial share over 10,000 users is at
		// most 0.5 points; 2 points is four of them.
		if math.Abs(share-float64(pct)) > 2 {
			t.Errorf("percent %d: %.2f%% of users are in", pct, share)
		}
	}
}

func TestRaisingThePercentOnlyAddsUsers(t *testing.T) {
	low, high := 20, 60
	lo, hi := agentapi.Flag{Enabled: true, Percent: &low}, agentapi.Flag{Enabled: true, Percent: &high}
	for i := range 5000 {
		u := fmt.Sprintf("usr_%d", i)
		if lo.On("beta", "t", u) && !hi.On("beta", "t", u) {
			t.Fatalf("user %s is in at %d%% but out at %d%%", u, low, high)
		}
	}
}

func TestFlagEdges(t *testing.T) {
	zero, all := 0, 100
	cases := []struct {
		f    agentapi.Flag
		want bool
	}{
		{agentapi.Flag{}, false},
		{agentapi.Flag{Enabled: true}, true},
		{agentapi.Flag{Enabled: true, Percent: &zero}, false},
		{agentapi.Flag{Enabled: true, Percent: &all}, true},
		{agentapi.Flag{Enabled: false, Percent: &all}, false},
	}
	for _, c := range cases {
		for i := range 100 {
			if got := c.f.On("x", "t", fmt.Sprint(i)); got != c.want {
				t.Fatalf("%+v for user %d: %v", c.f, i, got)
			}
		}
	}
}

func TestBucketsDifferPerFlagAndTenant(t *testing.T) {
	same := 0
	for i := range 1000 {
		u := fmt.Sprint(i)
		if agentapi.RolloutBucket("a", "t", u) == agentapi.RolloutBucket("b", "t", u) {
			same++
		}
	}
	if same > 40 { // 1% expected by chance
		t.Fatalf("flags a and b put %d of 1000 users in the same bucket", same)
	}
}
