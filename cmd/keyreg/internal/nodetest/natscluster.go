package nodetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var natsServerBinary built

// NATSServerBinary builds the nats-server binary once per test binary, from the version
// of github.com/nats-io/nats-server/v2 that keyreg's go.mod requires, and returns its path.
func NATSServerBinary(t testing.TB) string {
	t.Helper()
	return natsServerBinary.get(t, "github.com/nats-io/nats-server/v2", "nats-server")
}

// NATSCluster is a JetStream cluster of nats-server processes (NATSServerBinary) on
// 127.0.0.1: each with client, route and monitoring ports chosen at run time and its own
// store in a t.TempDir(). A server can be killed with SIGKILL and started again on the
// same ports and store. Every server still running is killed at the end of the test.
type NATSCluster struct {
	T       testing.TB
	Servers []*NATSServer
}

// NATSServer is one server of a NATSCluster.
type NATSServer struct {
	Name      string      // its server name in the cluster, n1, n2, ...
	ClientURL string      // nats://127.0.0.1:port
	Output    *SyncBuffer // what it printed, over all its runs

	config     string // its configuration file
	monitorURL string // http://127.0.0.1:port, for /healthz

	mu     sync.Mutex
	cmd    *exec.Cmd     // nil while not running
	exited chan struct{} // closed when cmd has exited
}

// StartNATSCluster starts a JetStream cluster of n nats-server processes and waits until
// each reports itself healthy (GET /healthz: JetStream up, a meta leader known).
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	bin := NATSServerBinary(t)
	c := &NATSCluster{T: t}
	ports := freePorts(t, 3*n)
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+1]))
	}
	for i := range n {
		s := &NATSServer{
			Name:       fmt.Sprintf("n%d", i+1),
			ClientURL:  fmt.Sprintf("nats://127.0.0.1:%d", ports[3*i]),
			Output:     &SyncBuffer{},
			monitorURL: fmt.Sprintf("http://127.0.0.1:%d", ports[3*i+2]),
		}
		dir := t.TempDir()
		s.config = filepath.Join(dir, "nats-server.conf")
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
}
cluster {
  name: keyreg-test
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, s.Name, ports[3*i], ports[3*i+2], filepath.Join(dir, "jetstream"), ports[3*i+1], strings.Join(routes, ", "))
		if err := os.WriteFile(s.config, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		c.Servers = append(c.Servers, s)
	}
	// Registered after the stores' t.TempDir(), so that it runs before they are removed.
	t.Cleanup(c.killAll)
	for _, s := range c.Servers {
		s.start(t, bin)
	}
	for i := range c.Servers {
		c.WaitHealthy(i)
	}
	return c
}

// URL returns the client URLs of every server, comma-separated, as --nats-url and
// nats.Connect take them.
func (c *NATSCluster) URL() string {
	urls := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		urls[i] = s.ClientURL
	}
	return strings.Join(urls, ",")
}

// Kill kills server i with SIGKILL and waits until it is gone.
func (c *NATSCluster) Kill(i int) {
	c.T.Helper()
	if err := c.Servers[i].kill(); err != nil {
		c.T.Fatal(err)
	}
}

// Restart starts server i again, killed before, on the same ports and store, and waits
// until it reports itself healthy (its streams caught up). A server started while most
// others are down is not healthy until they are back: start those first with Start.
func (c *NATSCluster) Restart(i int) {
	c.T.Helper()
	c.Start(i)
	c.WaitHealthy(i)
}

// Start starts server i again, killed before, on the same ports and store, and does not
// wait.
func (c *NATSCluster) Start(i int) {
	c.T.Helper()
	c.Servers[i].start(c.T, NATSServerBinary(c.T))
}

// WaitHealthy waits until server i answers GET /healthz with 200, at most StartTimeout.
func (c *NATSCluster) WaitHealthy(i int) {
	c.T.Helper()
	s := c.Servers[i]
	deadline := time.Now().Add(StartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", s.monitorURL+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		if err == nil && resp.StatusCode == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			c.T.Fatalf("nats-server %s not healthy within %s (%v): %s", s.Name, StartTimeout, err, s.Output.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StreamLeader returns the index of the server that leads stream now.
func (c *NATSCluster) StreamLeader(ctx context.Context, stream string) (int, error) {
	nc, err := nats.Connect(c.URL())
	if err != nil {
		return -1, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return -1, err
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return -1, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return -1, err
	}
	if info.Cluster != nil {
		for i, s := range c.Servers {
			if s.Name == info.Cluster.Leader {
				return i, nil
			}
		}
	}
	return -1, fmt.Errorf("stream %s has no leader now", stream)
}

// killAll kills every server still running.
func (c *NATSCluster) killAll() {
	for _, s := range c.Servers {
		if err := s.kill(); err != nil {
			c.T.Error(err)
		}
	}
}

func (s *NATSServer) start(t testing.TB, bin string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		t.Fatalf("nats-server %s is already running", s.Name)
	}
	cmd := exec.Command(bin, "-c", s.config)
	cmd.Stdout, cmd.Stderr = s.Output, s.Output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
}

// kill kills the server with SIGKILL, if running, and waits until it has exited.
func (s *NATSServer) kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-s.exited:
	case <-time.After(StopTimeout):
		return errors.New("nats-server " + s.Name + " still there " + StopTimeout.String() + " after SIGKILL")
	}
	s.cmd = nil
	return nil
}

// freePorts returns n distinct TCP ports of 127.0.0.1 that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}
