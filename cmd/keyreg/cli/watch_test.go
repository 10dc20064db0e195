package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

// watchFixture makes workspace acme with a key whose allowlist changes and that is then
// revoked, and returns the harness and the key id.
func watchFixture(t *testing.T) (*harness, string) {
	t.Helper()
	h := keyFixture(t)
	var k wire.KeyWithSecret
	h.okJSON(&k, "key", "create", "-w", "acme", "--name", "Prod server", "--permission", "users.track", "--allow", "203.0.113.0/24")
	h.ok("key", "allowlist", "-w", "acme", k.Key.ID, "--allow", "198.51.100.0/24", "--reason", "office moved")
	h.ok("key", "create", "-w", "acme", "--name", "other")
	h.ok("key", "revoke", "-w", "acme", k.Key.ID)
	return h, k.Key.ID
}

// watchTimeout bounds one run of keyreg watch in these tests.
const watchTimeout = 30 * time.Second

// runWatch runs keyreg with args (a watch) with env, within watchTimeout: a watch still
// waiting then for events that do not come fails the test instead of hanging it.
func (h *harness) runWatch(env map[string]string, args ...string) result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), watchTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := Run(ctx, args, func(k string) string { return env[k] }, strings.NewReader(""), &stdout, &stderr)
	if ctx.Err() != nil {
		h.t.Fatalf("keyreg %s: still running after %s; stdout %q", strings.Join(args, " "), watchTimeout, stdout.String())
	}
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// watchOK runs a watch (see runWatch), which must exit 0, and returns its stdout.
func (h *harness) watchOK(args ...string) string {
	h.t.Helper()
	r := h.runWatch(h.env, args...)
	if r.code != 0 {
		h.t.Fatalf("keyreg %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// watchFails runs a watch (see runWatch) and checks it fails as h.fails does.
func (h *harness) watchFails(code int, want []string, args ...string) {
	h.t.Helper()
	h.check(h.runWatch(h.env, args...), code, want, args)
}

// watchJSON runs keyreg watch --json with args and returns the sequences and types seen.
func (h *harness) watchJSON(args ...string) ([]uint64, []string) {
	h.t.Helper()
	out := h.watchOK(append([]string{"watch", "-w", "acme", "--json"}, args...)...)
	var seqs []uint64
	var types []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e wire.HistoryEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			h.t.Fatalf("watch --json line %q: %v", line, err)
		}
		ev, err := events.Decode(e.Event)
		if err != nil {
			h.t.Fatal(err)
		}
		seqs = append(seqs, e.Sequence)
		types = append(types, string(ev.Type))
	}
	return seqs, types
}

func TestWatchLines(t *testing.T) {
	h, id := watchFixture(t)
	out := h.watchOK("watch", "-w", "acme", "--from-seq", "1", "--count", "5")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("watch --count 5 printed %d lines:\n%s", len(lines), out)
	}
	contains(t, "workspace line", lines[0], "keyreg.workspace.created.v1", "workspace/acme", `created "Acme Inc"`)
	contains(t, "key line", lines[1], "keyreg.key.created.v1", "key/"+id, `"Prod server"`, "permissions users.track", "allowlist 203.0.113.0/24", "by ")
	contains(t, "allowlist line", lines[2], "keyreg.key.allowlist_updated.v1", "allowlist 198.51.100.0/24 (+198.51.100.0/24 -203.0.113.0/24)", `reason "office moved"`, "from 127.0.0.1")
	contains(t, "revoke line", lines[4], "keyreg.key.revoked.v1", "revoked (was active)")
	if _, err := time.Parse(time.RFC3339, strings.Fields(lines[0])[0]); err != nil {
		t.Errorf("a line does not start with the time: %q", lines[0])
	}

	// Filters: by type, by key, both.
	if _, types := h.watchJSON("--from-seq", "1", "--count", "2", "--type", "keyreg.key.created.v1"); !slices.Equal(types, []string{"keyreg.key.created.v1", "keyreg.key.created.v1"}) {
		t.Errorf("--type: %v", types)
	}
	if _, types := h.watchJSON("--from-seq", "1", "--count", "3", "--key", id); !slices.Equal(types, []string{"keyreg.key.created.v1", "keyreg.key.allowlist_updated.v1", "keyreg.key.revoked.v1"}) {
		t.Errorf("--key: %v", types)
	}
	if _, types := h.watchJSON("--from-seq", "1", "--count", "1", "--key", id, "--type", "keyreg.key.revoked.v1"); !slices.Equal(types, []string{"keyreg.key.revoked.v1"}) {
		t.Errorf("--key --type: %v", types)
	}

	h.watchFails(2, []string{"which workspace"}, "watch")
	h.watchFails(2, []string{"from-seq", "from-time"}, "watch", "-w", "acme", "--from-seq", "1", "--from-time", "2026-01-01T00:00:00Z")
	h.watchFails(2, []string{"--from-time"}, "watch", "-w", "acme", "--from-time", "yesterday")
	h.watchFails(1, []string{"400 invalid_input", "keyreg.key.deleted.v1"}, "watch", "-w", "acme", "--type", "keyreg.key.deleted.v1")
	h.watchFails(1, []string{"404"}, "watch", "-w", "nope")
	h.watchFails(2, []string{"--durable"}, "watch", "-w", "acme", "--durable", "../x")
}

