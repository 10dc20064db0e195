package webhook_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/cmd/keyreg/webhook"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/events/natslog"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
)

// TestTwoNodesShareOneConsumer runs two managers, as two nodes of a cluster would, on one
// JetStream (two connections): every event reaches the receiver once, in stream order,
// never two at a time; an event the receiver always refuses is given up after RetryFor,
// recorded as failed, and the next ones go on. Removing the webhook deletes its consumer
// and its secret.
func TestTwoNodesShareOneConsumer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := eventstest.StartEmbedded(t, t.TempDir())
	nc2, err := natsserver.ConnectInProcess(e.Server)
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	log2, err := natslog.Open(ctx, nc2, natslog.Options{})
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var key []byte
	var order []string
	counts := map[string]int{}
	inFlight, maxInFlight, doomedTries := 0, 0, 0
	changed := make(chan struct{}, 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		inFlight++
		maxInFlight = max(maxInFlight, inFlight)
		k := key
		mu.Unlock()
		time.Sleep(5 * time.Millisecond) // a second delivery at the same time would overlap
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte(r.Header.Get("webhook-id") + "." + r.Header.Get("webhook-timestamp") + "."))
		mac.Write(body)
		ok := r.Header.Get("webhook-signature") == "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil))
		mu.Lock()
		defer mu.Unlock()
		inFlight--
		switch {
		case !ok:
			w.WriteHeader(http.StatusUnauthorized)
		case bytes.Contains(body, []byte(`"name":"doomed"`)):
			doomedTries++
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			id := r.Header.Get("webhook-id")
			if counts[id] == 0 {
				order = append(order, id)
			}
			counts[id]++
			w.WriteHeader(http.StatusOK)
		}
		changed <- struct{}{}
	}))
	defer srv.Close()

	h := &commands.Handler{Log: e.Log}
	if _, err := h.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: "acme", Name: "Acme"}); err != nil {
		t.Fatal(err)
	}
	cfg := func(js jetstream.JetStream, log events.Reader) webhook.Config {
		return webhook.Config{JS: js, Log: log, Guard: webhook.Guard{AllowPrivate: true},
			RetryMin: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond, RetryFor: 300 * time.Millisecond, Timeout: 5 * time.Second}
	}
	var managers []*webhook.Manager
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	for _, c := range []webhook.Config{cfg(e.Log.JetStream(), e.Log), cfg(log2.JetStream(), log2)} {
		m, err := webhook.Open(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		managers = append(managers, m)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.Run(runCtx); err != nil {
				t.Error(err)
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()

	id := events.NewID()
	secret, err := managers[0].Secret(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := managers[1].Secret(ctx, id); err != nil || again != secret {
		t.Fatalf("the other node's secret of the webhook: %v", err)
	}
	mu.Lock()
	key, _ = webhook.DecodeSecret(secret)
	mu.Unlock()
	if _, err := h.RegisterWebhook(ctx, commands.RegisterWebhook{Workspace: "acme", URL: srv.URL, Types: []string{"keyreg.key.created.v1"}, EventID: id}); err != nil {
		t.Fatal(err)
	}
	var want []string
	var doomed string
	for i := range 12 {
		name := "k" + string(rune('a'+i))
		if i == 4 {
			name = "doomed"
		}
		res, err := h.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: name, Permissions: []string{"users.track"}})
		if err != nil {
			t.Fatal(err)
		}
		r, err := e.Log.Get(ctx, res.Seq)
		if err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			doomed = r.MsgID
		} else {
			want = append(want, r.MsgID)
		}
	}
	if _, err := h.RevokeKey(ctx, commands.RevokeKey{Workspace: "acme", KeyID: keyOf(t, e, want[0])}); err != nil {
		t.Fatal(err) // a key.revoked: not a type of the webhook
	}
	for {
		mu.Lock()
		n := len(order)
		mu.Unlock()
		if n >= len(want) {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("delivered %d of %d events", n, len(want))
		}
	}
	mu.Lock()
	got, gotMax, tries := strings.Join(order, " "), maxInFlight, doomedTries
	dup := false
	for _, c := range counts {
		dup = dup || c != 1
	}
	mu.Unlock()
	if got != strings.Join(want, " ") || dup {
		t.Fatalf("delivered %s (counts %v), want each of %v once in this order", got, counts, want)
	}
	if gotMax != 1 {
		t.Fatalf("%d deliveries at the same time; the shared consumer allows one", gotMax)
	}
	if tries < 2 {
		t.Fatalf("the refused event was tried %d times", tries)
	}
	ds, err := managers[1].Deliveries(ctx, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	var failed *webhook.Delivery
	for i := range ds {
		if ds[i].EventID == doomed && ds[i].Outcome == "failed" {
			failed = &ds[i]
		}
	}
	if failed == nil || failed.StatusCode != http.StatusServiceUnavailable || failed.Attempt != tries {
		b, _ := json.Marshal(ds)
		t.Fatalf("no failed record of the refused event after %d tries: %s", tries, b)
	}

	// Removal: the consumer and the secret go.
	if _, err := h.RemoveWebhook(ctx, commands.RemoveWebhook{Workspace: "acme", ID: id}); err != nil {
		t.Fatal(err)
	}
	js := e.Log.JetStream()
	for {
		_, cerr := js.Consumer(ctx, events.StreamName, webhook.ConsumerName(id))
		kv, kerr := js.KeyValue(ctx, webhook.SecretsBucket)
		if kerr != nil {
			t.Fatal(kerr)
		}
		_, serr := kv.Get(ctx, id)
		if errors.Is(cerr, jetstream.ErrConsumerNotFound) && errors.Is(serr, jetstream.ErrKeyNotFound) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after removal: consumer %v, secret %v", cerr, serr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// keyOf returns the key id of the key.created event with id eventID.
func keyOf(t *testing.T, e *eventstest.Embedded, eventID string) string {
	t.Helper()
	var id string
	err := e.Log.Read(context.Background(), "keyreg.acme.key.*.created", 1, func(r events.Record) error {
		if r.MsgID == eventID {
			s, err := events.ParseSubject(r.Subject)
			if err != nil {
				return err
			}
			id = s.ID
		}
		return nil
	})
	if err != nil || id == "" {
		t.Fatalf("key of event %s: %v", eventID, err)
	}
	return id
}
