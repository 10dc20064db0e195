package server_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

// keyNotices returns the expiry notices in a key's history, one string each:
// "expiring 7d" or "expired".
func keyNotices(t *testing.T, n *nodetest.Node, token, ws, id string) []string {
	t.Helper()
	var h auditPage
	n.JSON("GET", "/v1/workspaces/"+ws+"/keys/"+id+"/history?limit=1000", token, nil, 200, &h)
	var out []string
	for _, e := range h.decode(t) {
		p, err := e.Payload()
		if err != nil {
			t.Fatal(err)
		}
		switch p := p.(type) {
		case *events.KeyExpiring:
			out = append(out, "expiring "+p.Threshold)
		case *events.KeyExpired:
			out = append(out, "expired")
		}
	}
	return out
}

// waitNotices waits (at most a minute) until the key's notices are want, and fails with
// what they are otherwise.
func waitNotices(t *testing.T, n *nodetest.Node, token, ws, id string, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = strings.Join(keyNotices(t, n, token, ws, id), ", "); got == want {
			return
		}
	}
	t.Fatalf("notices of key %s: %q, want %q\n%s", id, got, want, n.Output.String())
}

// TestExpiryNoticesBinary holds issue 15's expiry warnings on the real binary: a key
// expiring in 36 hours gets, at once, one keyreg.key.expiring.v1 for the 30-day and one
// for the 7-day threshold (not the 1-day); a key with a short expiry gets
// keyreg.key.expired.v1 once it passed; a restart appends none of them again (the scans
// after it, which reach a key made after the restart, find them appended); the notices
// are in the workspace's audit, and a key's version after them takes an If-Match.
func TestExpiryNoticesBinary(t *testing.T) {
	args := []string{"--expiry-scan-interval", "100ms"}
	n := nodetest.StartBinaryWith(t, nodetest.BinaryOptions{Args: args})
	n.JSON("POST", "/v1/workspaces", n.Root, map[string]any{"id": "acme", "name": "Acme"}, 201, nil)
	create := func(name string, expires time.Time) wire.KeyWithSecret {
		var k wire.KeyWithSecret
		n.JSON("POST", "/v1/workspaces/acme/keys", n.Root, map[string]any{"name": name, "permissions": []string{"users.track"},
			"expires_at": expires.UTC().Format(time.RFC3339Nano)}, 201, &k)
		return k
	}
	long := create("long", time.Now().Add(36*time.Hour))
	short := create("short", time.Now().Add(3*time.Second))
	never := create("never", time.Now().Add(60*24*time.Hour))

	waitNotices(t, n, n.Root, "acme", long.Key.ID, "expiring 30d, expiring 7d")
	waitNotices(t, n, n.Root, "acme", short.Key.ID, "expiring 30d, expiring 7d, expiring 1d, expired")
	var v wire.VerifyResponse
	n.JSON("POST", "/v1/verify", n.Root, map[string]any{"key": short.Secret, "ip": "203.0.113.9"}, 200, &v)
	if v.Code != "EXPIRED" {
		t.Fatalf("verify of the expired key: %+v", v)
	}

	// On the workspace's event stream, like any event: the stream from the start holds
	// the five warnings and the expired notice, in the log's order.
	sse := openEvents(t, wrap(n), "acme", n.Root, "?after=0")
	var got []string
	for len(got) < 6 {
		e, ok := sse.next()
		if !ok {
			t.Fatalf("the event stream ended after %v", got)
		}
		if strings.HasPrefix(e.typ, "keyreg.key.expir") {
			got = append(got, e.typ)
		}
	}
	sse.close()
	if strings.Count(strings.Join(got, " "), "keyreg.key.expiring.v1") != 5 || !slices.Contains(got, "keyreg.key.expired.v1") {
		t.Fatalf("notices on the event stream: %v", got)
	}

	// In the audit, filtered by type, like any event.
	var a auditPage
	n.JSON("GET", "/v1/workspaces/acme/audit?type=keyreg.key.expiring.v1&limit=100", n.Root, nil, 200, &a)
	if got := len(a.decode(t)); got != 5 {
		t.Fatalf("audit holds %d keyreg.key.expiring.v1, want 5", got)
	}

	// The notices advanced the key's version: an If-Match taken before them is stale (412),
	// the version after them takes one.
	n.JSON("PATCH", "/v1/workspaces/acme/keys/"+long.Key.ID, n.Root, map[string]any{"name": "stale"}, 412, nil,
		"If-Match", fmt.Sprintf("%q", strconv.FormatUint(long.Key.Version, 10)))
	var k wire.Key
	h := n.JSON("GET", "/v1/workspaces/acme/keys/"+long.Key.ID, n.Root, nil, 200, &k)
	if k.Version <= long.Key.Version {
		t.Fatalf("version after the notices: %d (created at %d)", k.Version, long.Key.Version)
	}
	n.JSON("PATCH", "/v1/workspaces/acme/keys/"+long.Key.ID, n.Root, map[string]any{"name": "long-renamed"}, 200, nil, "If-Match", h.Get("ETag"))

	// A restart: the scans after it append nothing again.
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	n = nodetest.StartBinaryWith(t, nodetest.BinaryOptions{DataDir: n.DataDir, Root: n.Root, Args: args})
	after := create("after-restart", time.Now().Add(36*time.Hour))
	// Its notices come from a scan that looked at every key, the older ones first.
	waitNotices(t, n, n.Root, "acme", after.Key.ID, "expiring 30d, expiring 7d")
	marker := create("marker", time.Now().Add(36*time.Hour))
	waitNotices(t, n, n.Root, "acme", marker.Key.ID, "expiring 30d, expiring 7d") // one more full scan
	for _, c := range []struct{ id, want string }{
		{long.Key.ID, "expiring 30d, expiring 7d"},
		{short.Key.ID, "expiring 30d, expiring 7d, expiring 1d, expired"},
		{never.Key.ID, ""},
	} {
		if got := strings.Join(keyNotices(t, n, n.Root, "acme", c.id), ", "); got != c.want {
			t.Errorf("after the restart, notices of %s: %q, want %q", c.id, got, c.want)
		}
	}
}

