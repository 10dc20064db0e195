package nodetest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ClusterOptions changes how StartCluster runs an embedded cluster.
type ClusterOptions struct {
	Nodes int // how many keyreg serve processes; 0 means 3
	// Args are more flags for every node's serve (later ones win over the defaults of
	// StartBinaryWith and the cluster flags); NodeArgs, when set, adds flags of node i.
	Args     []string
	NodeArgs func(i int) []string
	// Hold lists nodes that StartCluster leaves stopped, for the test to start with Start.
	// With any held, StartCluster returns once the other processes run, without waiting for
	// them to serve (on a first start they wait for the held ones), and Root is empty.
	Hold []int
	// Prepare, when set, runs on each node's new, empty data dir before any node starts
	// (to restore a backup into it, say).
	Prepare func(i int, dataDir string)
	// Root, when set, is the root secret of the registry the nodes' data dirs already hold
	// (restored by Prepare): StartCluster then fails the test if a node makes a root key.
	Root string
}

// Cluster is a set of `keyreg serve` processes (the real binary) whose embedded NATS
// servers form one JetStream cluster on 127.0.0.1: --cluster-name, --cluster-listen on a
// route port chosen at run time, and --cluster-peers naming every node's route URL.
type Cluster struct {
	T     testing.TB
	Name  string
	Peers []string // nats-route://127.0.0.1:PORT of every node, in node order
	Nodes []*Node  // the running process of each node (a killed one stays until Start)
	// Root is the root secret, from the bootstrap key file of the one node that made the
	// root key at the first start (StartCluster fails unless exactly one wrote one).
	Root string

	data []string   // each node's data dir
	args [][]string // each node's serve arguments
	keys []string   // each node's latest bootstrap key file
	http []string   // each node's HTTP address, chosen at run time: known before it serves
}

// StartCluster starts o.Nodes embedded-cluster nodes at once on fresh data dirs, waits
// until each serves and is ready (/readyz), and stops them at the end of the test: SIGTERM
// to all at once, SIGKILL to any that has not ended within StopTimeout.
func StartCluster(t testing.TB, o ClusterOptions) *Cluster {
	t.Helper()
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	c := &Cluster{T: t, Name: "kr-test"}
	all := freePorts(t, 2*o.Nodes)
	ports := all[:o.Nodes]
	for _, p := range ports {
		c.Peers = append(c.Peers, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	for i, p := range ports {
		c.http = append(c.http, fmt.Sprintf("127.0.0.1:%d", all[o.Nodes+i]))
		args := []string{"--cluster-name", c.Name, "--cluster-listen", fmt.Sprintf("127.0.0.1:%d", p),
			"--cluster-peers", strings.Join(c.Peers, ","), "--node-name", fmt.Sprintf("n%d", i+1)}
		args = append(args, o.Args...)
		if o.NodeArgs != nil {
			args = append(args, o.NodeArgs(i)...)
		}
		c.data = append(c.data, t.TempDir())
		c.args = append(c.args, args)
		c.keys = append(c.keys, "")
		c.Nodes = append(c.Nodes, nil)
	}
	if o.Prepare != nil {
		for i, dir := range c.data {
			o.Prepare(i, dir)
		}
	}
	t.Cleanup(c.stopAll)
	exits := make([]<-chan struct{}, o.Nodes)
	for i := range c.Nodes {
		if !slices.Contains(o.Hold, i) {
			exits[i] = c.launch(i)
		}
	}
	if len(o.Hold) > 0 {
		return c
	}
	for i, n := range c.Nodes {
		n.Addr = waitAddr(t, n.Output, exits[i])
		n.URL = "http://" + n.Addr
	}
	for _, n := range c.Nodes {
		n.WaitReady()
	}
	if o.Root != "" {
		for i, f := range c.keys {
			if _, err := os.Stat(f); err == nil {
				t.Fatalf("node %d made a root key on a registry that has one", i+1)
			}
		}
		c.Root = o.Root
		for _, n := range c.Nodes {
			n.Root = c.Root
		}
		return c
	}
	c.SetRoot()
	return c
}

// launch starts node i's process and returns a channel closed when it ends.
func (c *Cluster) launch(i int) <-chan struct{} {
	t := c.T
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "root.key")
	c.keys[i] = keyFile
	args := []string{"serve", "--data", c.data[i], "--http", c.http[i], "--nats-listen", "", "--bootstrap-key-file", keyFile,
		"--seal-every-events", "-1", "--seal-interval", "-1s"}
	out := &SyncBuffer{}
	cmd := exec.Command(Binary(t), append(args, c.args[i]...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	n := &Node{T: t, DataDir: c.data[i], Output: out, HTTP: httpClient(nil), Pid: cmd.Process.Pid, Addr: c.http[i], URL: "http://" + c.http[i]}
	n.stopFn = func(sig os.Signal) error {
		cmd.Process.Signal(sig)
		select {
		case <-exited:
			return waitErr
		case <-time.After(StopTimeout):
			cmd.Process.Kill()
			<-exited
			return errors.New("keyreg serve did not stop within " + StopTimeout.String() + " of " + sig.String())
		}
	}
	n.Root = c.Root
	c.Nodes[i] = n
	return exited
}

// stopAll sends SIGTERM to every node at once and waits for them; a node still running
// after StopTimeout is killed, which the test log says with its output.
func (c *Cluster) stopAll() {
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		if n == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.Stop(); err != nil && !isKilled(err) {
				c.T.Logf("node %d at the end of the test: %v\n%s", i+1, err, n.Output.String())
			}
		}()
	}
	wg.Wait()
}

// isKilled reports whether err is the exit of a process ended by SIGKILL (Kill).
func isKilled(err error) bool {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
	}
	return false
}

// Kill ends node i with SIGKILL (no shutdown at all) and waits until it is gone.
func (c *Cluster) Kill(i int) {
	c.T.Helper()
	if err := c.Nodes[i].StopWith(syscall.SIGKILL); err != nil && !isKilled(err) {
		c.T.Fatalf("kill node %d: %v", i+1, err)
	}
}

// Start starts node i (again, on its data dir and with its flags, once it has stopped:
// Kill, or Stop; or for the first time, when StartCluster held it), and returns it as soon
// as it serves (its views may not be ready yet: see Node.WaitReady).
func (c *Cluster) Start(i int) *Node {
	c.T.Helper()
	exited := c.launch(i)
	n := c.Nodes[i]
	n.Addr = waitAddr(c.T, n.Output, exited)
	n.URL = "http://" + n.Addr
	return n
}

// SetRoot sets Root from the bootstrap key files of the nodes' latest starts (as
// StartCluster does), once every node has bootstrapped: it fails the test unless exactly
// one node wrote one.
func (c *Cluster) SetRoot() {
	c.T.Helper()
	c.Root = c.rootFile()
	for _, n := range c.Nodes {
		if n != nil {
			n.Root = c.Root
		}
	}
}

// rootFile returns the root secret in the bootstrap key file of the nodes' latest starts,
// and fails the test unless exactly one node wrote one.
func (c *Cluster) rootFile() string {
	c.T.Helper()
	var roots []string
	for _, f := range c.keys {
		if b, err := os.ReadFile(f); err == nil {
			roots = append(roots, strings.TrimSpace(string(b)))
		}
	}
	if len(roots) != 1 {
		c.T.Fatalf("%d nodes wrote a root key file, want exactly 1", len(roots))
	}
	return roots[0]
}
