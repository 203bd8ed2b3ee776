package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/internal/testproc"
)

// ClusterStartTimeout bounds how long StartCluster waits for the nodes to
// agree that the cluster is up (gossip between nodes runs every 100ms; on
// an idle machine three masters agree within about two seconds).
const ClusterStartTimeout = 30 * time.Second

// slots is the number of Redis Cluster hash slots.
const slots = 16384

// ClusterOptions configures a cluster started by StartCluster.
type ClusterOptions struct {
	// Masters is the number of master nodes, 3 when zero.
	Masters int
	// Replicas is the number of replicas of each master (0: none).
	Replicas int
	// NodeTimeout is --cluster-node-timeout: how long a node may be
	// unreachable before the others deem it failed and, if it is a master
	// with a replica, promote the replica. Default 15s (Redis's own), so
	// that a loaded machine causes no false failure.
	NodeTimeout time.Duration
	// Password, when set, is every node's --requirepass.
	Password string
}

// Cluster is a Redis Cluster of throwaway nodes owned by a test.
type Cluster struct {
	nodes    []*Server // the masters, in the order of their slot ranges
	replicas []*Server // replicas[i*Replicas+j] is replica j of nodes[i]
	password string
}

// ClusterURL returns the value of REDIS_TEST_CLUSTER_URL when it is set.
// Otherwise it starts a private three-master cluster via StartCluster and
// returns its URL. Callers that may run against a shared cluster must
// namespace their keys.
func ClusterURL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv("REDIS_TEST_CLUSTER_URL"); u != "" {
		return u
	}
	return StartCluster(t, ClusterOptions{}).URL()
}

// StartCluster starts o.Masters redis-server processes in cluster mode
// (--cluster-enabled yes, each with its own directory, nodes.conf, port
// and cluster bus port, persisting nothing), splits the 16384 slots between
// them in equal ranges, joins them, and returns once every node reports
// cluster_state:ok, knows every node and sees every slot served. The nodes
// are killed at test cleanup, like servers from Start.
//
// The join is done over RESP (CLUSTER ADDSLOTSRANGE, SET-CONFIG-EPOCH,
// MEET), as `redis-cli --cluster create --cluster-replicas 0` would do it,
// so redis-cli is not needed; redis-server must be 7.0 or later
// (--cluster-port, ADDSLOTSRANGE).
func StartCluster(t testing.TB, o ClusterOptions) *Cluster {
	t.Helper()
	if o.Masters <= 0 {
		o.Masters = 3
	}
	if o.NodeTimeout <= 0 {
		o.NodeTimeout = 15 * time.Second
	}
	c := &Cluster{password: o.Password}
	for range o.Masters {
		c.nodes = append(c.nodes, start(t, Options{Password: o.Password}, o.NodeTimeout))
	}
	for range o.Masters * max(o.Replicas, 0) {
		c.replicas = append(c.replicas, start(t, Options{Password: o.Password}, o.NodeTimeout))
	}
	if err := c.join(); err != nil {
		t.Fatalf("redistest: forming a cluster of %s: %v%s", strings.Join(c.Addrs(), ", "), err, c.logTails())
	}
	if err := c.attachReplicas(o.Replicas); err != nil {
		t.Fatalf("redistest: attaching replicas: %v%s", err, c.logTails())
	}
	c.WaitReady(t)
	return c
}

