package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
)

// clusterDeadline bounds each poll of a cluster test.
const clusterDeadline = 60 * time.Second

// eventually calls f until it returns nil, at most clusterDeadline, and fails the test with
// its last error.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(clusterDeadline)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, clusterDeadline, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestEmbeddedClusterThreeNodes: three keyreg serve processes started at once on empty
// data dirs form an embedded cluster. Exactly one of them makes the root key and prints
// its secret; the other two say the registry is already initialised, and workspace system
// has one key. A key created on node 1 is read, identical, and verifies on nodes 2 and 3.
// The KEYREG stream and the verify snapshot stream have 3 replicas, on three peers.
func TestEmbeddedClusterThreeNodes(t *testing.T) {
	c := nodetest.StartCluster(t, nodetest.ClusterOptions{NodeArgs: func(i int) []string {
		if i == 0 {
			return []string{"--nats-listen", "127.0.0.1:0"} // for a subscriber to read the stream info
		}
		return nil
	}})
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]

	// The root key: made and shown once.
	made, told := 0, 0
	for i, n := range c.Nodes {
		out := n.Output.String()
		if strings.Contains(out, "Its secret is shown this once") {
			made++
			if !strings.Contains(out, c.Root) {
				t.Fatalf("node %d made the root key but printed another secret: %s", i+1, out)
			}
		} else if strings.Contains(out, "the registry is already initialised") {
			told++
		}
		if strings.Contains(out, "kr_") && !strings.Contains(out, "Its secret is shown this once") {
			t.Fatalf("node %d printed a secret without making the root key: %s", i+1, out)
		}
	}
	if made != 1 || told != 2 {
		t.Fatalf("%d nodes made the root key and %d said it exists; want 1 and 2", made, told)
	}
	for i, n := range c.Nodes {
		var sys struct{ Keys []wire.Key }
		n.JSON("GET", "/v1/workspaces/system/keys", c.Root, nil, 200, &sys)
		if len(sys.Keys) != 1 || sys.Keys[0].Name != "root" {
			t.Fatalf("node %d: workspace system has keys %+v, want the one root key", i+1, sys.Keys)
		}
	}

	// Any node writes, every node reads.
	n1.JSON("POST", "/v1/workspaces", c.Root, map[string]any{"id": "acme", "name": "Acme"}, 201, nil)
	var k wire.KeyWithSecret
	n1.JSON("POST", "/v1/workspaces/acme/keys", c.Root, map[string]any{"name": "billing", "permissions": []string{"keyreg.verify", "users.track"}}, 201, &k)
	_, _, want := n1.Do("GET", "/v1/workspaces/acme/keys/"+k.Key.ID, c.Root, nil)
	for i, n := range []*nodetest.Node{n2, n3} {
		eventually(t, fmt.Sprintf("node %d reads the key made on node 1", i+2), func() error {
			st, _, got := n.Do("GET", "/v1/workspaces/acme/keys/"+k.Key.ID, c.Root, nil)
			if st != 200 || !bytes.Equal(got, want) {
				return fmt.Errorf("status %d: %s, want %s", st, got, want)
			}
			return nil
		})
		var v wire.VerifyResponse
		n.JSON("POST", "/v1/verify", k.Secret, map[string]any{"key": k.Secret, "ip": "192.0.2.1", "permission": "users.track"}, 200, &v)
		if !v.Valid || v.KeyID != k.Key.ID {
			t.Fatalf("node %d: verify %+v, want the key %s valid", i+2, v, k.Key.ID)
		}
	}

	// The streams keyreg made are replicated on the three nodes.
	var sub wire.NewSubscriber
	n1.JSON("POST", "/v1/subscribers", c.Root, map[string]any{"name": "probe"}, 201, &sub)
	nc, err := nats.Connect(sub.NATSURL, nats.UserInfo(sub.NATSUser, sub.Password), nats.CustomInboxPrefix(sub.InboxPrefix))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{events.StreamName, natsserver.SnapshotStream} {
		eventually(t, "stream "+name+" on 3 current replicas", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := js.Stream(ctx, name)
			if err != nil {
				return err
			}
			info := s.CachedInfo()
			if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Name != c.Name || info.Cluster.Leader == "" {
				return fmt.Errorf("replicas %d, cluster %+v", info.Config.Replicas, info.Cluster)
			}
			peers := map[string]bool{info.Cluster.Leader: true}
			for _, r := range info.Cluster.Replicas {
				if r.Current && !r.Offline {
					peers[r.Name] = true
				}
			}
			if len(peers) != 3 {
				return fmt.Errorf("leader %s and current replicas %+v: %d peers, want 3", info.Cluster.Leader, info.Cluster.Replicas, len(peers))
			}
			return nil
		})
	}
}