// TestExpiryWarningsFlag holds that a bad --expiry-warnings fails serve with one line
// naming the flag and the value.
func TestExpiryWarningsFlag(t *testing.T) {
	for _, bad := range []string{"7x", "0d", "-1h", "30d,,abc"} {
		out, err := runServe(t, "--expiry-warnings", bad)
		if err == nil {
			t.Fatalf("--expiry-warnings %q: serve started", bad)
		}
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.Contains(out, "--expiry-warnings") || !strings.Contains(out, fmt.Sprintf("%q", bad)) {
			t.Errorf("--expiry-warnings %q: %q", bad, out)
		}
	}
}

// runServe runs `keyreg serve` on a fresh data dir with args, for a start that must fail,
// and returns what it printed and its exit error (killed after a minute).
func runServe(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodetest.Binary(t), append([]string{"serve", "--data", t.TempDir(), "--http", "127.0.0.1:0", "--nats-listen", ""}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestExpiryNoticesOnNATS holds that expiry notices reach subscribing services on the
// key's NATS subjects, as CloudEvents of their type, like every other event.
func TestExpiryNoticesOnNATS(t *testing.T) {
	n := startNode(t, "", listenNATS, sharedSubscriber, func(c *server.Config) { c.Expiry.ScanInterval = 50 * time.Millisecond })
	pw, err := os.ReadFile(filepath.Join(n.dataDir, server.NATSSubscriberPasswordFile))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(n.NATSURL(), nats.UserInfo(server.DefaultNATSSubscriberUser, strings.TrimSpace(string(pw))))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, _ := jetstream.New(nc)
	oc, err := js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"keyreg.acme.key.*.expiring"}})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, n, "acme")
	k := f.createKey(map[string]any{"name": "soon", "expires_at": time.Now().Add(36 * time.Hour).UTC().Format(time.RFC3339)})
	var got []string
	for len(got) < 2 {
		m, err := oc.Next(jetstream.FetchContext(ctx))
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		e, err := events.Decode(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		p, err := e.Payload()
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject() != "keyreg.acme.key."+k.Key.ID+".expiring" || e.Type != events.TypeKeyExpiring {
			t.Fatalf("message on %s of type %s", m.Subject(), e.Type)
		}
		got = append(got, p.(*events.KeyExpiring).Threshold)
	}
	if strings.Join(got, " ") != "30d 7d" {
		t.Fatalf("warnings on NATS: %v", got)
	}
}
