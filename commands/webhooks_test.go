package commands

import (
	"context"
	"errors"
	"testing"

	"github.com/keyreg/keyreg/events"
)

// TestWebhooks registers and removes webhooks on every log: the webhook's id is the
// EventID, a retry with it is a Duplicate, removal is once, and a workspace holds at most
// MaxWebhooksPerWorkspace active webhooks, exactly, even when registrations race.
func TestWebhooks(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := context.Background()
		if _, err := h.CreateWorkspace(ctx, CreateWorkspace{Workspace: "acme", Name: "Acme"}); err != nil {
			t.Fatal(err)
		}
		reg := func(id string) (Result, error) {
			return h.RegisterWebhook(ctx, RegisterWebhook{Workspace: "acme", URL: "https://hooks.example.com/k", Types: []string{"keyreg.key.*"}, EventID: id})
		}
		id := events.NewID()
		res, err := reg(id)
		if err != nil || res.ID != id || res.Duplicate {
			t.Fatalf("register: %+v %v", res, err)
		}
		if again, err := reg(id); err != nil || !again.Duplicate || again.Seq != res.Seq {
			t.Fatalf("register again with the same id: %+v %v", again, err)
		}
		if _, err := h.RegisterWebhook(ctx, RegisterWebhook{Workspace: "nowhere", URL: "https://x.example.com/", EventID: events.NewID()}); !errors.Is(err, events.ErrNotFound) {
			t.Fatalf("in a workspace that does not exist: %v", err)
		}
		st, err := LogState{Log: h.Log}.Webhook(ctx, "acme", id)
		if err != nil || !st.Active || st.URL != "https://hooks.example.com/k" || st.Registered != res.Seq || st.Workspace != "acme" {
			t.Fatalf("state %+v %v", st, err)
		}
		if _, err := h.RemoveWebhook(ctx, RemoveWebhook{Workspace: "acme", ID: id}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.RemoveWebhook(ctx, RemoveWebhook{Workspace: "acme", ID: id}); !errors.Is(err, events.ErrNotFound) {
			t.Fatalf("remove twice: %v", err)
		}

		// Fill up to 2 below the limit, then race 7 registrations: exactly 2 win.
		for range MaxWebhooksPerWorkspace - 2 {
			if _, err := reg(events.NewID()); err != nil {
				t.Fatal(err)
			}
		}
		n := 7
		errs := make(chan error, n)
		for range n {
			go func() { _, err := reg(events.NewID()); errs <- err }()
		}
		refused := 0
		for range n {
			if err := <-errs; errors.Is(err, ErrQuotaExceeded) {
				refused++
			} else if err != nil {
				t.Fatal(err)
			}
		}
		hooks, _, err := LogState{Log: h.Log}.Webhooks(ctx, "acme")
		active := 0
		for _, w := range hooks {
			if w.Active {
				active++
			}
		}
		if err != nil || active != MaxWebhooksPerWorkspace || refused != 5 {
			t.Fatalf("%d active webhooks, %d refused (%v); want %d and 5", active, refused, err, MaxWebhooksPerWorkspace)
		}
	})
}