// clusterWriter writes to a cluster's nodes from several goroutines without failing the
// test from them: it keeps what was acknowledged (a 2xx) and counts what failed.
type clusterWriter struct {
	mu      sync.Mutex
	acked   map[string]uint64 // key id -> version of its last acknowledged change
	last    uint64            // the highest acknowledged version
	failed  map[int]int       // status (0: no answer) -> count
	samples []string          // a few failures, for the log
}

// do sends one request and returns the status (0 when there was no answer) and body.
func (w *clusterWriter) do(n *nodetest.Node, method, path, token string, body any) (int, []byte) {
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, n.URL+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.fail(0, method+" "+path+": "+err.Error())
		return 0, nil
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		w.fail(resp.StatusCode, fmt.Sprintf("%s %s: %d %s", method, path, resp.StatusCode, out))
	}
	return resp.StatusCode, out
}

func (w *clusterWriter) fail(status int, sample string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failed[status]++
	if len(w.samples) < 5 {
		w.samples = append(w.samples, sample)
	}
}

// write creates a key on n, then renames it, keeping what was acknowledged.
func (w *clusterWriter) write(n *nodetest.Node, token, name string) {
	st, body := w.do(n, "POST", "/v1/workspaces/acme/keys", token, map[string]any{"name": name, "permissions": []string{"users.track"}})
	if st != 201 {
		return
	}
	var k wire.KeyWithSecret
	if json.Unmarshal(body, &k) != nil {
		return
	}
	w.ack(k.Key)
	st, body = w.do(n, "PATCH", "/v1/workspaces/acme/keys/"+k.Key.ID, token, map[string]any{"name": name + "-renamed"})
	var u wire.Key
	if st == 200 && json.Unmarshal(body, &u) == nil {
		w.ack(u)
	}
}

func (w *clusterWriter) ack(k wire.Key) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.acked[k.ID] = max(w.acked[k.ID], k.Version)
	w.last = max(w.last, k.Version)
}

// run writes rounds times from each of writers goroutines, spread over nodes.
func (w *clusterWriter) run(nodes []*nodetest.Node, token string, writers, rounds int, tag string) {
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				w.write(nodes[(g+r)%len(nodes)], token, fmt.Sprintf("%s-w%d-%d", tag, g, r))
			}
		}()
	}
	wg.Wait()
}

// checkpoint returns the checkpoint n's /readyz reports, and whether it answered 200.
func checkpoint(n *nodetest.Node) (uint64, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", n.URL+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	var h struct {
		Checkpoint uint64 `json:"checkpoint"`
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return 0, false, nil
	}
	if err := json.Unmarshal(body, &h); err != nil {
		return 0, false, fmt.Errorf("readyz %s: %w", body, err)
	}
	return h.Checkpoint, true, nil
}

// allKeys returns every key of ws that n lists, by id.
func allKeys(t *testing.T, n *nodetest.Node, token, ws string) []string {
	t.Helper()
	var ids []string
	after := ""
	for {
		var page struct {
			Keys []wire.Key `json:"keys"`
			Next string     `json:"next"`
		}
		n.JSON("GET", "/v1/workspaces/"+ws+"/keys?limit=1000&after="+after, token, nil, 200, &page)
		for _, k := range page.Keys {
			ids = append(ids, k.ID)
		}
		if page.Next == "" {
			return ids
		}
		after = page.Next
	}
}

