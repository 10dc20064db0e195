package server

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/projections/keyindex"
	"github.com/keyreg/keyreg/projections/verifier"
)

// TestVerifySnapshots: a node writes a snapshot of its verify index once it has caught up
// at start, and another on shutdown that holds the keys created since; a verifier
// started on the data dir afterwards starts from it and verifies the new key.
func TestVerifySnapshots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	cfg := Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", BootstrapKeyFile: filepath.Join(t.TempDir(), "root.key"),
		Stderr: io.Discard, Logger: slog.New(slog.DiscardHandler), SealEveryEvents: -1, SealInterval: -1,
		VerifySnapshotInterval: time.Hour}
	n, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- n.Serve(sctx, cfg) }()
	js, err := jetstream.New(n.stream.conn)
	if err != nil {
		t.Fatal(err)
	}
	// The first snapshot: the root key, once caught up.
	for {
		if seq, ok := verifier.LatestSnapshot(ctx, js); ok {
			if cp := n.Store().Checkpoint(); seq != cp || cp == 0 {
				t.Fatalf("first snapshot at %d, views at %d", seq, cp)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("no snapshot once caught up")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if _, err := n.Commands.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: "acme", Name: "Acme"}); err != nil {
		t.Fatal(err)
	}
	key, err := n.Commands.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Projector().WaitFor(ctx, key.Seq); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	n.Close()

	s, err := OpenStream(ctx, Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if js, err = jetstream.New(s.conn); err != nil {
		t.Fatal(err)
	}
	if seq, ok := verifier.LatestSnapshot(ctx, js); !ok || seq < key.Seq {
		t.Fatalf("snapshot after shutdown at %d (%v), want the key's %d", seq, ok, key.Seq)
	}
	v, err := verifier.Start(ctx, s.conn, verifier.Options{MaxLag: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if v.StartedFrom() < key.Seq || v.Keys() != 2 {
		t.Fatalf("verifier started from %d with %d keys; want the shutdown's snapshot (at least %d) with 2", v.StartedFrom(), v.Keys(), key.Seq)
	}
	if r := v.Verify(key.Secret, netip.MustParseAddr("10.1.2.3"), "", time.Now()); r.Code != keyindex.CodeValid || r.KeyID != key.ID {
		t.Fatalf("the new key: %+v", r)
	}
}
