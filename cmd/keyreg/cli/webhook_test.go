package cli

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// TestWebhookCommands adds, lists, shows and removes a webhook with the CLI: the secret
// is printed once, show lists the delivery of a key's creation, mistakes are one-line
// errors naming the field; serve refuses a retry pause that is not positive.
func TestWebhookCommands(t *testing.T) {
	var got atomic.Int32
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("webhook-signature") != "" {
			got.Add(1)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()
	h := startServerWith(t, func(c *server.Config) { c.Webhooks.AllowPrivate = true })
	h.ok("workspace", "create", "acme", "--name", "Acme")

	out := h.ok("webhook", "add", "-w", "acme", rcv.URL+"/hook", "--type", "keyreg.key.*")
	contains(t, "webhook add", out, "Added webhook ", "url:     "+rcv.URL+"/hook", "types:   keyreg.key.*", "secret:  whsec_", "(shown this once)")
	var hooks struct {
		Webhooks []wire.Webhook `json:"webhooks"`
	}
	h.okJSON(&hooks, "webhook", "list", "-w", "acme")
	if len(hooks.Webhooks) != 1 {
		t.Fatalf("webhook list --json: %+v", hooks)
	}
	id := hooks.Webhooks[0].ID
	contains(t, "webhook list", h.ok("webhook", "list", "-w", "acme"), id, rcv.URL+"/hook", "keyreg.key.*")

	h.ok("key", "create", "-w", "acme", "--name", "hooked", "--permission", "users.track")
	deadline := time.Now().Add(time.Minute)
	for {
		out = h.ok("webhook", "show", "-w", "acme", id)
		if strings.Contains(out, "delivered") || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	contains(t, "webhook show", out, "Webhook "+id, "keyreg.key.created.v1", "delivered", "204")
	if got.Load() != 1 {
		t.Fatalf("the receiver got %d signed deliveries, want 1", got.Load())
	}

	h.fails(1, []string{"types", "keyreg.key.nope.v1"}, "webhook", "add", "-w", "acme", rcv.URL, "--type", "keyreg.key.nope.v1")
	h.fails(1, []string{"url", "ftp://x.example.com/"}, "webhook", "add", "-w", "acme", "ftp://x.example.com/")
	h.fails(2, []string{"--limit"}, "webhook", "show", "-w", "acme", id, "--limit", "0")
	contains(t, "webhook remove", h.ok("webhook", "remove", "-w", "acme", id), "Removed webhook "+id+".")
	h.fails(1, []string{"not found"}, "webhook", "remove", "-w", "acme", id)
	h.fails(2, []string{"--webhook-retry-min"}, "serve", "--webhook-retry-min", "0s")
}
