package server_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// receiver is a webhook endpoint that checks every delivery as the Standard Webhooks
// specification says, with code of its own (not package webhook's): the secret's key is
// the base64 after "whsec_"; the signed content is "<webhook-id>.<webhook-timestamp>.<body>";
// webhook-signature holds space-separated "v1,<base64 HMAC-SHA256>" entries, one of which
// must match; the timestamp must be within 5 minutes of now.
type receiver struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	key      []byte
	fail     bool     // answer 500 (after checking the signature)
	order    []string // webhook-ids of the accepted deliveries, in the order accepted
	types    map[string]string
	accepted map[string]int // webhook-id -> accepted deliveries
	failed   int            // deliveries answered 500
	bad      []string       // what was wrong with deliveries that failed the checks
	changed  chan struct{}
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, types: map[string]string{}, accepted: map[string]int{}, changed: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setSecret(secret string) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if !strings.HasPrefix(secret, "whsec_") || err != nil || len(key) < 24 || len(key) > 64 {
		r.t.Fatalf("secret %q: want whsec_ and the base64 of 24 to 64 bytes (%v, %d bytes)", secret, err, len(key))
	}
	r.mu.Lock()
	r.key = key
	r.mu.Unlock()
}

func (r *receiver) setFail(fail bool) {
	r.mu.Lock()
	r.fail = fail
	r.mu.Unlock()
}

