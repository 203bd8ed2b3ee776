package kvtest

import "go.uber.org/goleak"

// IgnoreClusterClient lists, for goleak.VerifyTestMain, the goroutines
// rueidis's cluster client leaves behind for a moment after a test: it
// closes connections it no longer needs (a second one to a seed node, one
// to a node that was down) five seconds later, and re-reads the slot map
// up to a second after a connection broke. Packages whose tests use a
// Redis Cluster pass these.
func IgnoreClusterClient() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"),
	}
}