// attachReplicas makes replicas[i*per+j] a replica of nodes[i], once it
// has learned of its master through gossip.
func (c *Cluster) attachReplicas(per int) error {
	if len(c.replicas) == 0 {
		return nil
	}
	for i, m := range c.nodes {
		id, err := c.command(m, "CLUSTER", "MYID")
		if err != nil {
			return err
		}
		for j := range per {
			r := c.replicas[i*per+j]
			deadline := time.Now().Add(ClusterStartTimeout)
			for {
				_, err := c.command(r, "CLUSTER", "REPLICATE", id)
				if err == nil {
					break
				}
				if time.Now().After(deadline) { // "Unknown node" until gossip arrives
					return fmt.Errorf("%s: %w", r.Addr(), err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	return nil
}

// WaitReady waits, up to ClusterStartTimeout, until every node reports
// cluster_state:ok, knows every node and sees all 16384 slots served, as
// after a node was restarted; it fails the test otherwise.
func (c *Cluster) WaitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(ClusterStartTimeout)
	for {
		err := c.ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: cluster %s not ready within %v: %v%s", strings.Join(c.Addrs(), ", "), ClusterStartTimeout, err, c.logTails())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Nodes returns the cluster's nodes, in the order of the slot ranges they
// were given (node 0 serves slots 0 to about 16384/Masters). A node can be
// stopped and restarted: it comes back with its id and slots (nodes.conf
// survives) but no data.
func (c *Cluster) Nodes() []*Server { return append([]*Server(nil), c.nodes...) }

// Replicas returns the replicas: Replicas()[i*per+j] is replica j of
// Nodes()[i] as the cluster was started (a failover may since have
// promoted it).
func (c *Cluster) Replicas() []*Server { return append([]*Server(nil), c.replicas...) }

// Addrs returns every master's "127.0.0.1:PORT", as started.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.Addr()
	}
	return out
}

// URL returns "redis://127.0.0.1:PORT" (with ":PASSWORD@" user info when a
// password is set) for the first node. One node is enough for a cluster
// client, which reads the others from it. (More seeds could be named with
// addr=host:port query parameters, which rueidis.ParseURL reads; rueidis
// then dials them all at once and the duplicate connections are closed by
// a goroutine that lingers five seconds, which goleak would report.)
func (c *Cluster) URL() string {
	return c.nodes[0].URL()
}

// slotRange is the first and last slot of node i of n.
func slotRange(i, n int) (int, int) {
	return i * slots / n, (i+1)*slots/n - 1
}

// join assigns the slots and introduces every node to the first one.
func (c *Cluster) join() error {
	for i, n := range c.nodes {
		lo, hi := slotRange(i, len(c.nodes))
		if _, err := c.command(n, "CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(lo), strconv.Itoa(hi)); err != nil {
			return fmt.Errorf("%s: %w", n.Addr(), err)
		}
		// Distinct epochs up front, as redis-cli does, so that the nodes
		// need not resolve a collision first.
		if _, err := c.command(n, "CLUSTER", "SET-CONFIG-EPOCH", strconv.Itoa(i+1)); err != nil {
			return fmt.Errorf("%s: %w", n.Addr(), err)
		}
	}
	for _, n := range append(c.nodes[1:], c.replicas...) {
		if _, err := c.command(c.nodes[0], "CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(n.port), strconv.Itoa(n.busPort)); err != nil {
			return fmt.Errorf("%s: %w", c.nodes[0].Addr(), err)
		}
	}
	return nil
}

// ready reports why the cluster is not usable yet, or nil: every node must
// say cluster_state:ok with every slot served and every node known, and
// every replica must be linked to its master.
func (c *Cluster) ready() error {
	want := map[string]string{
		"cluster_state":       "ok",
		"cluster_slots_ok":    strconv.Itoa(slots),
		"cluster_known_nodes": strconv.Itoa(len(c.nodes) + len(c.replicas)),
	}
	for _, r := range c.replicas {
		if r.Pid() == 0 {
			continue // stopped by the test
		}
		info, err := c.command(r, "INFO", "replication")
		if err != nil {
			return fmt.Errorf("%s: INFO replication: %w", r.Addr(), err)
		}
		if !strings.Contains(info, "master_link_status:up") && !strings.Contains(info, "role:master") {
			return fmt.Errorf("%s: the replica's link to its master is not up", r.Addr())
		}
	}
	for _, n := range append(c.Nodes(), c.replicas...) {
		if n.Pid() == 0 {
			continue // stopped by the test
		}
		info, err := c.command(n, "CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("%s: CLUSTER INFO: %w", n.Addr(), err)
		}
		got := map[string]string{}
		for _, line := range strings.Split(info, "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
				got[k] = v
			}
		}
		for k, v := range want {
			if got[k] != v {
				return fmt.Errorf("%s: %s:%s, want %s", n.Addr(), k, got[k], v)
			}
		}
	}
	return nil
}

func (c *Cluster) logTails() string {
	var b strings.Builder
	for _, n := range append(c.Nodes(), c.replicas...) {
		fmt.Fprintf(&b, "\n--- tail of %s ---\n%s", n.logPath, testproc.LogTail(n.logPath, 0, 15))
	}
	return b.String()
}

// command runs one command on node n over a fresh plain-text connection
// (authenticating first when the cluster has a password) and returns its
// reply: a simple or bulk string, or an integer, as text.
func (c *Cluster) command(n *Server, args ...string) (string, error) {
	var out string
	err := c.session(n, func(conn net.Conn, r *bufio.Reader) (err error) {
		out, err = call(conn, r, args...)
		return err
	})
	return out, err
}

// commandList is command for a reply that is an array of bulk strings.
func (c *Cluster) commandList(n *Server, args ...string) ([]string, error) {
	var out []string
	err := c.session(n, func(conn net.Conn, r *bufio.Reader) error {
		if err := send(conn, args); err != nil {
			return err
		}
		head, err := readLine(r, args[0])
		if err != nil {
			return err
		}
		count, err := strconv.Atoi(strings.TrimPrefix(head, "*"))
		if !strings.HasPrefix(head, "*") || err != nil {
			return fmt.Errorf("%s: unexpected reply %q", args[0], head)
		}
		for range count {
			line, err := readLine(r, args[0])
			if err != nil {
				return err
			}
			v, err := readBulk(r, args[0], line)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return nil
	})
	return out, err
}

// session dials node n, authenticates when the cluster has a password,
// and runs fn on the connection.
func (c *Cluster) session(n *Server, fn func(net.Conn, *bufio.Reader) error) error {
	conn, err := net.DialTimeout("tcp", n.Addr(), time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	if c.password != "" {
		if _, err := call(conn, r, "AUTH", c.password); err != nil {
			return err
		}
	}
	return fn(conn, r)
}

// send writes one RESP command.
func send(w io.Writer, args []string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// readLine reads one reply line, without its CRLF; an error reply is an
// error.
func readLine(r *bufio.Reader, cmd string) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case line == "":
		return "", errors.New("empty reply")
	case line[0] == '-':
		return "", fmt.Errorf("%s: %s", cmd, line[1:])
	}
	return line, nil
}

// readBulk reads the body of the bulk string whose header is line.
func readBulk(r *bufio.Reader, cmd, line string) (string, error) {
	size, err := strconv.Atoi(strings.TrimPrefix(line, "$"))
	if !strings.HasPrefix(line, "$") || err != nil || size < 0 {
		return "", fmt.Errorf("%s: unexpected reply %q", cmd, line)
	}
	buf := make([]byte, size+2)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", err
	}
	return string(buf[:size]), nil
}

// call writes one RESP command and reads a scalar reply.
func call(w io.Writer, r *bufio.Reader, args ...string) (string, error) {
	if err := send(w, args); err != nil {
		return "", err
	}
	line, err := readLine(r, args[0])
	if err != nil {
		return "", err
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '$':
		return readBulk(r, args[0], line)
	}
	return "", fmt.Errorf("%s: unexpected reply %q", args[0], line)
}

// MoveSlot moves slot, and the keys in it, to node to (an index into
// Nodes) while the cluster serves, the way redis-cli --cluster reshard
// does: the target imports, the owner migrates, the keys go over with
// MIGRATE in batches, and every node is told the new owner. Clients get
// ASK replies while the slot moves and MOVED ones afterwards.
func (c *Cluster) MoveSlot(t testing.TB, slot, to int) {
	t.Helper()
	if err := c.moveSlot(slot, to); err != nil {
		t.Fatalf("redistest: moving slot %d to node %d: %v%s", slot, to, err, c.logTails())
	}
}

func (c *Cluster) moveSlot(slot, to int) error {
	s := strconv.Itoa(slot)
	ids := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		id, err := c.command(n, "CLUSTER", "MYID")
		if err != nil {
			return err
		}
		ids[i] = id
	}
	owner, err := c.slotOwner(c.nodes[to], slot)
	if err != nil {
		return err
	}
	from := slices.Index(ids, owner)
	if from < 0 || from == to {
		return fmt.Errorf("node %d already serves it", to)
	}
	src, dst := c.nodes[from], c.nodes[to]
	if _, err := c.command(dst, "CLUSTER", "SETSLOT", s, "IMPORTING", ids[from]); err != nil {
		return err
	}
	if _, err := c.command(src, "CLUSTER", "SETSLOT", s, "MIGRATING", ids[to]); err != nil {
		return err
	}
	for {
		keys, err := c.commandList(src, "CLUSTER", "GETKEYSINSLOT", s, "100")
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			break
		}
		args := []string{"MIGRATE", "127.0.0.1", strconv.Itoa(dst.port), "", "0", "5000"}
		if c.password != "" {
			args = append(args, "AUTH", c.password)
		}
		if _, err := c.command(src, append(append(args, "KEYS"), keys...)...); err != nil {
			return err
		}
	}
	// The new owner first, then the old one, then the others (as redis-cli).
	order := []*Server{dst, src}
	for i, n := range c.nodes {
		if i != from && i != to {
			order = append(order, n)
		}
	}
	for _, n := range order {
		if _, err := c.command(n, "CLUSTER", "SETSLOT", s, "NODE", ids[to]); err != nil {
			return err
		}
	}
	return nil
}

// slotOwner asks node n which node id serves slot (CLUSTER NODES).
func (c *Cluster) slotOwner(n *Server, slot int) (string, error) {
	nodes, err := c.command(n, "CLUSTER", "NODES")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(nodes, "\n") {
		f := strings.Fields(line)
		for _, r := range f[min(len(f), 8):] {
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			l, err1 := strconv.Atoi(lo)
			h, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil && slot >= l && slot <= h {
				return f[0], nil
			}
		}
	}
	return "", fmt.Errorf("no node serves slot %d", slot)
}
