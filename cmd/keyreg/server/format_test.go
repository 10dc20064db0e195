package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/projections/projectionstest"
	"github.com/keyreg/keyreg/replay"
)

// TestServeRefusesFormat1: serve on views of format 1 refuses to start, naming the
// command that migrates them; after keyreg replay (RebuildViews) it serves them.
func TestServeRefusesFormat1(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, data)
	f := newFixture(t, n, "acme")
	k := f.createKey(map[string]any{"name": "kept", "allowlist": []string{"10.0.0.0/8"}})
	n.stop()
	projectionstest.ToFormat1(t, filepath.Join(data, "projections", currentGenDir(t, data)))

	cfg := server.Config{DataDir: data, HTTPAddr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	nd, err := server.Open(context.Background(), cfg)
	if err == nil {
		nd.Close()
	}
	if !errors.Is(err, projections.ErrFormat) || !strings.Contains(err.Error(), "keyreg replay --data "+data) {
		t.Fatalf("serve on format-1 views: %v, want ErrFormat naming keyreg replay --data %s", err, data)
	}

	if _, _, err := server.RebuildViews(context.Background(), server.Config{DataDir: data}, replay.Options{}); err != nil {
		t.Fatal(err)
	}
	n2 := startNode(t, data)
	var got wire.Key
	n2.json("GET", "/v1/workspaces/acme/keys/"+k.Key.ID, f.writer, nil, 200, &got)
	if got.Name != "kept" || len(got.Allowlist) != 1 || got.Allowlist[0] != "10.0.0.0/8" {
		t.Fatalf("after the migration: %+v", got)
	}
}
