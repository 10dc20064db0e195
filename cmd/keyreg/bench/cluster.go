package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

// ClusterOptions size a `keyreg bench --cluster` run.
type ClusterOptions struct {
	Exe     string // the keyreg binary; "" for os.Executable()
	Dir     string // the nodes' data dirs go under it
	Nodes   int    // nodes of the cluster; 0 means 3
	Clients int    // concurrent writers; 0 means 64
	Keys    int    // keys the writers update; 0 means 256
	Writes  int    // writes of each run; 0 means 2000
	// PauseClients write steadily while the stream leader is killed; 0 means 16.
	PauseClients int
	// Log, when set, receives the children's output.
	Log io.Writer
}

func (o *ClusterOptions) defaults() {
	for _, d := range []struct {
		v   *int
		def int
	}{{&o.Nodes, 3}, {&o.Clients, 64}, {&o.Keys, 256}, {&o.Writes, 2000}, {&o.PauseClients, 16}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// ClusterReport is what RunCluster reports: write figures (a Result) or single figures
// such as the leader-election pause (a Figure).
type ClusterReport struct {
	Result *HTTPResult
	Figure *Figure
}

// RunCluster measures durable writes on an embedded-cluster of opts.Nodes `keyreg serve`
// children (R3 stream), beside a single node measured in the same run, and the pause in
// writes when the stream leader is killed:
//   - a single `keyreg serve` child: opts.Writes allowlist updates from opts.Clients
//     clients over opts.Keys keys, with p50 and p99;
//   - the same on the cluster, the clients spread over the nodes, reported beside the
//     single node's rate (the ratio);
//   - the leader-election pause: opts.PauseClients clients write steadily on the nodes
//     that are not the KEYREG stream's leader; the leader's node is killed (SIGKILL); the
//     pause is the longest time between two acknowledged writes around the kill, and
//     the failed writes are counted by status;
//   - the killed node's restart until it is ready (caught up).
//
// Every acknowledged write must show its change; after each run every node must show
// each key's last change, or RunCluster fails.
func RunCluster(ctx context.Context, opts ClusterOptions, report func(ClusterReport)) error {
	opts.defaults()
	exe := opts.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return err
		}
	}
	single, err := runSingle(ctx, exe, opts, report)
	if err != nil {
		return err
	}
	nodes, err := startCluster(ctx, exe, opts)
	if err != nil {
		return err
	}
	defer func() {
		for _, n := range nodes {
			n.stop()
		}
	}()
	root, err := clusterRoot(nodes)
	if err != nil {
		return err
	}
	runners := make([]*httpRunner, len(nodes))
	for i, n := range nodes {
		runners[i] = newRunner(ctx, n.url, root, opts.Clients)
	}
	if err := runners[0].setupSized(opts.Keys, opts.Clients); err != nil {
		return err
	}
	for _, r := range runners[1:] {
		r.ws, r.keys = runners[0].ws, runners[0].keys
	}
	if err := waitVisible(ctx, runners, runners[0].keys[len(runners[0].keys)-1]); err != nil {
		return err
	}
	name := fmt.Sprintf("cluster of %d, HTTP PUT allowlist, %d clients, %d keys", len(nodes), opts.Clients, opts.Keys)
	r, err := updatesOver(ctx, name, runners, opts.Writes, opts.Clients, runners[0].keys)
	if err != nil {
		return err
	}
	r.BaseName, r.BaseRate, r.BaseP99 = "single node, same run", single.Rate(), single.P99
	report(ClusterReport{Result: &r})
	return leaderPause(ctx, exe, opts, nodes, runners, report)
}

// runSingle measures the writes on a single `keyreg serve` child.
func runSingle(ctx context.Context, exe string, opts ClusterOptions, report func(ClusterReport)) (HTTPResult, error) {
	dir := filepath.Join(opts.Dir, "single")
	n, err := startNode(ctx, exe, dir, nil, opts.Log)
	if err != nil {
		return HTTPResult{}, err
	}
	defer n.stop()
	if err := n.waitReady(ctx); err != nil {
		return HTTPResult{}, err
	}
	root, err := n.rootKey()
	if err != nil {
		return HTTPResult{}, err
	}
	h := newRunner(ctx, n.url, root, opts.Clients)
	if err := h.setupSized(opts.Keys, opts.Clients); err != nil {
		return HTTPResult{}, err
	}
	name := fmt.Sprintf("single node, HTTP PUT allowlist, %d clients, %d keys", opts.Clients, opts.Keys)
	r, err := updatesOver(ctx, name, []*httpRunner{h}, opts.Writes, opts.Clients, h.keys)
	if err != nil {
		return HTTPResult{}, err
	}
	report(ClusterReport{Result: &r})
	return r, nil
}

