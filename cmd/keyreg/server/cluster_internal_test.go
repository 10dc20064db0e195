package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestClusterDataDirGuards: a node keeps the name of its first start (DATA/node-name) and
// refuses another --node-name; a data dir that holds a single server's stream does not
// join a cluster, and a cluster node's data dir does not start as a single server (each
// would write a stream the other never sees).
func TestClusterDataDirGuards(t *testing.T) {
	data := t.TempDir()
	name, err := clusterNodeName(data, "")
	if err != nil || !strings.HasPrefix(name, "keyreg-") {
		t.Fatalf("first start: name %q, %v", name, err)
	}
	if again, err := clusterNodeName(data, ""); err != nil || again != name {
		t.Fatalf("second start: name %q (%v), want %q", again, err, name)
	}
	if _, err := clusterNodeName(data, "other"); err == nil || !strings.Contains(err.Error(), "--node-name other") || !strings.Contains(err.Error(), name) {
		t.Fatalf("another --node-name: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := OpenStream(ctx, Config{DataDir: data}); err == nil || !strings.Contains(err.Error(), "--cluster-name") {
		t.Fatalf("a cluster node's data dir opened as a single server: %v", err)
	}

	single := t.TempDir()
	s, err := OpenStream(ctx, Config{DataDir: single})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := clusterNodeName(single, "n1"); err == nil || !strings.Contains(err.Error(), "empty data dirs") {
		t.Fatalf("a single server's data dir joined a cluster: %v", err)
	}
	if _, err := os.Stat(filepath.Join(single, NodeNameFile)); err == nil {
		t.Fatal("the refused data dir got a node name")
	}
}