// TestWatchDurable: runs with one --durable name, stopped after a few events each, with
// changes made between the runs, together see every event of the workspace once, in
// order; a new durable starting from now remembers its start even if it saw nothing.
func TestWatchDurable(t *testing.T) {
	h, _ := watchFixture(t)
	state := t.TempDir()
	durable := func(count int, extra ...string) []uint64 {
		t.Helper()
		seqs, _ := h.watchJSON(append([]string{"--durable", "siem", "--state-dir", state, "--count", fmt.Sprint(count)}, extra...)...)
		return seqs
	}
	var got []uint64
	got = append(got, durable(2, "--from-seq", "1")...)
	got = append(got, durable(2, "--from-seq", "1")...) // the saved position wins
	h.ok("key", "create", "-w", "acme", "--name", "between runs")
	got = append(got, durable(1)...)
	got = append(got, durable(1)...)

	want, _ := h.watchJSON("--from-seq", "1", "--count", "6") // acme's 6 events
	if !slices.Equal(got, want) {
		t.Fatalf("durable runs saw %v, want %v", got, want)
	}
	b, err := os.ReadFile(filepath.Join(state, "acme.siem.json"))
	if err != nil || !bytes.Contains(b, []byte(fmt.Sprintf(`"last_seq":%d`, want[len(want)-1]))) {
		t.Fatalf("state file %s, %v", b, err)
	}

	// A new durable from now: its first run sees nothing (interrupted once it has saved
	// where it starts), yet the next run gets what happened in between.
	ctx, cancel := context.WithTimeout(context.Background(), watchTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	ran := make(chan int, 1)
	go func() {
		ran <- Run(ctx, []string{"watch", "-w", "acme", "--durable", "fresh", "--state-dir", state}, func(k string) string { return h.env[k] }, strings.NewReader(""), &stdout, &stderr)
	}()
	for tick := time.NewTicker(5 * time.Millisecond); ; {
		if _, err := os.Stat(filepath.Join(state, "acme.fresh.json")); err == nil {
			tick.Stop()
			break
		}
		select {
		case <-tick.C:
		case code := <-ran:
			t.Fatalf("the fresh durable watch ended before saving its start: exit %d, stderr %q", code, stderr.String())
		}
	}
	cancel()
	if code := <-ran; code != 0 || stdout.Len() != 0 { // Run returns once ctx is done
		t.Fatalf("interrupted watch: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
	var k wire.KeyWithSecret
	h.okJSON(&k, "key", "create", "-w", "acme", "--name", "while away")
	seqs, types := h.watchJSON("--durable", "fresh", "--state-dir", state, "--count", "1")
	if len(seqs) != 1 || seqs[0] != k.Key.Version || types[0] != "keyreg.key.created.v1" {
		t.Fatalf("fresh durable resumed with %v %v, want the key created at %d", seqs, types, k.Key.Version)
	}
}

// TestWatchFromNow: without a start flag, watch prints only what happens after it starts.
// It reaches the server through a proxy that says when the event stream is open (the
// server has then fixed where it starts).
func TestWatchFromNow(t *testing.T) {
	h, _ := watchFixture(t)
	upstream, err := url.Parse(h.env["KEYREG_ADDR"])
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan string, 1)
	rp := httputil.NewSingleHostReverseProxy(upstream)
	rp.ModifyResponse = func(resp *http.Response) error {
		if strings.HasSuffix(resp.Request.URL.Path, "/events") && resp.StatusCode == http.StatusOK {
			select {
			case opened <- resp.Header.Get(wire.StartSequenceHeader):
			default:
			}
		}
		return nil
	}
	proxy := httptest.NewServer(rp)
	defer proxy.Close()
	env := maps.Clone(h.env)
	env["KEYREG_ADDR"] = proxy.URL

	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), watchTimeout)
		defer cancel()
		var stdout, stderr bytes.Buffer
		code := Run(ctx, []string{"watch", "-w", "acme", "--count", "1"}, func(k string) string { return env[k] }, strings.NewReader(""), &stdout, &stderr)
		done <- result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	}()
	var r result
	select {
	case start := <-opened:
		var k wire.KeyWithSecret
		h.okJSON(&k, "key", "create", "-w", "acme", "--name", "new one")
		if n, err := strconv.ParseUint(start, 10, 64); err != nil || n > k.Key.Version {
			t.Errorf("the stream from now started at %q, after the new key at %d", start, k.Key.Version)
		}
		r = <-done // within watchTimeout
		if r.code != 0 || !strings.Contains(r.stdout, "key/"+k.Key.ID) || strings.Count(r.stdout, "\n") != 1 {
			t.Fatalf("watch from now: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	case r = <-done:
		t.Fatalf("watch ended before its stream opened: exit %d, stderr %q", r.code, r.stderr)
	}
}