// TestEmbeddedClusterNodeKilledCatchesUp: node 3 of an embedded cluster is killed with
// SIGKILL while writers spread over nodes 1 and 2 go on; it is started again after more
// writes. Its /readyz turns 200 only once its views hold every acknowledged change, and
// then every key reads the same, byte for byte, on the three nodes, and every acknowledged
// key is there at its acknowledged version or later.
func TestEmbeddedClusterNodeKilledCatchesUp(t *testing.T) {
	c := nodetest.StartCluster(t, nodetest.ClusterOptions{})
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	n1.JSON("POST", "/v1/workspaces", c.Root, map[string]any{"id": "acme", "name": "Acme"}, 201, nil)
	var writer wire.KeyWithSecret
	n1.JSON("POST", "/v1/workspaces/acme/keys", c.Root, map[string]any{"name": "writer", "permissions": []string{"keyreg.keys.read", "keyreg.keys.write"}}, 201, &writer)
	for _, n := range c.Nodes {
		eventually(t, "the writer key on every node", func() error {
			if st, _, b := n.Do("GET", "/v1/workspaces/acme/keys/"+writer.Key.ID, writer.Secret, nil); st != 200 {
				return fmt.Errorf("%d %s", st, b)
			}
			return nil
		})
	}

	w := &clusterWriter{acked: map[string]uint64{}, failed: map[int]int{}}
	w.run([]*nodetest.Node{n1, n2, n3}, writer.Secret, 4, 10, "before")
	var killed sync.WaitGroup
	killed.Add(1)
	go func() { // the kill lands while the writers below run
		defer killed.Done()
		time.Sleep(200 * time.Millisecond)
		c.Kill(2)
	}()
	w.run([]*nodetest.Node{n1, n2}, writer.Secret, 4, 40, "during")
	killed.Wait()
	w.run([]*nodetest.Node{n1, n2}, writer.Secret, 4, 20, "after")
	t.Logf("acknowledged: %d keys, last version %d; failed: %v %q", len(w.acked), w.last, w.failed, w.samples)
	if len(w.acked) < 100 {
		t.Fatalf("only %d keys were acknowledged: the surviving nodes did not take writes: %v %q", len(w.acked), w.failed, w.samples)
	}

	n3 = c.Start(2)
	var first uint64
	eventually(t, "node 3 ready again", func() error {
		cp, ok, err := checkpoint(n3)
		if err != nil || !ok {
			return fmt.Errorf("not ready (%v)", err)
		}
		first = cp
		return nil
	})
	if first < w.last {
		t.Fatalf("node 3 answered /readyz 200 at checkpoint %d, before the last acknowledged change %d", first, w.last)
	}
	for i, n := range []*nodetest.Node{n1, n2} {
		eventually(t, fmt.Sprintf("node %d applied %d", i+1, w.last), func() error {
			if cp, ok, err := checkpoint(n); err != nil || !ok || cp < w.last {
				return fmt.Errorf("checkpoint %d ready %t (%v)", cp, ok, err)
			}
			return nil
		})
	}

	for _, ws := range []string{"acme", "system"} {
		token := writer.Secret
		if ws == "system" {
			token = c.Root
		}
		ids := allKeys(t, n1, token, ws)
		if ws == "acme" {
			listed := map[string]bool{}
			for _, id := range ids {
				listed[id] = true
			}
			for id := range w.acked {
				if !listed[id] {
					t.Fatalf("acknowledged key %s is not on node 1", id)
				}
			}
		}
		for _, id := range ids {
			_, _, want := n1.Do("GET", "/v1/workspaces/"+ws+"/keys/"+id, token, nil)
			var k wire.Key
			if err := json.Unmarshal(want, &k); err != nil || k.Version < w.acked[id] {
				t.Fatalf("key %s on node 1: version %d, acknowledged %d (%v): %s", id, k.Version, w.acked[id], err, want)
			}
			for i, n := range []*nodetest.Node{n2, n3} {
				if st, _, got := n.Do("GET", "/v1/workspaces/"+ws+"/keys/"+id, token, nil); st != 200 || !bytes.Equal(got, want) {
					t.Fatalf("key %s on node %d: %d %s, node 1: %s", id, i+2, st, got, want)
				}
			}
		}
		if n := len(allKeys(t, n3, token, ws)); n != len(ids) {
			t.Fatalf("workspace %s: node 3 lists %d keys, node 1 %d", ws, n, len(ids))
		}
	}
}

// status returns the status of a GET of path on n (0 and the error when nothing answers).
func status(n *nodetest.Node, path string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", n.URL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestEmbeddedClusterStartsInAnyOrder: nodes 2 and 3 of a new cluster start first and wait
// for node 1, which the R3 stream needs: meanwhile they answer /healthz with 200 and
// /readyz with 503, and log what they wait for. Once node 1 starts, the three serve, one
// root key was made, and a key made on node 3 reads on node 1.
func TestEmbeddedClusterStartsInAnyOrder(t *testing.T) {
	c := nodetest.StartCluster(t, nodetest.ClusterOptions{Hold: []int{0}})
	for i, n := range c.Nodes[1:] {
		eventually(t, fmt.Sprintf("node %d answers /healthz while it waits", i+2), func() error {
			if st, err := status(n, "/healthz"); st != 200 {
				return fmt.Errorf("%d (%v)", st, err)
			}
			return nil
		})
		if st, err := status(n, "/readyz"); st != 503 {
			t.Fatalf("node %d without node 1: /readyz %d (%v), want 503", i+2, st, err)
		}
		eventually(t, fmt.Sprintf("node %d says what it waits for", i+2), func() error {
			if !strings.Contains(n.Output.String(), "cluster: waiting for") {
				return fmt.Errorf("output: %s", n.Output.String())
			}
			return nil
		})
	}
	c.Start(0)
	for _, n := range c.Nodes {
		n.WaitReady()
	}
	c.SetRoot()
	n1, n3 := c.Nodes[0], c.Nodes[2]
	n3.JSON("POST", "/v1/workspaces", c.Root, map[string]any{"id": "acme", "name": "Acme"}, 201, nil)
	var k wire.KeyWithSecret
	n3.JSON("POST", "/v1/workspaces/acme/keys", c.Root, map[string]any{"name": "billing", "permissions": []string{"users.track"}}, 201, &k)
	eventually(t, "node 1 reads the key made on node 3", func() error {
		if st, _, b := n1.Do("GET", "/v1/workspaces/acme/keys/"+k.Key.ID, c.Root, nil); st != 200 {
			return fmt.Errorf("%d %s", st, b)
		}
		return nil
	})
}