// newRunner is an httpRunner of the server at base, for clients concurrent clients.
func newRunner(ctx context.Context, base, token string, clients int) *httpRunner {
	return &httpRunner{ctx: ctx, base: base, token: token, client: &http.Client{
		Transport: &http.Transport{MaxIdleConns: 0, MaxIdleConnsPerHost: 2 * clients, IdleConnTimeout: time.Minute,
			DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext},
		Timeout: time.Minute}}
}

// setupSized makes a workspace and keys keys with clients clients (setup, sized by its
// arguments rather than opts).
func (h *httpRunner) setupSized(keys, clients int) error {
	h.opts.Keys, h.opts.Clients = keys, clients
	return h.setup()
}

// updatesOver measures writes allowlist updates from clients clients over keys, client c
// writing through runners[c % len(runners)]; then it checks that every runner's node
// shows each key's last change (waiting a while for the nodes that did not make it).
func updatesOver(ctx context.Context, name string, runners []*httpRunner, writes, clients int, keys []string) (HTTPResult, error) {
	clients = min(clients, len(keys), writes)
	last := make([]map[string]string, clients)
	for c := range last {
		last[c] = map[string]string{}
	}
	start := time.Now()
	lat, err := drive(writes, clients, func(c, j int) error {
		mine := (len(keys) - c + clients - 1) / clients
		id := keys[c+(j%mine)*clients]
		cidr, err := runners[c%len(runners)].putAllowlist(id)
		last[c][id] = cidr
		return err
	})
	took := time.Since(start)
	if err != nil {
		return HTTPResult{}, fmt.Errorf("%s: %w", name, err)
	}
	all := map[string]string{}
	for _, m := range last {
		for id, cidr := range m {
			all[id] = cidr
		}
	}
	for _, h := range runners {
		if err := eventually(ctx, func() error { return h.checkVisible(all) }); err != nil {
			return HTTPResult{}, fmt.Errorf("%s: on %s: %w", name, h.base, err)
		}
	}
	return withLatency(HTTPResult{Name: name, Count: writes, Unit: "writes", Took: took}, lat), nil
}

