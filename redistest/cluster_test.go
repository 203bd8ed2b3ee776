package redistest_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/rueidis"

	"github.com/agentapi-mt/agentapi/redistest"
)

// clusterClient is a rueidis cluster client for c, closed when t ends.
func clusterClient(t *testing.T, c *redistest.Cluster) rueidis.Client {
	t.Helper()
	opt, err := rueidis.ParseURL(c.URL())
	if err != nil {
		t.Fatalf("ParseURL(%q): %v", c.URL(), err)
	}
	client := newClient(t, opt)
	if client.Mode() != rueidis.ClientModeCluster {
		t.Fatalf("rueidis client mode = %v, want cluster", client.Mode())
	}
	return client
}

func TestStartCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	nodes := c.Nodes()
	if len(nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(nodes))
	}
	seen := map[string]bool{}
	for _, n := range nodes {
		if seen[n.Addr()] || n.Pid() <= 0 {
			t.Fatalf("nodes %v: duplicate address or no process", c.Addrs())
		}
		seen[n.Addr()] = true
	}
	if c.URL() != "redis://"+nodes[0].Addr() {
		t.Fatalf("URL = %q, want the first node's", c.URL())
	}

	// Every node is a master with one third of the slots, and says so.
	for i, n := range nodes {
		conn, r := dial(t, n.Addr(), nil)
		mustReply(t, conn, r, "+PONG", "PING")
		lo := i * 16384 / 3
		got, err := send(t, conn, r, "CLUSTER", "COUNTKEYSINSLOT", strconv.Itoa(lo))
		if err != nil || got != ":0" {
			t.Fatalf("node %d: COUNTKEYSINSLOT %d = %q, %v", i, lo, got, err)
		}
		mustReply(t, conn, r, "*3", "ROLE") // master: ["master", offset, replicas]
	}

	// A cluster client spreads keys over all three nodes; a hash tag keeps
	// keys together; a node answers MOVED for a slot it does not serve.
	client := clusterClient(t, c)
	const n = 60
	for i := range n {
		k := fmt.Sprintf("key-%d", i)
		if err := client.Do(ctx(t), client.B().Set().Key(k).Value("v").Build()).Error(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
	total := 0
	for i, node := range nodes {
		conn, r := dial(t, node.Addr(), nil)
		got, err := send(t, conn, r, "DBSIZE")
		size, _ := strconv.Atoi(strings.TrimPrefix(got, ":"))
		if err != nil || size == 0 {
			t.Errorf("node %d holds %q keys (%v): keys are not spread", i, got, err)
		}
		total += size
	}
	if total != n {
		t.Errorf("nodes hold %d keys in all, want %d", total, n)
	}
	multi := client.B().Mset().KeyValue().KeyValue("{t:x}:a", "1").KeyValue("{t:x}:b", "2").Build()
	if err := client.Do(ctx(t), multi).Error(); err != nil {
		t.Fatalf("MSET of one hash tag: %v", err)
	}
	conn, r := dial(t, nodes[0].Addr(), nil)
	moved := 0
	for i := range n {
		got, err := send(t, conn, r, "GET", fmt.Sprintf("key-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(got, "-MOVED ") {
			moved++
		}
	}
	if moved == 0 || moved == n {
		t.Errorf("node 0 answered MOVED for %d of %d keys", moved, n)
	}

	// A killed node comes back with its slots (nodes.conf is kept), and
	// the cluster is whole again. (The client is closed first: one whose
	// connection breaks re-reads the slot map a moment later, from a
	// goroutine goleak would report.)
	client.Close()
	node := nodes[1]
	node.Stop(t)
	node.Restart(t)
	c.WaitReady(t)
	client = clusterClient(t, c)
	for i := range n {
		if err := client.Do(ctx(t), client.B().Set().Key(fmt.Sprintf("key-%d", i)).Value("again").Build()).Error(); err != nil {
			t.Fatalf("SET after the restart: %v", err)
		}
	}
}

func TestStartClusterPassword(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 2, Password: "pw"})
	if len(c.Nodes()) != 2 {
		t.Fatalf("%d nodes, want 2", len(c.Nodes()))
	}
	if !strings.HasPrefix(c.URL(), "redis://:pw@") {
		t.Fatalf("URL = %q, want the password in it", c.URL())
	}
	conn, r := dial(t, c.Nodes()[1].Addr(), nil)
	if got, _ := send(t, conn, r, "PING"); !strings.HasPrefix(got, "-NOAUTH") {
		t.Fatalf("unauthenticated PING: %q, want -NOAUTH", got)
	}
	client := clusterClient(t, c)
	for i := range 20 {
		if err := client.Do(ctx(t), client.B().Incr().Key(strconv.Itoa(i)).Build()).Error(); err != nil {
			t.Fatalf("INCR: %v", err)
		}
	}
}

func TestClusterURLFromEnv(t *testing.T) {
	t.Setenv("REDIS_TEST_CLUSTER_URL", "redis://shared.example:7000?addr=shared.example:7001")
	if got := redistest.ClusterURL(t); got != "redis://shared.example:7000?addr=shared.example:7001" {
		t.Fatalf("ClusterURL = %q, want REDIS_TEST_CLUSTER_URL", got)
	}
}