// verify checks a delivery's signature and timestamp; "" when it is good.
func verifyStandardWebhook(key []byte, h http.Header, body []byte, now time.Time) string {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return fmt.Sprintf("missing headers: id %q timestamp %q signature %q", id, ts, sigs)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "bad timestamp " + ts
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return "timestamp " + ts + " too far from now"
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return ""
		}
	}
	return "no signature matches: " + sigs
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if why := verifyStandardWebhook(r.key, req.Header, body, time.Now()); why != "" {
		r.bad = append(r.bad, why)
		http.Error(w, why, http.StatusUnauthorized)
		return
	}
	var ev struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID != req.Header.Get("webhook-id") || ev.Type == "" {
		r.bad = append(r.bad, fmt.Sprintf("body %s is not the CloudEvent of webhook-id %s", body, req.Header.Get("webhook-id")))
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	if req.Header.Get("Content-Type") != "application/cloudevents+json" {
		r.bad = append(r.bad, "content type "+req.Header.Get("Content-Type"))
	}
	if r.fail {
		r.failed++
		http.Error(w, "down for a while", http.StatusInternalServerError)
	} else {
		if r.accepted[ev.ID] == 0 {
			r.order = append(r.order, ev.ID)
			r.types[ev.ID] = ev.Type
		}
		r.accepted[ev.ID]++
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// waitFor waits (at most a minute) until cond holds of the receiver, under its lock.
func (r *receiver) waitFor(what string, cond func() bool) {
	r.t.Helper()
	defer func(start time.Time) { r.t.Logf("waited %s for %s", time.Since(start), what) }(time.Now())
	deadline := time.After(time.Minute)
	for {
		r.mu.Lock()
		ok, ch := cond(), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			r.t.Fatalf("webhook receiver: no %s within a minute; accepted %v, failed %d, bad %v", what, r.order, r.failed, r.bad)
		}
	}
}

// keyEvents returns the ids and types of workspace ws's key events in the log, in stream
// order.
func keyEvents(t *testing.T, n *nodetest.Node, ws string) (ids, types []string) {
	t.Helper()
	var page struct {
		Events []wire.HistoryEntry `json:"events"`
	}
	n.JSON("GET", "/v1/workspaces/"+ws+"/audit?limit=1000", n.Root, nil, 200, &page)
	for _, e := range page.Events {
		var ev struct {
			ID   string `json:"id"`
			Type string `json:"type"`
		}
		if err := json.Unmarshal(e.Event, &ev); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(ev.Type, "keyreg.key.") {
			ids, types = append(ids, ev.ID), append(types, ev.Type)
		}
	}
	return ids, types
}

// TestWebhookDeliveries runs a key scenario against the real binary with a webhook on
// keyreg.key.* whose receiver checks every signature: each key event arrives exactly once
// and in stream order; while the receiver answers 500 the deliveries are retried (and
// shown with their status and next retry) and none is lost; a restart with deliveries
// pending loses nothing; events of other types and of other workspaces are not sent; the
// secret is never in the log.
func TestWebhookDeliveries(t *testing.T) {
	dir := t.TempDir()
	args := []string{"--webhook-allow-private", "--webhook-retry-min", "100ms", "--webhook-retry-max", "400ms", "--webhook-timeout", "2s"}
	n := nodetest.StartBinaryWith(t, nodetest.BinaryOptions{DataDir: dir, Args: args})
	root := n.Root
	rcv := newReceiver(t)
	for _, ws := range []string{"acme", "other"} {
		n.JSON("POST", "/v1/workspaces", root, map[string]any{"id": ws, "name": ws}, 201, nil)
	}

	var hook wire.NewWebhook
	h := n.JSON("POST", "/v1/workspaces/acme/webhooks", root, map[string]any{"url": rcv.srv.URL + "/hook", "types": []string{"keyreg.key.*"}}, 201, &hook)
	rcv.setSecret(hook.Secret)
	w := hook.Webhook
	if w.ID == "" || w.URL != rcv.srv.URL+"/hook" || len(w.Types) != 1 || w.Types[0] != "keyreg.key.*" || w.CreatedAt.IsZero() || !w.Active {
		t.Fatalf("registered webhook: %+v", w)
	}
	if loc := h.Get("Location"); loc != "/v1/workspaces/acme/webhooks/"+w.ID {
		t.Fatalf("Location %q", loc)
	}
	var shown wire.Webhook
	n.JSON("GET", "/v1/workspaces/acme/webhooks/"+w.ID, root, nil, 200, &shown)
	var list struct {
		Webhooks []wire.Webhook `json:"webhooks"`
	}
	n.JSON("GET", "/v1/workspaces/acme/webhooks", root, nil, 200, &list)
	if shown.ID != w.ID || len(list.Webhooks) != 1 || list.Webhooks[0].ID != w.ID {
		t.Fatalf("show %+v, list %+v", shown, list.Webhooks)
	}

	type keyOut struct {
		Key struct {
			ID string `json:"id"`
		} `json:"key"`
	}
	createKey := func(ws, name string) string {
		var k keyOut
		n.JSON("POST", "/v1/workspaces/"+ws+"/keys", root, map[string]any{"name": name, "permissions": []string{"users.track"}}, 201, &k)
		return k.Key.ID
	}
	scenario := func(ws, id string) { // update the allowlist, rotate, revoke
		n.JSON("PUT", "/v1/workspaces/"+ws+"/keys/"+id+"/allowlist", root, map[string]any{"allowlist": []string{"203.0.113.0/24"}}, 200, nil)
		n.JSON("POST", "/v1/workspaces/"+ws+"/keys/"+id+"/rotate", root, map[string]any{}, 200, nil)
		n.JSON("DELETE", "/v1/workspaces/"+ws+"/keys/"+id, root, nil, 200, nil)
	}
	accepted := func(k int) func() bool { return func() bool { return len(rcv.order) >= k } }

	// 1. Normal case: create, update the allowlist, rotate, revoke.
	a := createKey("acme", "a")
	scenario("acme", a)
	createKey("other", "elsewhere") // another workspace: not for this webhook
	rcv.waitFor("4 deliveries", accepted(4))

	// 2. The receiver answers 500 for a while: retried, none lost.
	rcv.setFail(true)
	b := createKey("acme", "b")
	scenario("acme", b)
	rcv.waitFor("5 failed attempts", func() bool { return rcv.failed >= 5 })
	var ds struct {
		Deliveries []wire.WebhookDelivery `json:"deliveries"`
	}
	n.JSON("GET", "/v1/workspaces/acme/webhooks/"+w.ID+"/deliveries", root, nil, 200, &ds)
	if len(ds.Deliveries) == 0 {
		t.Fatal("no delivery attempts shown")
	}
	// The receiver saw 5 attempts; the 4th at least is recorded (before the 5th was made).
	last := ds.Deliveries[0]
	if last.Outcome != "retrying" || last.StatusCode != 500 || last.NextRetry == nil || last.Attempt < 4 || last.Type != "keyreg.key.created.v1" {
		t.Fatalf("latest attempt while the receiver fails: %+v", last)
	}
	rcv.setFail(false)
	rcv.waitFor("8 deliveries", accepted(8))

	// 3. Restart with deliveries pending: the receiver fails, the server stops, and the
	// events it could not deliver arrive after the restart.
	rcv.setFail(true)
	rcv.mu.Lock()
	failedBefore := rcv.failed
	rcv.mu.Unlock()
	c := createKey("acme", "c")
	rcv.waitFor("a failed attempt of key c's creation", func() bool { return rcv.failed > failedBefore })
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	rcv.setFail(false)
	n = nodetest.StartBinaryWith(t, nodetest.BinaryOptions{DataDir: dir, Root: root, Args: args})
	scenario("acme", c)
	rcv.waitFor("12 deliveries", accepted(12))

	// Every key event of acme, once, in stream order; nothing else.
	ids, types := keyEvents(t, n, "acme")
	if len(ids) != 12 {
		t.Fatalf("acme has %d key events, want 12: %v", len(ids), types)
	}
	rcv.mu.Lock()
	got, counts, bad := append([]string(nil), rcv.order...), rcv.accepted, rcv.bad
	rcv.mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("deliveries that failed the receiver's checks: %v", bad)
	}
	if strings.Join(got, " ") != strings.Join(ids, " ") {
		t.Fatalf("delivered in this order:\n%v\nthe log's key events:\n%v (%v)", got, ids, types)
	}
	for _, id := range ids {
		if counts[id] != 1 {
			t.Errorf("event %s delivered %d times", id, counts[id])
		}
	}

	// Since the restart, 4 attempts delivered key c's 4 events. (The receiver may count the
	// last before the server does: it counts an attempt once the answer is back.)
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, _, m := n.Do("GET", "/metrics", "", nil)
		if st == 200 && strings.Contains(string(m), `keyreg_webhook_attempts_total{outcome="delivered"} 4`+"\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics: %d\n%s", st, m)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The secret is in no event; removal is an event; the removed webhook is gone.
	var page struct {
		Events []wire.HistoryEntry `json:"events"`
	}
	n.JSON("GET", "/v1/workspaces/acme/audit?type=keyreg.webhook.registered.v1", root, nil, 200, &page)
	if len(page.Events) != 1 || strings.Contains(string(page.Events[0].Event), strings.TrimPrefix(hook.Secret, "whsec_")) {
		t.Fatalf("registration events: %+v", page.Events)
	}
	n.JSON("DELETE", "/v1/workspaces/acme/webhooks/"+w.ID, root, nil, 204, nil)
	n.JSON("GET", "/v1/workspaces/acme/audit?type=keyreg.webhook.removed.v1", root, nil, 200, &page)
	if len(page.Events) != 1 {
		t.Fatalf("removal events: %+v", page.Events)
	}
	n.JSON("GET", "/v1/workspaces/acme/webhooks/"+w.ID, root, nil, 404, nil)
	n.JSON("GET", "/v1/workspaces/acme/webhooks", root, nil, 200, &list)
	if len(list.Webhooks) != 0 {
		t.Fatalf("webhooks after removal: %+v", list.Webhooks)
	}
}

