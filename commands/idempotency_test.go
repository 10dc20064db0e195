package commands

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/keyreg/keyreg/events"
)

// TestIdempotency runs commands twice with the same EventID, as an HTTP retry with the
// same Idempotency-Key would: the second run appends nothing and returns the first
// result, even when the state has moved on since.
func TestIdempotency(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		key := mustKey(t, h, "acme")
		ident := mustIdentifier(t, h, "acme", "template", "Welcome")

		tests := []struct {
			name   string
			run    func(eventID string) (Result, error)
			moveOn func() // changes the state between the two runs, if not nil
		}{
			{"CreateWorkspace", func(e string) (Result, error) {
				return h.CreateWorkspace(ctx, CreateWorkspace{Workspace: "beta", Name: "Beta", EventID: e})
			}, nil},
			{"CreateKey", func(e string) (Result, error) {
				return h.CreateKey(ctx, CreateKey{Workspace: "acme", Name: "Retried", EventID: e})
			}, nil},
			{"UpdateAllowlist", func(e string) (Result, error) {
				return h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: key.ID, Allowlist: []string{"1.1.1.1"}, EventID: e})
			}, func() {
				if _, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: key.ID, Allowlist: []string{"2.2.2.2"}}); err != nil {
					t.Fatal(err)
				}
			}},
			{"RotateKey", func(e string) (Result, error) {
				return h.RotateKey(ctx, RotateKey{Workspace: "acme", KeyID: key.ID, EventID: e})
			}, nil},
			{"RegisterIdentifier", func(e string) (Result, error) {
				return h.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: "VIPs", EventID: e})
			}, nil},
			{"RenameIdentifier", func(e string) (Result, error) {
				return h.RenameIdentifier(ctx, RenameIdentifier{Workspace: "acme", IdentifierID: ident.ID, Name: "Hello", EventID: e})
			}, func() {
				if _, err := h.RenameIdentifier(ctx, RenameIdentifier{Workspace: "acme", IdentifierID: ident.ID, Name: "HELLO"}); err != nil {
					t.Fatal(err)
				}
			}},
			{"RetireIdentifier", func(e string) (Result, error) {
				return h.RetireIdentifier(ctx, RetireIdentifier{Workspace: "acme", IdentifierID: ident.ID, EventID: e})
			}, nil},
			{"RevokeKey", func(e string) (Result, error) {
				return h.RevokeKey(ctx, RevokeKey{Workspace: "acme", KeyID: key.ID, EventID: e})
			}, nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				eventID := events.NewID()
				first, err := tt.run(eventID)
				if err != nil {
					t.Fatal(err)
				}
				if first.Duplicate {
					t.Fatalf("first run: %v", first)
				}
				if rec, err := h.Log.Get(ctx, first.Version); err != nil || rec.MsgID != eventID {
					t.Fatalf("first event: %+v, %v; want id %s", rec, err, eventID)
				}
				if tt.moveOn != nil {
					tt.moveOn()
				}
				before := lastSeq(t, h.Log)
				second, err := tt.run(eventID)
				if err != nil {
					t.Fatal(err)
				}
				want := first
				want.Secret, want.Duplicate = "", true
				if second != want {
					t.Errorf("second run: %v, want %v", second, want)
				}
				if after := lastSeq(t, h.Log); after != before {
					t.Errorf("second run appended: log at %d, was %d", after, before)
				}
			})
		}

		// An EventID used by another command is refused.
		eventID := events.NewID()
		if _, err := h.CreateKey(ctx, CreateKey{Workspace: "acme", Name: "One", EventID: eventID}); err != nil {
			t.Fatal(err)
		}
		before := lastSeq(t, h.Log)
		_, err := h.CreateWorkspace(ctx, CreateWorkspace{Workspace: "gamma", Name: "Gamma", EventID: eventID})
		if err == nil {
			t.Fatal("reused EventID: no error")
		}
		if after := lastSeq(t, h.Log); after != before {
			t.Errorf("reused EventID appended: log at %d, was %d", after, before)
		}
	})
}

// TestIdempotencyConcurrent rotates a key from 10 goroutines with the same EventID: one
// rotation is stored, every caller gets its sequence, and only the caller whose rotation
// was stored gets a secret, which is the stored one.
func TestIdempotencyConcurrent(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		id := mustKey(t, h, "acme").ID
		eventID := events.NewID()
		const n = 10
		results := make([]Result, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				var err error
				results[i], err = h.RotateKey(ctx, RotateKey{Workspace: "acme", KeyID: id, EventID: eventID})
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if seq := lastSeq(t, h.Log); seq != 3 {
			t.Fatalf("log has %d events, want 3", seq)
		}
		secrets := 0
		for _, r := range results {
			if r.Seq != 3 || r.Version != 3 || r.Duplicate == (r.Secret != "") {
				t.Errorf("result %v", r)
			}
			if r.Secret != "" {
				secrets++
				if k := keyState(t, h, "acme", id); k.SecretHash != events.HashSecret(r.Secret) {
					t.Error("returned secret is not the stored one")
				}
			}
		}
		if secrets != 1 {
			t.Errorf("%d callers got a secret, want 1", secrets)
		}
	})
}

// lostAckLog stores appends but reports an error, as when an acknowledgement is lost.
type lostAckLog struct{ events.Log }

func (l lostAckLog) Append(ctx context.Context, msgs []events.Message) ([]uint64, error) {
	if _, err := l.Log.Append(ctx, msgs); err != nil {
		return nil, err
	}
	return nil, errors.New("nats: timeout")
}

// TestLostAck checks that a command whose append was stored but not acknowledged
// reports success, not an error, with or without an EventID.
func TestLostAck(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		h.Log = lostAckLog{h.Log}
		for i, ids := range [][2]string{{"", ""}, {events.NewID(), events.NewID()}} {
			res, err := h.CreateKey(ctx, CreateKey{Workspace: "acme", Name: "k", EventID: ids[0]})
			if err != nil {
				t.Fatal(err)
			}
			if res.Duplicate || res.Seq != res.Version || res.Seq != lastSeq(t, h.Log) {
				t.Errorf("result %v", res)
			}
			if k := keyState(t, h, "acme", res.ID); k.SecretHash != events.HashSecret(res.Secret) {
				t.Error("returned secret is not the stored one")
			}
			res, err = h.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: fmt.Sprint("S", i), EventID: ids[1]})
			if err != nil {
				t.Fatal(err)
			}
			if res.Duplicate || res.Seq != res.Version+1 || res.Seq != lastSeq(t, h.Log) {
				t.Errorf("result %v", res)
			}
		}
	})
}
