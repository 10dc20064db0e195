package server

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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

// TestShutdownSnapshotBounded: the verify snapshot written on shutdown gives up after the
// shutdown timeout when JetStream does not answer (a cluster that lost its quorum; here
// the purge of older snapshots is sent to a subscriber that never answers), so the node
// stops. It waited 2 minutes, past systemd's default of 90s.
func TestShutdownSnapshotBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", BootstrapKeyFile: filepath.Join(t.TempDir(), "root.key"),
		Stderr: io.Discard, Logger: slog.New(slog.DiscardHandler), SealEveryEvents: -1, SealInterval: -1,
		VerifySnapshotInterval: time.Hour, ShutdownTimeout: 500 * time.Millisecond}
	n, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- n.Serve(sctx, cfg) }()
	js, err := jetstream.New(n.stream.conn)
	if err != nil {
		t.Fatal(err)
	}
	for { // the first snapshot, once caught up
		if _, ok := verifier.LatestSnapshot(ctx, js); ok {
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
	purge := "$JS.API.STREAM.PURGE." + verifier.SnapshotStream
	if err := n.stream.nats.GlobalAccount().AddMapping(purge, "unanswered.purge"); err != nil {
		t.Fatal(err)
	}
	asked := make(chan struct{}, 1)
	sub, err := n.stream.conn.Subscribe("unanswered.purge", func(*nats.Msg) {
		select {
		case asked <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := n.stream.conn.Flush(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop()
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the node did not stop within 30s: the shutdown's snapshot waited on JetStream past the shutdown timeout")
	}
	select {
	case <-asked:
	default:
		t.Fatal("the shutdown's snapshot never asked for the purge: the test proved nothing")
	}
	t.Logf("stopped %s after the signal, with the purge unanswered", time.Since(start).Round(time.Millisecond))
}
