package bench_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/bench"
	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
)

// TestMillion runs the million-key benchmark with 2,000 keys (two workspaces) on the real
// binary: every figure is reported, once, in order; the server answered VALID for every
// verify asked (Million fails otherwise), and both embedded verifiers knew every key (the
// 2,000 and the root key) and the second started from the server's snapshot.
func TestMillion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var got []bench.Figure
	err := bench.Million(ctx, bench.MillionOptions{Keys: 2000, Verifies: 500, Clients: 4, Binary: nodetest.Binary(t), Dir: t.TempDir()},
		func(f bench.Figure) { got = append(got, f) })
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ what, unit string }{
		{"build: keys appended (2 workspaces, atomic batches of 100)", "keys"},
		{"build: keys appended per second", "keys/s"},
		{"replay: first start to ready, views built (", "s"},
		{"replay: events applied per second", "events/s"},
		{"serve VmHWM (first start, ready)", "MB"},
		{"serve VmRSS (first start, ready)", "MB"},
		{"verify over HTTP, 4 clients: keys verified VALID", "verifies"},
		{"verify over HTTP: rate", "verifies/s"},
		{"verify over HTTP: p50", "ms"},
		{"verify over HTTP: p99", "ms"},
		{"serve VmHWM (first start, after verifies)", "MB"},
		{"serve VmRSS (first start, after verifies)", "MB"},
		{"embedded verifier start-up, from sequence 1 (2001 keys)", "s"},
		{"embedded verifier start-up, from the server's snapshot (2001 keys)", "s"},
		{"shutdown (SIGTERM to exit, verify snapshot written)", "s"},
		{"restart to ready, existing views", "s"},
		{"serve VmHWM (restart, ready)", "MB"},
		{"serve VmRSS (restart, ready)", "MB"},
		{"verify over HTTP, 4 clients: keys verified VALID", "verifies"},
		{"verify over HTTP: rate", "verifies/s"},
		{"verify over HTTP: p50", "ms"},
		{"verify over HTTP: p99", "ms"},
		{"serve VmHWM (restart, after verifies)", "MB"},
		{"serve VmRSS (restart, after verifies)", "MB"},
		{"shutdown (SIGTERM to exit, verify snapshot written)", "s"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d figures, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		f := got[i]
		if !strings.HasPrefix(f.What, w.what) || f.Unit != w.unit || f.Value <= 0 {
			t.Errorf("figure %d: %+v; want %q in %s, positive", i, f, w.what, w.unit)
		}
	}
	if got[0].Value != 2000 || got[6].Value != 500 {
		t.Errorf("built %v keys, verified %v; want 2000 and 500", got[0].Value, got[6].Value)
	}
	var out bytes.Buffer
	bench.PrintFigure(&out, bench.Figure{What: "x", Value: 12.25, Unit: "ms"})
	bench.PrintFigure(&out, bench.Figure{What: "y", Value: 3, Unit: "s"})
	if lines := strings.Split(out.String(), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "x ") || !strings.HasSuffix(lines[0], " 12.2 ms") || !strings.HasSuffix(lines[1], " 3 s") {
		t.Fatalf("printed %q", out.String())
	}
}