// TestWebhookRefusals: without --webhook-allow-private, URLs on loopback, private and
// link-local addresses are refused with a problem naming the url; bad URLs and unknown
// types likewise; nothing is appended.
func TestWebhookRefusals(t *testing.T) {
	n := nodetest.StartBinary(t)
	root := n.Root
	n.JSON("POST", "/v1/workspaces", root, map[string]any{"id": "acme", "name": "acme"}, 201, nil)
	before := auditCount(t, n, "acme")
	for _, tc := range []struct {
		name, url string
		types     []string
		field     string
	}{
		{"Loopback", "http://127.0.0.1:9/hook", nil, "url"},
		{"LoopbackIPv6", "http://[::1]:9/hook", nil, "url"},
		{"Localhost", "http://localhost:9/hook", nil, "url"},
		{"Private", "https://10.1.2.3/hook", nil, "url"},
		{"LinkLocalMetadata", "http://169.254.169.254/latest/meta-data", nil, "url"},
		{"MappedLoopback", "http://[::ffff:127.0.0.1]/hook", nil, "url"},
		{"NotHTTP", "ftp://hooks.example.com/x", nil, "url"},
		{"UserInfo", "https://user:pw@hooks.example.com/x", nil, "url"},
		{"UnknownType", "https://hooks.example.com/x", []string{"keyreg.key.nope.v1"}, "types"},
		{"BadWildcard", "https://hooks.example.com/x", []string{"keyreg.nothing.*"}, "types"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := map[string]any{"url": tc.url}
			if tc.types != nil {
				req["types"] = tc.types
			}
			st, h, body := n.Do("POST", "/v1/workspaces/acme/webhooks", root, req)
			var p struct {
				Field string `json:"field"`
				Value string `json:"value"`
			}
			json.Unmarshal(body, &p)
			want := tc.url
			if tc.field == "types" {
				want = tc.types[0]
			}
			if st != 400 || !strings.HasPrefix(h.Get("Content-Type"), "application/problem+json") || p.Field != tc.field || p.Value != want {
				t.Fatalf("status %d %s: %s", st, h.Get("Content-Type"), body)
			}
		})
	}
	if after := auditCount(t, n, "acme"); after != before {
		t.Fatalf("the refusals appended %d events", after-before)
	}
	// keyreg.webhooks.write alone may not register: a webhook receives the workspace's
	// events, so registering one needs keyreg.events.read too.
	var writer, both wire.KeyWithSecret
	n.JSON("POST", "/v1/workspaces/acme/keys", root, map[string]any{"name": "hooks", "permissions": []string{"keyreg.webhooks.write"}}, 201, &writer)
	n.JSON("POST", "/v1/workspaces/acme/keys", root, map[string]any{"name": "hooks+events", "permissions": []string{"keyreg.webhooks.write", "keyreg.events.read"}}, 201, &both)
	before = auditCount(t, n, "acme")
	hook := map[string]any{"url": "https://hooks.example.com/x"}
	if st, _, body := n.Do("POST", "/v1/workspaces/acme/webhooks", writer.Secret, hook); st != 403 || !strings.Contains(string(body), "keyreg.events.read") {
		t.Fatalf("keyreg.webhooks.write alone: %d %s", st, body)
	}
	if after := auditCount(t, n, "acme"); after != before {
		t.Fatalf("the refusals appended %d events", after-before)
	}
	n.JSON("POST", "/v1/workspaces/acme/webhooks", both.Secret, hook, 201, nil)
}

func auditCount(t *testing.T, n *nodetest.Node, ws string) int {
	t.Helper()
	var page struct {
		Events []wire.HistoryEntry `json:"events"`
	}
	n.JSON("GET", "/v1/workspaces/"+ws+"/audit?limit=1000", n.Root, nil, 200, &page)
	return len(page.Events)
}
