package commands

import (
	"slices"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
)

// TestUpdateKey checks a command that appends several events to one aggregate: one
// expectation on the first, the prevhash chained within the batch, all or nothing.
func TestUpdateKey(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		k := mustKey(t, h, "acme")
		name, perms, exp := "Renamed", []string{"users.export.ids"}, time.Now().Add(time.Hour)

		_, err := h.UpdateKey(ctx, UpdateKey{Workspace: "acme", KeyID: k.ID, Name: &name, ExpectedVersion: k.Version + 1})
		wantErr(t, err, ErrPrecondition)
		_, err = h.UpdateKey(ctx, UpdateKey{Workspace: "acme", KeyID: k.ID, Name: &name, SetExpiry: true, ExpiresAt: &time.Time{}})
		wantErr(t, err, events.ErrInvalid)

		res, err := h.UpdateKey(ctx, UpdateKey{Workspace: "acme", KeyID: k.ID, Name: &name, Permissions: &perms,
			SetExpiry: true, ExpiresAt: &exp, ExpectedVersion: k.Version})
		if err != nil {
			t.Fatal(err)
		}
		if res.Version != k.Version+3 || res.Seq != res.Version {
			t.Errorf("result %v after version %d", res, k.Version)
		}
		recs := records(t, h.Log, events.AggregateFilter("acme", events.AggKey, k.ID))
		if len(recs) != 4 {
			t.Fatalf("%d events, want 4", len(recs))
		}
		for i := 1; i < len(recs); i++ {
			if want := events.Hash(recs[i-1].Data); recs[i].Event.PrevHash != want {
				t.Errorf("event %d: prevhash %s, want %s", i, recs[i].Event.PrevHash, want)
			}
		}
		s := keyState(t, h, "acme", k.ID)
		if s.Name != name || !slices.Equal(s.Permissions, []events.Permission{"users.export.ids"}) || !s.ExpiresAt.Equal(exp) {
			t.Errorf("state %+v", s)
		}

		// Only what changes is appended; nothing when nothing changes.
		name2 := "Renamed again"
		res, err = h.UpdateKey(ctx, UpdateKey{Workspace: "acme", KeyID: k.ID, Name: &name2, Permissions: &perms})
		if err != nil || res.Seq != s.Version+1 {
			t.Fatalf("rename only: %v, %v", res, err)
		}
		before := lastSeq(t, h.Log)
		res, err = h.UpdateKey(ctx, UpdateKey{Workspace: "acme", KeyID: k.ID, Name: &name2, Permissions: &perms, SetExpiry: true, ExpiresAt: &exp})
		if err != nil || res.Version != before || lastSeq(t, h.Log) != before {
			t.Fatalf("no change: %v, %v", res, err)
		}
	})
}
