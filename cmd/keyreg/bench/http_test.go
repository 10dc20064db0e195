package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/bench"
	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// smallHTTP sizes a RunHTTP small: 4 clients over 8 keys, 40 writes (10 from 1 client).
func smallHTTP(dir string) bench.HTTPOptions {
	return bench.HTTPOptions{Dir: dir, Writes: 40, SoloWrites: 10, Clients: 4, Keys: 8, SoloKeys: 4, VerifyClients: 2, Verifies: 50}
}

// TestRunHTTPChild runs `keyreg bench --http` small against a `keyreg serve` child (the
// real binary): every figure is reported once, in order, counting what it did, with its
// latencies and, where it has one, its baseline; with a peer script, the writes of 4 and
// of 1 client are reported again beside the peer's rates. The printed lines and the JSON
// carry the figure and the ratio.
func TestRunHTTPChild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	peer := filepath.Join(t.TempDir(), "peer.sh")
	if err := os.WriteFile(peer, []byte("#!/bin/sh\n"+
		"echo 'postgres durable update+audit, 1 clients: tps = 100.5 (without initial connection time)'\n"+
		"echo 'postgres durable update+audit, 4 clients: tps = 400.0 (without initial connection time)'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := smallHTTP(t.TempDir())
	opts.Exe, opts.PeerScript = nodetest.Binary(t), peer
	var peerOut bytes.Buffer
	opts.PeerOut = &peerOut
	var got []bench.HTTPResult
	if err := bench.RunHTTP(ctx, opts, func(r bench.HTTPResult) { got = append(got, r) }); err != nil {
		t.Fatal(err)
	}
	type row struct {
		name  string
		count int
		base  string
		rate  float64 // the baseline's rate when known beforehand (the peer's)
	}
	const batches, single = "raw append, atomic batches of 100", "raw append, one at a time"
	want := []row{
		{"HTTP PUT allowlist, 4 clients, 8 keys", 40, batches, 0},
		{"HTTP PUT allowlist, 4 clients, 8 keys, vs peer", 40, "postgres durable update+audit, 4 clients", 400},
		{"HTTP PUT allowlist, 1 client, 4 keys", 10, single, 0},
		{"HTTP PUT allowlist, 1 client, 4 keys, vs peer", 10, "postgres durable update+audit, 1 clients", 100.5},
		{"HTTP PUT allowlist, 1 client, same key", 10, single, 0},
		{"HTTP CreateKey, 4 clients", 40, batches, 0},
		{"HTTP GET /healthz, 2 clients", 50, "", 0},
		{"HTTP POST /v1/verify, 2 clients", 50, "bare GET /healthz", 0},
	}
	if len(got) != len(want) {
		t.Fatalf("%d results, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		r := got[i]
		if r.Name != w.name || r.Count != w.count || r.Took <= 0 || r.P50 <= 0 || r.P99 < r.P50 || r.BaseName != w.base ||
			(w.base != "" && r.BaseRate <= 0) || (w.rate != 0 && r.BaseRate != w.rate) {
			t.Errorf("result %d: %+v; want %+v", i, r, w)
		}
	}
	if !strings.Contains(peerOut.String(), "4 clients: tps = 400.0") {
		t.Errorf("the peer's lines were not passed on: %q", peerOut.String())
	}
	var out bytes.Buffer
	bench.PrintHTTP(&out, bench.HTTPResult{Name: "HTTP x", Count: 2000, Unit: "writes", Took: time.Second,
		P50: time.Millisecond, P99: 3 * time.Millisecond, BaseName: "raw y", BaseRate: 4000})
	if line := out.String(); !strings.HasPrefix(line, "HTTP x ") || !strings.Contains(line, " 2000/s ") ||
		!strings.Contains(line, "p50      1ms  p99      3ms") || !strings.Contains(line, "| raw y 4000/s  ratio 0.50") || !strings.HasSuffix(line, "\n") {
		t.Errorf("printed %q", line)
	}
	var fields map[string]any
	if b, err := json.Marshal(got[0]); err != nil || json.Unmarshal(b, &fields) != nil || fields["rate"] == nil || fields["ratio"] == nil || fields["what"] != want[0].name {
		t.Errorf("JSON %v: %s", err, fields)
	}
}

// TestRunHTTPAddr runs the bench against a running server (--addr, --token) and then
// counts in that server what it did: every key it made is there, and each key's history
// holds its creation and every update the bench had acknowledged.
func TestRunHTTPAddr(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	n := nodetest.StartBinary(t)
	opts := smallHTTP(t.TempDir())
	opts.Addr, opts.Token = n.Addr, n.Root
	var got []bench.HTTPResult
	if err := bench.RunHTTP(ctx, opts, func(r bench.HTTPResult) { got = append(got, r) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 6 {
		t.Fatalf("%d results, want 6: %+v", len(got), got)
	}
	var wss struct{ Workspaces []wire.Workspace }
	n.JSON("GET", "/v1/workspaces", n.Root, nil, 200, &wss)
	var ws string
	for _, w := range wss.Workspaces {
		if strings.HasPrefix(w.ID, "bench-") {
			ws = w.ID
		}
	}
	if ws == "" {
		t.Fatalf("no bench workspace among %+v", wss.Workspaces)
	}
	var keys struct{ Keys []wire.Key }
	n.JSON("GET", "/v1/workspaces/"+ws+"/keys?limit=1000", n.Root, nil, 200, &keys)
	if want := opts.Keys + opts.Writes; len(keys.Keys) != want {
		t.Fatalf("%d keys in %s, want %d (%d to update, %d made by CreateKey)", len(keys.Keys), ws, want, opts.Keys, opts.Writes)
	}
	updates := 0
	for _, k := range keys.Keys {
		var h struct{ Events []wire.HistoryEntry }
		n.JSON("GET", fmt.Sprintf("/v1/workspaces/%s/keys/%s/history?limit=1000", ws, k.ID), n.Root, nil, 200, &h)
		updates += len(h.Events) - 1
	}
	if want := opts.Writes + 2*opts.SoloWrites; updates != want {
		t.Fatalf("the keys' histories hold %d updates, want %d", updates, want)
	}
}
