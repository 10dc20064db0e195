package bench_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/bench"
)

// TestRun runs the bench small: every measurement is reported once, in order, counting
// what it did (the drain and the replay count every event the stream holds by then), and
// each run of updates is followed by where its time went, stage by stage.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var got []bench.Result
	if err := bench.Run(ctx, bench.Options{Events: 40, Publishers: 4, Dir: t.TempDir()}, func(r bench.Result) { got = append(got, r) }); err != nil {
		t.Fatal(err)
	}
	// The headlines; after each update run, its 8 stages.
	var heads []bench.Result
	for i := 0; i < len(got); i++ {
		heads = append(heads, got[i])
		if strings.HasPrefix(got[i].Name, "update allowlist") {
			for j := 1; j <= 8; j++ {
				if i+j >= len(got) || !strings.HasPrefix(got[i+j].Name, "  ") || got[i+j].Count != got[i].Count || got[i+j].Unit != "writes" {
					t.Fatalf("result %d (%s) is not followed by 8 stages: %+v", i, got[i].Name, got[i+1:])
				}
			}
			i += 8
		}
	}
	modes := []string{"", ", group commit"}
	writeModes := append(modes, ", group commit, state from views")
	type row struct {
		name  string
		count int
		unit  string
	}
	want := []row{
		{"append, one at a time", 40, "events"},
		{"append, 4 publishers", 40, "events"},
		{"append, 4 publishers, group commit", 40, "events"},
		{"append, atomic batches of 100", 400, "events"},
	}
	// CreateKey in 5 rounds per mode: 10 commands from 1 client (2 a round), 40 from 4.
	for _, c := range []struct{ clients, count int }{{1, 10}, {4, 40}} {
		for _, m := range modes {
			want = append(want, row{fmt.Sprintf("CreateKey commands, %d clients%s", c.clients, m), c.count, "commands"})
		}
	}
	// Updates: 5 rounds of at least one write.
	for _, u := range []struct {
		name  string
		count int
	}{{"update allowlist, 1 client, one key, changes 1-5", 5}, {"update allowlist, 1 client, one key, changes 6-25", 20}, {"update allowlist, 4 clients, own keys", 40}} {
		for _, m := range writeModes {
			want = append(want, row{u.name + m, u.count, "writes"})
		}
	}
	// Every command and update appends one event; the update runs first make a workspace,
	// a caller's key and 4 keys per mode.
	stream := 40 + 40 + 40 + 400 + 1 + 2*(10+40) + 2 + 4*3 + 3*(5+20+40)
	want = append(want,
		row{"drain the stream (ordered consumer)", stream, "events"},
		row{"replay into Pebble views", stream, "events"},
		row{"Verify (in-process, one core)", 1_000_000, "verifies"})
	if len(heads) != len(want) {
		t.Fatalf("%d results, want %d: %+v", len(heads), len(want), heads)
	}
	for i, w := range want {
		if r := heads[i]; r.Name != w.name || r.Count != w.count || r.Unit != w.unit || r.Took <= 0 {
			t.Errorf("result %d: %+v; want %s: %d %s", i, r, w.name, w.count, w.unit)
		}
	}
	var out bytes.Buffer
	bench.Print(&out, bench.Result{Name: "x", Count: 2000, Took: time.Second, Unit: "events"})
	if line := out.String(); !strings.Contains(line, "2000/s") || !strings.Contains(line, "500µs each") || !strings.HasSuffix(line, "\n") {
		t.Fatalf("printed %q", line)
	}
}
