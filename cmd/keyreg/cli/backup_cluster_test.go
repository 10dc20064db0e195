package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog"
)

// TestOnlineBackupRestoreIntoEmbeddedCluster takes an online backup of a single node while
// four writers change keys, restores it on three new data dirs (keyreg restore
// --cluster-name) and starts them as an embedded cluster (the real binary): no node makes a
// root key, every node starts from the backup's views, and answers every key with the
// same JSON as the source's log folded where the restored stream ends; the restored
// stream is the source's, event for event, up to at least the backup's sequence, with 3
// replicas; the staged files are gone; and a write works on every node.
func TestOnlineBackupRestoreIntoEmbeddedCluster(t *testing.T) {
	src := nodetest.StartBinary(t)
	src.JSON("POST", "/v1/workspaces", src.Root, map[string]any{"id": "acme", "name": "Acme"}, 201, nil)

	// Four writers create keys and rename each, until stopped.
	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var k wire.KeyWithSecret
				if err := write(src, "POST", "/v1/workspaces/acme/keys", map[string]any{"name": fmt.Sprintf("w%d-%d", w, i)}, &k); err != nil {
					t.Error(err)
					return
				}
				acked.Add(1)
				if err := write(src, "PATCH", "/v1/workspaces/acme/keys/"+k.Key.ID, map[string]any{"name": fmt.Sprintf("w%d-%d renamed", w, i)}, nil); err != nil {
					t.Error(err)
					return
				}
				acked.Add(1)
			}
		}()
	}
	stopWriters := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	t.Cleanup(stopWriters)
	waitAcked(t, &acked, 60)
	bak := filepath.Join(t.TempDir(), "bak")
	if r := runKeyreg(t, "backup", "--addr", src.URL, "--token", src.Root, "--to", bak); r.code != 0 {
		t.Fatalf("keyreg backup --addr: exit %d: %s", r.code, r.stderr)
	}
	waitAcked(t, &acked, acked.Load()+60) // the source goes on beyond the backup
	stopWriters()
	if t.Failed() {
		return
	}
	m := readManifest(t, bak)

	// Bad input first: the flags that do not go together, and an offline backup.
	checkFails(t, runKeyreg(t, "restore", "--from", bak, "--data", t.TempDir(), "--cluster-name", "kr-test", "--nats-url", "nats://127.0.0.1:1"), 2, "--cluster-name", "--nats-url")
	checkFails(t, runKeyreg(t, "restore", "--from", bak, "--data", t.TempDir(), "--cluster-name", "kr test"), 1, `--cluster-name "kr test"`)

	// The three nodes, restored and started as a cluster.
	c := nodetest.StartCluster(t, nodetest.ClusterOptions{Root: src.Root, Prepare: func(i int, dir string) {
		r := runKeyreg(t, "restore", "--from", bak, "--data", dir, "--cluster-name", "kr-test")
		if r.code != 0 {
			t.Fatalf("node %d: keyreg restore --cluster-name: exit %d: %s", i+1, r.code, r.stderr)
		}
		contains(t, "restore --cluster-name", r.stdout, "staged in "+filepath.Join(dir, "restore"))
		if i == 0 { // a server on its own refuses the staged data dir (it would make an empty stream)
			checkFails(t, runKeyreg(t, "serve", "--data", dir, "--http", "127.0.0.1:0", "--nats-listen", ""), 1, "restore staged for the embedded cluster kr-test")
		}
	}})
	for i, n := range c.Nodes {
		out := n.Output.String()
		if want := fmt.Sprintf(" checkpoint=%d ", m.ViewsSeq); !strings.Contains(out, want) {
			t.Fatalf("node %d did not start from the views of the backup (%s):\n%s", i+1, want, out)
		}
		if strings.Contains(out, "Its secret is shown this once") {
			t.Fatalf("node %d made a root key on the restored registry:\n%s", i+1, out)
		}
		if _, err := os.Stat(filepath.Join(n.DataDir, "restore")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("node %d kept its staged restore: %v", i+1, err)
		}
	}

	// The restored cluster's stream, read through a backup of it restored on a node of its
	// own; and the source's.
	bak2 := filepath.Join(t.TempDir(), "bak2")
	if r := runKeyreg(t, "backup", "--addr", c.Nodes[1].URL, "--token", c.Root, "--to", bak2); r.code != 0 {
		t.Fatalf("keyreg backup of the restored cluster: exit %d: %s", r.code, r.stderr)
	}
	var meta struct {
		Config struct {
			Replicas int `json:"num_replicas"`
		} `json:"config"`
	}
	if b, err := os.ReadFile(filepath.Join(bak2, "stream", "meta.json")); err != nil || json.Unmarshal(b, &meta) != nil || meta.Config.Replicas != 3 {
		t.Fatalf("the restored cluster's stream has %d replicas, want 3 (%v)", meta.Config.Replicas, err)
	}
	single := filepath.Join(t.TempDir(), "single")
	if r := runKeyreg(t, "restore", "--from", bak2, "--data", single); r.code != 0 {
		t.Fatalf("keyreg restore of the restored cluster's backup: exit %d: %s", r.code, r.stderr)
	}
	_, dstRecs := readStream(t, single, 1<<62)
	if err := src.Stop(); err != nil {
		t.Fatal(err)
	}
	_, srcRecs := readStream(t, src.DataDir, 1<<62)

	// History: the restored stream is the source's up to a cut at or after the backup's
	// sequence; what follows the cut is the restored cluster's own (none of the source's).
	cut := 0
	for cut < len(dstRecs) && cut < len(srcRecs) && sameRecord(srcRecs[cut], dstRecs[cut]) {
		cut++
	}
	if uint64(cut) < m.StreamSeq {
		if cut < len(dstRecs) && cut < len(srcRecs) {
			t.Fatalf("event %d differs, before the backup's sequence %d:\nrestored %+v\nsource   %+v", cut+1, m.StreamSeq, dstRecs[cut], srcRecs[cut])
		}
		t.Fatalf("the restored stream holds the source's events up to %d, before the backup's sequence %d", cut, m.StreamSeq)
	}
	srcIDs := map[string]bool{}
	for _, r := range srcRecs {
		srcIDs[r.MsgID] = true
	}
	for _, r := range dstRecs[cut:] {
		if srcIDs[r.MsgID] {
			t.Fatalf("the restored stream holds the source's event %s at %d, after the cut %d", r.MsgID, r.Seq, cut)
		}
	}
	t.Logf("backup at stream sequence %d (views %d); the restored stream is the source's up to %d of %d", m.StreamSeq, m.ViewsSeq, cut, len(srcRecs))

	// Views: every key on every node, as the source's log folded at the cut answers it.
	again := nodetest.StartBinaryWith(t, nodetest.BinaryOptions{DataDir: src.DataDir, Root: src.Root})
	want := listKeys(t, again, fmt.Sprintf("&as_of=%d", cut))
	if len(want) < 30 {
		t.Fatalf("the source had %d keys at sequence %d", len(want), cut)
	}
	for i, n := range c.Nodes {
		var got map[string][]byte
		waitFor(t, fmt.Sprintf("node %d lists the source's keys", i+1), func() error {
			if got = listKeys(t, n, ""); len(got) != len(want) {
				return fmt.Errorf("%d keys, the source %d at sequence %d", len(got), len(want), cut)
			}
			return nil
		})
		for id, w := range want {
			if !bytes.Equal(got[id], w) {
				t.Fatalf("node %d: key %s differs:\nrestored %s\nsource   %s", i+1, id, got[id], w)
			}
		}
	}

	// A write works on every node, and every node reads it.
	for i, n := range c.Nodes {
		var k wire.KeyWithSecret
		n.JSON("POST", "/v1/workspaces/acme/keys", c.Root, map[string]any{"name": fmt.Sprintf("after-restore-%d", i+1)}, 201, &k)
		for j, o := range c.Nodes {
			waitFor(t, fmt.Sprintf("node %d reads the key written on node %d", j+1, i+1), func() error {
				st, _, body := o.Do("GET", "/v1/workspaces/acme/keys/"+k.Key.ID, c.Root, nil)
				if st != 200 {
					return fmt.Errorf("status %d: %s", st, body)
				}
				return nil
			})
		}
	}
}

