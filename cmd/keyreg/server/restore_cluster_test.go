package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
)

// TestStagedRestoreOnCluster restores a staged snapshot into a three-node embedded NATS
// cluster (in process) as keyreg serve does: a node other than the meta leader's waits; a
// snapshot that breaks off mid-restore fails and leaves no stream behind (JetStream would
// keep it); the meta leader's node then restores the stream with 3 replicas, tagged with
// the backup's id and holding every message; the staged files go; and a restore of
// another backup finds the stream and refuses.
func TestStagedRestoreOnCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A snapshot of a stream of 50 messages, from a server on its own.
	single, err := natsserver.Start(natsserver.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { single.Shutdown(); single.WaitForShutdown() }()
	snc, err := natsserver.ConnectInProcess(single)
	if err != nil {
		t.Fatal(err)
	}
	defer snc.Close()
	if _, err := natslog.Open(ctx, snc, natslog.Options{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(snc)
	for i := range 50 {
		if _, err := js.Publish(ctx, fmt.Sprintf("%s.test.m%d", events.SubjectPrefix, i), []byte(fmt.Sprintf("message %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	var snap bytes.Buffer
	meta, st, err := snapshotStream(ctx, snc, events.StreamName, &snap)
	if err != nil || st.LastSeq != 50 {
		t.Fatalf("snapshot: last seq %d, %v", st.LastSeq, err)
	}
	stage := func(id string, snapshot []byte) *pendingRestore {
		dir := filepath.Join(t.TempDir(), restoreDir)
		b, _ := json.Marshal(meta)
		os.MkdirAll(filepath.Join(dir, "stream"), 0o700)
		if os.WriteFile(filepath.Join(dir, filepath.FromSlash(backupMeta)), b, 0o600) != nil ||
			os.WriteFile(filepath.Join(dir, filepath.FromSlash(backupSnapshot)), snapshot, 0o600) != nil {
			t.Fatal("stage")
		}
		return &pendingRestore{ClusterName: "c", Backup: id, StreamSeq: st.LastSeq, dir: dir}
	}

	// Three nodes.
	var peers, listens []string
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		listens = append(listens, ln.Addr().String())
		peers = append(peers, "nats-route://"+ln.Addr().String())
		ln.Close()
	}
	servers := make([]*natsserver.Server, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			servers[i], errs[i] = natsserver.Start(natsserver.Options{StoreDir: t.TempDir(),
				Cluster: &natsserver.Cluster{Name: "c", ServerName: fmt.Sprintf("n%d", i+1), Listen: listens[i], Peers: peers}})
		}()
	}
	wg.Wait()
	for i, s := range servers {
		if s != nil {
			defer func() { s.Shutdown(); s.WaitForShutdown() }()
		}
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
	}
	var leader, other *nats.Conn
	for leader == nil {
		name, _ := natsserver.MetaLeader(servers[0])
		for i, s := range servers {
			if name != "" && s.Name() == name {
				if leader, err = natsserver.ConnectInProcess(s); err != nil {
					t.Fatal(err)
				}
				if other, err = natsserver.ConnectInProcess(servers[(i+1)%3]); err != nil {
					t.Fatal(err)
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("no meta leader")
		case <-time.After(100 * time.Millisecond):
		}
	}
	defer leader.Close()
	defer other.Close()

	good := stage("b1", snap.Bytes())
	// Another node than the meta leader's waits for it.
	if done, fatal, err := restorePending(ctx, other, good, 3, false); done || fatal != nil || err == nil || !strings.Contains(err.Error(), "meta leader") {
		t.Fatalf("a node other than the meta leader's: done %v, fatal %v, err %v", done, fatal, err)
	}
	// A snapshot cut short: the restore fails, and no stream stays.
	cut := stage("b1", snap.Bytes()[:snap.Len()/2])
	if err := retry(ctx, func() error {
		if err := restoreStaged(ctx, leader, cut, 3); !errors.Is(err, errRestoreBroke) {
			return fmt.Errorf("restore of a cut snapshot: %v, want a broken restore", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := retry(ctx, func() error {
		if _, err := keyregStreamInfo(ctx, leader); !errors.Is(err, errNoStream) {
			return fmt.Errorf("after a broken restore, the stream: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The restore, as keyreg serve tries it until done.
	if err := retry(ctx, func() error {
		done, fatal, err := restorePending(ctx, leader, good, 3, true)
		if fatal != nil {
			t.Fatal(fatal)
		}
		if !done {
			return fmt.Errorf("not done: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(good.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the staged files stay: %v", err)
	}
	cjs, _ := jetstream.New(other)
	s, err := cjs.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	if info.Config.Replicas != 3 || info.Config.Metadata[restoreMetaKey] != "b1" || info.State.LastSeq != 50 || info.State.Msgs != 50 {
		t.Fatalf("restored stream: replicas %d, metadata %v, state %+v", info.Config.Replicas, info.Config.Metadata, info.State)
	}
	for seq := uint64(1); seq <= 50; seq++ {
		a, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		want, err := a.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if got.Subject != want.Subject || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("message %d: %s %q, want %s %q", seq, got.Subject, got.Data, want.Subject, want.Data)
		}
	}
	// A node staged with another backup refuses the stream it finds.
	if _, fatal, _ := restorePending(ctx, other, stage("b2", snap.Bytes()), 3, false); fatal == nil || !strings.Contains(fatal.Error(), "not restored from this backup") {
		t.Fatalf("another backup's restore: %v", fatal)
	}
}

// retry runs f until it succeeds or ctx ends (then it returns f's last error).
func retry(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestStagedRestoreGuards: a data dir with a restore staged for the cluster kr refuses a
// server on its own, --nats-url, and a node of another cluster, naming the cluster.
func TestStagedRestoreGuards(t *testing.T) {
	data := t.TempDir()
	os.MkdirAll(filepath.Join(data, restoreDir), 0o700)
	b, _ := json.Marshal(pendingRestore{ClusterName: "kr", Backup: "b1", StreamSeq: 1})
	if err := os.WriteFile(filepath.Join(data, restoreDir, pendingFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{DataDir: data}, "restore staged for the embedded cluster kr"},
		{Config{DataDir: data, NATSURL: "nats://127.0.0.1:1"}, "restore staged for the embedded cluster kr"},
		{Config{DataDir: data, ClusterName: "other", ClusterListen: "127.0.0.1:4248", ClusterPeers: []string{"nats-route://127.0.0.1:4248"}},
			"--cluster-name other: " + data + " holds a restore staged for the cluster kr"},
	} {
		s, err := OpenStream(ctx, c.cfg)
		if err == nil {
			s.Close()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("OpenStream(%+v): %v, want %q", c.cfg, err, c.want)
		}
	}
}