// eventually calls f until it succeeds, for up to a minute.
func eventually(ctx context.Context, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitVisible waits until every runner's node has key id.
func waitVisible(ctx context.Context, runners []*httpRunner, id string) error {
	for _, h := range runners {
		err := eventually(ctx, func() error { return h.call("GET", "/v1/workspaces/"+h.ws+"/keys/"+id, nil, nil) })
		if err != nil {
			return fmt.Errorf("key %s on %s: %w", id, h.base, err)
		}
	}
	return nil
}

// leaderPause measures the pause in writes when the KEYREG stream's leader is killed,
// then the killed node's restart until ready.
func leaderPause(ctx context.Context, exe string, opts ClusterOptions, nodes []*node, runners []*httpRunner, report func(ClusterReport)) error {
	leader, err := streamLeader(ctx, runners[0], nodes)
	if err != nil {
		return err
	}
	var others []*httpRunner
	for i, h := range runners {
		if i != leader {
			others = append(others, h)
		}
	}
	keys := runners[0].keys
	type outcome struct {
		at     time.Time // when the answer came
		status int       // 0 for a transport error
		ok     bool
	}
	var mu sync.Mutex
	var outcomes []outcome
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range opts.PauseClients {
		wg.Go(func() {
			h := others[c%len(others)]
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				_, err := h.putAllowlist(keys[(c+j*opts.PauseClients)%len(keys)])
				o := outcome{at: time.Now(), ok: err == nil}
				var se *statusError
				if errors.As(err, &se) {
					o.status = se.status
				}
				mu.Lock()
				outcomes = append(outcomes, o)
				mu.Unlock()
				if err != nil {
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	time.Sleep(2 * time.Second)
	killed := time.Now()
	nodes[leader].kill()
	// Write on until writes have gone through for 3 seconds after the first success
	// that followed the kill (or 60 seconds pass).
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		i := slices.IndexFunc(outcomes, func(o outcome) bool { return o.ok && o.at.After(killed) })
		done := i >= 0 && time.Since(outcomes[i].at) > 3*time.Second
		mu.Unlock()
		if done {
			break
		}
	}
	close(stop)
	wg.Wait()
	slices.SortFunc(outcomes, func(a, b outcome) int { return a.at.Compare(b.at) })
	var lastOK time.Time
	var pause time.Duration
	failed := map[int]int{}
	acked := 0
	for _, o := range outcomes {
		if !o.ok {
			if o.at.After(killed) {
				failed[o.status]++
			}
			continue
		}
		acked++
		if !lastOK.IsZero() && o.at.After(killed) && o.at.Sub(lastOK) > pause {
			pause = o.at.Sub(lastOK)
		}
		lastOK = o.at
	}
	if lastOK.Before(killed) {
		return fmt.Errorf("bench --cluster: no write went through after the stream leader (node %d) was killed", leader+1)
	}
	report(ClusterReport{Figure: &Figure{What: fmt.Sprintf("leader-election pause (leader node %d killed, %d writers)", leader+1, opts.PauseClients),
		Value: float64(pause.Microseconds()) / 1000, Unit: "ms"}})
	codes := slices.Sorted(func(yield func(int) bool) {
		for s := range failed {
			if !yield(s) {
				return
			}
		}
	})
	for _, s := range codes {
		what := "failed writes after the kill, status " + strconv.Itoa(s)
		if s == 0 {
			what = "failed writes after the kill, no answer"
		}
		report(ClusterReport{Figure: &Figure{What: what, Value: float64(failed[s]), Unit: "writes"}})
	}
	report(ClusterReport{Figure: &Figure{What: "acknowledged writes around the kill", Value: float64(acked), Unit: "writes"}})
	start := time.Now()
	n, err := startNode(ctx, exe, nodes[leader].dir, nodes[leader].args, opts.Log)
	if err != nil {
		return err
	}
	nodes[leader] = n
	if err := n.waitReady(ctx); err != nil {
		return err
	}
	report(ClusterReport{Figure: &Figure{What: fmt.Sprintf("killed node %d restarted until ready", leader+1),
		Value: float64(time.Since(start).Milliseconds()), Unit: "ms"}})
	return nil
}

// streamLeader returns the index of the node whose embedded NATS server leads the KEYREG
// stream: it adds a NATS subscriber through h, asks the stream's info, and matches the
// leader's server name with the name each node keeps in its data dir.
func streamLeader(ctx context.Context, h *httpRunner, nodes []*node) (int, error) {
	// A node answers 503 when its NATS users did not take the new subscriber within its
	// bound (seen once on a busy cluster): the subscriber is then added without its
	// password reaching us, so try again under another name.
	var sub wire.NewSubscriber
	for try := 0; ; try++ {
		err := h.call("POST", "/v1/subscribers", map[string]any{"name": "bench-" + strings.ToLower(events.NewID()[20:])}, &sub)
		var se *statusError
		if err == nil {
			break
		} else if !errors.As(err, &se) || se.status != http.StatusServiceUnavailable || try == 2 {
			return 0, err
		}
	}
	var nc *nats.Conn
	err := eventually(ctx, func() (err error) {
		nc, err = nats.Connect(nodes[0].natsURL, nats.UserInfo(sub.NATSUser, sub.Password), nats.CustomInboxPrefix(sub.InboxPrefix))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("bench --cluster: nats %s: %w", nodes[0].natsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	var leader string
	if err := eventually(ctx, func() error {
		s, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			return err
		}
		if c := s.CachedInfo().Cluster; c != nil && c.Leader != "" {
			leader = c.Leader
			return nil
		}
		return errors.New("the stream has no leader")
	}); err != nil {
		return 0, fmt.Errorf("bench --cluster: the KEYREG stream's leader: %w", err)
	}
	// A node's server is named in its data dir (server.NodeNameFile). Asking each node's
	// NATS listener for its name is not as sure: a NATS client whose first server refuses
	// it tries, within the same Connect, the other servers that server's INFO named, so a
	// node that has not applied the new subscriber yet passes the client to one that has
	// (seen once in CI: two nodes seemed to have one name).
	var names []string
	for i, n := range nodes {
		b, err := os.ReadFile(filepath.Join(n.dir, server.NodeNameFile))
		if err != nil {
			return 0, fmt.Errorf("bench --cluster: node %d's name: %w", i+1, err)
		}
		name := strings.TrimSpace(string(b))
		if name == leader {
			return i, nil
		}
		names = append(names, name)
	}
	return 0, fmt.Errorf("bench --cluster: the stream's leader %q is none of the nodes %q", leader, names)
}

// node is a `keyreg serve` child of RunCluster.
type node struct {
	dir, keyFile string
	args         []string // the cluster flags
	cmd          *exec.Cmd
	exited       chan struct{}
	addr, nats   chan string // the HTTP address and NATS URL the node printed
	url, natsURL string
}

var natsListenLine = regexp.MustCompile(`msg="nats subscribers \(read-only\)" url=(\S+)`)

// startNode starts `keyreg serve` on data dir dir with 127.0.0.1 listeners on ports
// chosen at run time and the extra flags args. It does not wait for it to serve.
func startNode(ctx context.Context, exe, dir string, args []string, log io.Writer) (*node, error) {
	n := &node{dir: dir, keyFile: dir + ".root.key", args: args, exited: make(chan struct{}),
		addr: make(chan string, 1), nats: make(chan string, 1)}
	all := append([]string{"serve", "--data", dir, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--bootstrap-key-file", n.keyFile, "--max-keys-per-workspace", "-1"}, args...)
	n.cmd = exec.Command(exe, all...)
	pr, pw := io.Pipe()
	n.cmd.Stdout, n.cmd.Stderr = pw, pw
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench --cluster: start %s serve: %w", exe, err)
	}
	go func() { n.cmd.Wait(); pw.Close(); close(n.exited) }()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintf(log, "%s: %s\n", filepath.Base(dir), line)
			if m := natsListenLine.FindStringSubmatch(line); m != nil {
				select {
				case n.nats <- m[1]:
				default:
				}
			}
			if m := servingAddr.FindStringSubmatch(line); m != nil {
				select {
				case n.addr <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	return n, nil
}

// waitReady waits until the node serves HTTP and its /readyz answers 200.
func (n *node) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	select {
	case u := <-n.nats: // printed before the serving line
		n.natsURL = u
	case <-n.exited:
		return fmt.Errorf("bench --cluster: keyreg serve --data %s ended before it served (%v)", n.dir, n.cmd.ProcessState)
	case <-ctx.Done():
		return fmt.Errorf("bench --cluster: keyreg serve --data %s did not listen for NATS: %w", n.dir, ctx.Err())
	}
	select {
	case a := <-n.addr:
		n.url = "http://" + a
	case <-n.exited:
		return fmt.Errorf("bench --cluster: keyreg serve --data %s ended before it served (%v)", n.dir, n.cmd.ProcessState)
	case <-ctx.Done():
		return fmt.Errorf("bench --cluster: keyreg serve --data %s did not serve: %w", n.dir, ctx.Err())
	}
	return eventually(ctx, func() error {
		resp, err := http.Get(n.url + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("bench --cluster: %s/readyz: %s", n.url, resp.Status)
		}
		return nil
	})
}

// rootKey reads the root secret the node wrote on its first start.
func (n *node) rootKey() (string, error) {
	b, err := os.ReadFile(n.keyFile)
	if err != nil {
		return "", fmt.Errorf("bench --cluster: the root key: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (n *node) kill() {
	n.cmd.Process.Kill()
	<-n.exited
}

// stop sends SIGTERM and waits (SIGKILL after 30 seconds).
func (n *node) stop() {
	select {
	case <-n.exited:
		return
	default:
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(30 * time.Second):
		n.kill()
	}
}

// startCluster starts opts.Nodes embedded-cluster nodes (route listeners on 127.0.0.1,
// ports chosen now) and waits until each is ready.
func startCluster(ctx context.Context, exe string, opts ClusterOptions) ([]*node, error) {
	ports, err := freePorts(opts.Nodes)
	if err != nil {
		return nil, err
	}
	routes := make([]string, len(ports))
	for i, p := range ports {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	var nodes []*node
	fail := func(err error) ([]*node, error) {
		for _, n := range nodes {
			n.stop()
		}
		return nil, err
	}
	for i, p := range ports {
		args := []string{"--cluster-name", "keyreg-bench", "--cluster-listen", fmt.Sprintf("127.0.0.1:%d", p),
			"--cluster-peers", strings.Join(routes, ",")}
		n, err := startNode(ctx, exe, filepath.Join(opts.Dir, fmt.Sprintf("node%d", i+1)), args, opts.Log)
		if err != nil {
			return fail(err)
		}
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		if err := n.waitReady(ctx); err != nil {
			return fail(err)
		}
	}
	return nodes, nil
}

// clusterRoot returns the root secret that one of the nodes made on the first start.
func clusterRoot(nodes []*node) (string, error) {
	var errs []error
	for _, n := range nodes {
		k, err := n.rootKey()
		if err == nil {
			return k, nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("bench --cluster: no node made the root key: %w", errors.Join(errs...))
}

// freePorts returns n distinct ports of 127.0.0.1 that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