// TestOnlineBackupRestoreIntoNATSCluster restores an online backup into a cluster of three
// nats-server processes with 3 replicas (keyreg restore --nats-url --replicas 3), then
// serves it with two keyreg serve --nats-url nodes, one on the restored views and one on
// an empty data dir: both answer every key as the source did, the stream is the source's
// event for event with 3 replicas, and a write on either node is read on the other.
func TestOnlineBackupRestoreIntoNATSCluster(t *testing.T) {
	src := nodetest.StartBinary(t)
	src.JSON("POST", "/v1/workspaces", src.Root, map[string]any{"id": "acme", "name": "Acme"}, 201, nil)
	for i := range 20 {
		src.JSON("POST", "/v1/workspaces/acme/keys", src.Root, map[string]any{"name": fmt.Sprintf("k%d", i)}, 201, nil)
	}
	bak := filepath.Join(t.TempDir(), "bak")
	if r := runKeyreg(t, "backup", "--addr", src.URL, "--token", src.Root, "--to", bak); r.code != 0 {
		t.Fatalf("keyreg backup: exit %d: %s", r.code, r.stderr)
	}
	want := listKeys(t, src, "")
	if err := src.Stop(); err != nil {
		t.Fatal(err)
	}
	srcLast, srcRecs := readStream(t, src.DataDir, 1<<62)
	m := readManifest(t, bak)

	nc3 := nodetest.StartNATSCluster(t, 3)
	url := nc3.URL()
	views := filepath.Join(t.TempDir(), "views")
	if r := runKeyreg(t, "restore", "--from", bak, "--data", views, "--nats-url", url, "--replicas", "3"); r.code != 0 {
		t.Fatalf("keyreg restore --nats-url --replicas 3: exit %d: %s", r.code, r.stderr)
	}
	args := []string{"--nats-url", url, "--replicas", "3"}
	n1 := nodetest.StartBinaryWith(t, nodetest.BinaryOptions{DataDir: views, Root: src.Root, Args: args})
	n2 := nodetest.StartBinaryWith(t, nodetest.BinaryOptions{Root: src.Root, Args: args})
	if want := fmt.Sprintf(" checkpoint=%d ", m.ViewsSeq); !strings.Contains(n1.Output.String(), want) {
		t.Fatalf("node 1 did not start from the views of the backup (%s):\n%s", want, n1.Output.String())
	}
	for i, n := range []*nodetest.Node{n1, n2} {
		if strings.Contains(n.Output.String(), "Its secret is shown this once") {
			t.Fatalf("node %d made a root key on the restored registry", i+1)
		}
		var got map[string][]byte
		waitFor(t, fmt.Sprintf("node %d lists the source's keys", i+1), func() error {
			got = listKeys(t, n, "")
			if len(got) != len(want) {
				return fmt.Errorf("%d keys, the source has %d", len(got), len(want))
			}
			return nil
		})
		for id, w := range want {
			if !bytes.Equal(got[id], w) {
				t.Fatalf("node %d: key %s differs:\nrestored %s\nsource   %s", i+1, id, got[id], w)
			}
		}
	}

	// The stream: 3 replicas, and the source's events at their sequences.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if info := st.CachedInfo(); info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("the restored stream: replicas %d, cluster %+v; want 3", info.Config.Replicas, info.Cluster)
	}
	log, err := natslog.Open(ctx, nc, natslog.Options{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if last, err := log.LastSeq(ctx); err != nil || last < srcLast || len(srcRecs) == 0 {
		t.Fatalf("the restored stream ends at %d (%v), the source at %d", last, err, srcLast)
	}
	for _, s := range srcRecs {
		d, err := log.Get(ctx, s.Seq)
		if err != nil {
			t.Fatalf("event %d: %v", s.Seq, err)
		}
		if !sameRecord(s, d) {
			t.Fatalf("event %d differs:\nrestored %+v\nsource   %+v", s.Seq, d, s)
		}
	}

	// A write on either node is read on the other.
	for i, pair := range [][2]*nodetest.Node{{n1, n2}, {n2, n1}} {
		var k wire.KeyWithSecret
		pair[0].JSON("POST", "/v1/workspaces/acme/keys", src.Root, map[string]any{"name": fmt.Sprintf("after-restore-%d", i+1)}, 201, &k)
		waitFor(t, "the other node reads the key", func() error {
			if st, _, body := pair[1].Do("GET", "/v1/workspaces/acme/keys/"+k.Key.ID, src.Root, nil); st != 200 {
				return fmt.Errorf("status %d: %s", st, body)
			}
			return nil
		})
	}
}

// sameRecord reports whether two events are the same: sequence, subject, id, time, data.
func sameRecord(a, b events.Record) bool {
	return a.Seq == b.Seq && a.Subject == b.Subject && a.MsgID == b.MsgID && a.Time.Equal(b.Time) && bytes.Equal(a.Data, b.Data)
}

// readManifest reads the manifest of the backup in dir.
func readManifest(t *testing.T, dir string) server.Manifest {
	t.Helper()
	var m server.Manifest
	b, err := os.ReadFile(filepath.Join(dir, server.ManifestFile))
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil || m.Format != server.OnlineFormat || m.StreamSeq == 0 {
		t.Fatalf("manifest of %s: %v %s", dir, err, b)
	}
	return m
}

// waitFor retries f until it succeeds, at most a minute (then it fails the test with f's
// last error).
func waitFor(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
