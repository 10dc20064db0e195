package bench_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/bench"
)

// TestRun runs the bench small: every measurement is reported once, in order, counting
// what it did (the drain and the replay count every event the stream holds by then).
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var got []bench.Result
	if err := bench.Run(ctx, bench.Options{Events: 40, Publishers: 4, Dir: t.TempDir()}, func(r bench.Result) { got = append(got, r) }); err != nil {
		t.Fatal(err)
	}
	stream := 40 + 40 + 400 + 1 + 40 // three append runs, the workspace, the keys
	want := []struct {
		name  string
		count int
		unit  string
	}{
		{"append, one at a time", 40, "events"},
		{"append, 4 publishers", 40, "events"},
		{"append, atomic batches of 100", 400, "events"},
		{"CreateKey commands, 4 clients", 40, "commands"},
		{"drain the stream (ordered consumer)", stream, "events"},
		{"replay into Pebble views", stream, "events"},
		{"Verify (in-process, one core)", 1_000_000, "verifies"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d results, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if r := got[i]; r.Name != w.name || r.Count != w.count || r.Unit != w.unit || r.Took <= 0 {
			t.Errorf("result %d: %+v; want %s: %d %s", i, r, w.name, w.count, w.unit)
		}
	}
	var out bytes.Buffer
	bench.Print(&out, bench.Result{Name: "x", Count: 2000, Took: time.Second, Unit: "events"})
	if line := out.String(); !strings.Contains(line, "2000/s") || !strings.Contains(line, "500µs each") || !strings.HasSuffix(line, "\n") {
		t.Fatalf("printed %q", line)
	}
}
