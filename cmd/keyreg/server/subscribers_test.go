package server_test

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

// natsCLI returns the path of the nats command-line tool (natscli). Without it the test
// fails in CI (CI set), and is skipped elsewhere.
func natsCLI(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	home, _ := os.UserHomeDir()
	if p := filepath.Join(home, "go", "bin", "nats"); fileExists(p) {
		return p
	}
	const install = "go install github.com/nats-io/natscli/nats@v0.5.0"
	if os.Getenv("CI") != "" {
		t.Fatal("the nats CLI is not installed; .ci/run installs it: " + install)
	}
	// On a developer's machine without it; TestConfinedSubscribers (events) checks the same
	// rights with raw JetStream API requests.
	t.Skip("the nats CLI is not installed (" + install + ")")
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// cliAs runs the nats CLI as a subscriber (its user, password and inbox prefix) and
// returns its combined output and error.
func cliAs(t *testing.T, bin, url string, s wire.NewSubscriber, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args = append([]string{"--server", url, "--user", s.NATSUser, "--password", s.Password, "--inbox-prefix", s.InboxPrefix, "--timeout", "3s"}, args...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "NATS_CONTEXT=", "HOME="+t.TempDir()) // no saved context
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// observer connects as the deprecated shared subscriber, which may list every consumer:
// the test's view of the stream's consumers.
func observer(t *testing.T, n *node) jetstream.Stream {
	t.Helper()
	pw, err := os.ReadFile(filepath.Join(n.dataDir, server.NATSSubscriberPasswordFile))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(n.NATSURL(), nats.UserInfo(server.DefaultNATSSubscriberUser, strings.TrimSpace(string(pw))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func consumerNames(t *testing.T, st jetstream.Stream) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var names []string
	l := st.ConsumerNames(ctx)
	for name := range l.Name() {
		names = append(names, name)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// openSSE opens GET .../events with token and returns once the stream answered 200; close
// ends it. Any other status is returned with a nil close.
func openSSE(t *testing.T, n *node, ws, token string) (status int, body string, close func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.url+"/v1/workspaces/"+ws+"/events?after=0", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := bufio.NewReader(resp.Body).ReadString(0)
		resp.Body.Close()
		cancel()
		return resp.StatusCode, b, nil
	}
	// Read the first event, so its consumer exists on the server.
	r := bufio.NewReader(resp.Body)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream: %v", err)
		}
		if strings.HasPrefix(line, "id: ") {
			break
		}
	}
	return 200, "", func() { cancel(); resp.Body.Close() }
}

// TestSubscriberIsolation gives two services NATS credentials of their own and attacks
// with one of them through the nats CLI: it cannot list keyreg's consumers or the other
// service's, delete them, read from the other's, nor hold more than its consumer limit;
// while it holds its maximum, keyreg's event streams and an online rebuild still work,
// and writes are applied and visible. The subscriber events hold no password; a removed
// subscriber can no longer connect.
func TestSubscriberIsolation(t *testing.T) {
	bin := natsCLI(t)
	const limit = 3
	n := startNode(t, "", listenNATS, sharedSubscriber, func(c *server.Config) { c.NATSSubscriberMaxConsumers = limit })
	f := newFixture(t, n, "acme")
	f.createKey(map[string]any{"name": "before"})
	url := n.NATSURL()

	var a, b wire.NewSubscriber
	n.json("POST", "/v1/subscribers", n.root, map[string]any{"name": "billing"}, 201, &a)
	n.json("POST", "/v1/subscribers", n.root, map[string]any{"name": "fraud"}, 201, &b)
	if a.NATSUser != "billing" || a.Password == "" || a.NATSURL != url || a.MaxConsumers != limit || a.InboxPrefix != "_INBOX.billing" {
		t.Fatalf("new subscriber %+v", a)
	}
	var dup problemBody
	n.json("POST", "/v1/subscribers", n.root, map[string]any{"name": "billing"}, 409, &dup)
	if dup.Code != "already_exists" || dup.Detail != `subscriber "billing" already exists` {
		t.Errorf("second add of billing: %+v", dup)
	}
	var list struct{ Subscribers []wire.Subscriber }
	n.json("GET", "/v1/subscribers", n.root, nil, 200, &list)
	if len(list.Subscribers) != 2 || list.Subscribers[0].Name != "billing" || list.Subscribers[1].Name != "fraud" {
		t.Fatalf("GET /v1/subscribers: %+v", list)
	}

	// The subscriber events are in the log, with a bcrypt hash and no password.
	var added []string
	n.Log.Read(context.Background(), events.SubscribersFilter(), 1, func(r events.Record) error {
		added = append(added, r.Subject)
		for _, pw := range []string{a.Password, b.Password} {
			if strings.Contains(string(r.Data), pw) {
				t.Errorf("a subscriber's password is in the log: %s", r.Data)
			}
		}
		if !strings.Contains(string(r.Data), `"password_hash":"$2a$`) {
			t.Errorf("no bcrypt hash in %s", r.Data)
		}
		return nil
	})
	if !slices.Equal(added, []string{"keyreg.system.subscriber.billing.added", "keyreg.system.subscriber.fraud.added"}) {
		t.Fatalf("subscriber events %v", added)
	}

	// fraud has a durable consumer; keyreg follows with an event stream.
	if out, err := cliAs(t, bin, url, b, "consumer", "add", events.StreamName, "fraud-1", "--pull", "--deliver", "all", "--ack", "explicit", "--defaults"); err != nil {
		t.Fatalf("fraud adds its consumer: %v\n%s", err, out)
	}
	if st, body, closeSSE := openSSE(t, n, "acme", n.root); st != 200 {
		t.Fatalf("event stream: %d %s", st, body)
	} else {
		defer closeSSE()
	}
	obs := observer(t, n)
	before := consumerNames(t, obs)
	var keyregs []string
	for _, c := range before {
		if c != "fraud-1" {
			keyregs = append(keyregs, c)
		}
	}
	if len(keyregs) < 2 { // the projector's, the event stream's, ...
		t.Fatalf("consumers %v: keyreg's own are missing", before)
	}

	// The attacks, by billing with the nats CLI.
	if out, err := cliAs(t, bin, url, a, "consumer", "ls", events.StreamName, "--names"); err == nil {
		t.Errorf("billing listed the consumers:\n%s", out)
	}
	for _, c := range append(keyregs, "fraud-1") {
		if out, err := cliAs(t, bin, url, a, "consumer", "rm", events.StreamName, c, "--force"); err == nil {
			t.Errorf("billing deleted consumer %s:\n%s", c, out)
		}
		if out, err := cliAs(t, bin, url, a, "consumer", "info", events.StreamName, c); err == nil {
			t.Errorf("billing read consumer %s's info:\n%s", c, out)
		}
	}
	if out, err := cliAs(t, bin, url, a, "consumer", "next", events.StreamName, "fraud-1", "--count", "1", "--wait", "2s"); err == nil || strings.Contains(out, "keyreg.") {
		t.Errorf("billing read from fraud's consumer:\n%s", out)
	}
	if out, err := cliAs(t, bin, url, a, "consumer", "edit", events.StreamName, "fraud-1", "--max-pending", "1", "--force"); err == nil {
		t.Errorf("billing changed fraud's consumer:\n%s", out)
	}
	if got := consumerNames(t, obs); !slices.Equal(got, before) {
		t.Fatalf("consumers after the attacks %v, before %v", got, before)
	}

	// billing takes every consumer it may have, and no more.
	for i := 1; i <= limit; i++ {
		name := events.ConsumerNames("billing", limit)[i-1]
		if out, err := cliAs(t, bin, url, a, "consumer", "add", events.StreamName, name, "--pull", "--deliver", "all", "--ack", "none", "--defaults"); err != nil {
			t.Fatalf("billing adds %s: %v\n%s", name, err, out)
		}
	}
	for _, name := range []string{"billing-4", "billing", "extra"} {
		if out, err := cliAs(t, bin, url, a, "consumer", "add", events.StreamName, name, "--pull", "--deliver", "all", "--ack", "none", "--defaults"); err == nil {
			t.Errorf("billing added consumer %s beyond its %d:\n%s", name, limit, out)
		}
	}
	// billing can read through its own.
	if out, err := cliAs(t, bin, url, a, "consumer", "next", events.StreamName, "billing-1", "--count", "1", "--wait", "5s", "--raw"); err != nil || !strings.Contains(out, "keyreg.workspace.created.v1") {
		t.Errorf("billing reads through billing-1: %v\n%s", err, out)
	}

	// keyreg still serves: a new event stream, an online rebuild, a write seen by a read.
	st, body, closeSSE2 := openSSE(t, n, "acme", n.root)
	if st != 200 {
		t.Fatalf("an event stream while billing holds its maximum: %d %s", st, body)
	}
	closeSSE2()
	n.json("POST", "/v1/admin/replay", n.root, nil, 202, nil)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var rs httpapi.ReplayStatus
		n.json("GET", "/v1/admin/replay", n.root, nil, 200, &rs)
		if rs.State == "done" {
			break
		}
		if rs.State == "failed" || time.Now().After(deadline) {
			t.Fatalf("online rebuild while billing holds its maximum: %+v", rs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	k := f.createKey(map[string]any{"name": "after the attack"})
	var got wire.Key
	n.json("GET", "/v1/workspaces/acme/keys/"+k.Key.ID, f.writer, nil, 200, &got)
	if got.Name != "after the attack" {
		t.Fatalf("the write after the attack reads %+v", got)
	}

	// Removed, billing can no longer connect; fraud still can.
	n.json("DELETE", "/v1/subscribers/billing", n.root, nil, 204, nil)
	if out, err := cliAs(t, bin, url, a, "stream", "info", events.StreamName); err == nil {
		t.Errorf("a removed subscriber connected:\n%s", out)
	}
	if out, err := cliAs(t, bin, url, b, "stream", "info", events.StreamName); err != nil {
		t.Errorf("fraud after billing's removal: %v\n%s", err, out)
	}
	n.json("DELETE", "/v1/subscribers/billing", n.root, nil, 404, nil)

	// A restart keeps fraud's credentials (from the stream) and not billing's.
	n.stop()
	n2 := startNode(t, n.dataDir, listenNATS)
	url2 := n2.NATSURL()
	if out, err := cliAs(t, bin, url2, b, "stream", "info", events.StreamName); err != nil {
		t.Errorf("fraud after a restart: %v\n%s", err, out)
	}
	if out, err := cliAs(t, bin, url2, a, "stream", "info", events.StreamName); err == nil {
		t.Errorf("removed billing connected after a restart:\n%s", out)
	}
}

// TestSSEConsumersGone opens ten event streams, drops them, and checks that their
// consumers are gone from the server within 10 seconds (polled with a deadline).
func TestSSEConsumersGone(t *testing.T) {
	n := startNode(t, "", listenNATS, sharedSubscriber, func(c *server.Config) { c.SSEMaxPerKey = 20 })
	newFixture(t, n, "acme")
	reader := rootKey(t, n, "acme", "reader", "keyreg.events.read")
	obs := observer(t, n)
	base := consumerNames(t, obs)
	var closers []func()
	for range 10 {
		st, body, closeSSE := openSSE(t, n, "acme", reader.Secret)
		if st != 200 {
			t.Fatalf("event stream: %d %s", st, body)
		}
		closers = append(closers, closeSSE)
	}
	if open := consumerNames(t, obs); len(open) < len(base)+10 {
		t.Fatalf("%d consumers with ten event streams open, %d before", len(open), len(base))
	}
	for _, c := range closers {
		c()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := consumerNames(t, obs)
		if len(got) <= len(base) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after ten event streams ended, %d consumers remain (%d before): %v", len(got), len(base), got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSSEStreamCaps: a key may hold SSEMaxPerKey event streams (429 beyond, a
// problem+json); the server SSEMaxTotal (503 beyond); a closed stream frees its place.
func TestSSEStreamCaps(t *testing.T) {
	n := startNode(t, "", func(c *server.Config) { c.SSEMaxPerKey, c.SSEMaxTotal = 2, 3 })
	newFixture(t, n, "acme")
	// Without a NATS listener there are no subscribers to manage.
	n.json("POST", "/v1/subscribers", n.root, map[string]any{"name": "svc"}, 409, nil)
	one := rootKey(t, n, "acme", "one", "keyreg.events.read")
	other := rootKey(t, n, "acme", "other", "keyreg.events.read")
	var mu sync.Mutex
	var closers []func()
	open := func(token string, want int, code string) {
		t.Helper()
		st, body, c := openSSE(t, n, "acme", token)
		if st != want {
			t.Fatalf("status %d, want %d: %s", st, want, body)
		}
		if c != nil {
			mu.Lock()
			closers = append(closers, c)
			mu.Unlock()
			return
		}
		if !strings.Contains(body, `"code":"`+code+`"`) {
			t.Fatalf("answer %s, want code %s", body, code)
		}
	}
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	open(one.Secret, 200, "")
	open(one.Secret, 200, "")
	open(one.Secret, 429, "too_many_streams")
	open(other.Secret, 200, "")
	open(other.Secret, 503, "too_many_streams")
	closers[0]()
	closers = closers[1:]
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _, c := openSSE(t, n, "acme", one.Secret)
		if st == 200 {
			c()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed event stream did not free its place: %d", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rootKey creates a key in ws with the root key, which may grant every keyreg.* permission
// (a workspace's writer may grant only those it holds).
func rootKey(t *testing.T, n *node, ws, name string, perms ...string) wire.KeyWithSecret {
	t.Helper()
	var k wire.KeyWithSecret
	n.json("POST", "/v1/workspaces/"+ws+"/keys", n.root, map[string]any{"name": name, "permissions": perms}, 201, &k)
	return k
}
