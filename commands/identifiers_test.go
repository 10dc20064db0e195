package commands

import (
	"slices"
	"testing"

	"github.com/keyreg/keyreg/events"
)

func TestIdentifiers(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		mustWorkspace(t, h, "beta")

		app, err := h.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "acme", Kind: "app", Name: "Shop", Platform: "ios"})
		if err != nil {
			t.Fatal(err)
		}
		if app.Seq != app.Version+1 {
			t.Errorf("register: %v, want Seq = Version+1 (the name claim)", app)
		}
		s := identifierState(t, h, "acme", app.ID)
		if s.Kind != events.KindApp || s.Name != "Shop" || s.Platform != "ios" || s.Status != events.StatusActive || s.Version != app.Version {
			t.Fatalf("state %+v", s)
		}

		// Names are unique per workspace and kind, ignoring case; other kinds and
		// workspaces are independent.
		sale := mustIdentifier(t, h, "acme", "segment", "Straße")
		_, err = h.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: " STRASSE "})
		wantErr(t, err, ErrNameTaken)
		mustIdentifier(t, h, "acme", "campaign", "Straße")
		mustIdentifier(t, h, "beta", "segment", "Straße")
		_, err = h.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "acme", Kind: "app", Name: "shop", Platform: "android"})
		wantErr(t, err, ErrNameTaken)

		// A change of case only renames.
		before := lastSeq(t, h.Log)
		res, err := h.RenameIdentifier(ctx, RenameIdentifier{Workspace: "acme", IdentifierID: sale.ID, Name: "STRASSE"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Seq != before+1 || res.Version != res.Seq {
			t.Errorf("case-only rename: %v after seq %d", res, before)
		}
		// Renaming to a taken name fails; to a free one moves the claim.
		other := mustIdentifier(t, h, "acme", "segment", "Winter Sale")
		_, err = h.RenameIdentifier(ctx, RenameIdentifier{Workspace: "acme", IdentifierID: sale.ID, Name: "winter sale"})
		wantErr(t, err, ErrNameTaken)
		before = lastSeq(t, h.Log)
		res, err = h.RenameIdentifier(ctx, RenameIdentifier{Workspace: "acme", IdentifierID: sale.ID, Name: "Spring Sale"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Version != before+1 || res.Seq != before+3 {
			t.Errorf("rename: %v after seq %d", res, before)
		}
		renamed := res
		var types []events.Type
		for _, d := range records(t, h.Log, ">")[before:] {
			types = append(types, d.Event.Type)
		}
		if want := []events.Type{events.TypeIdentifierRenamed, events.TypeNameClaimed, events.TypeNameReleased}; !slices.Equal(types, want) {
			t.Errorf("rename appended %v, want %v", types, want)
		}
		mustIdentifier(t, h, "acme", "segment", "strasse") // the old name is free again
		_, err = h.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: "SPRING SALE"})
		wantErr(t, err, ErrNameTaken)
		// Renaming to the same name changes nothing.
		before = lastSeq(t, h.Log)
		res, err = h.RenameIdentifier(ctx, RenameIdentifier{Workspace: "acme", IdentifierID: sale.ID, Name: " Spring Sale"})
		if err != nil || res.Version != renamed.Version || res.Seq != renamed.Version || lastSeq(t, h.Log) != before {
			t.Errorf("same name: %v, %v", res, err)
		}

		// Retiring frees the name; a retired identifier accepts no change.
		res, err = h.RetireIdentifier(ctx, RetireIdentifier{Workspace: "acme", IdentifierID: other.ID})
		if err != nil {
			t.Fatal(err)
		}
		if res.Seq != res.Version+1 {
			t.Errorf("retire: %v", res)
		}
		if s := identifierState(t, h, "acme", other.ID); s.Status != events.StatusRetired || s.Name != "Winter Sale" {
			t.Errorf("retired state %+v", s)
		}
		before = lastSeq(t, h.Log)
		_, err = h.RetireIdentifier(ctx, RetireIdentifier{Workspace: "acme", IdentifierID: other.ID})
		wantErr(t, err, ErrRetired)
		_, err = h.RenameIdentifier(ctx, RenameIdentifier{Workspace: "acme", IdentifierID: other.ID, Name: "Autumn Sale"})
		wantErr(t, err, ErrRetired)
		if lastSeq(t, h.Log) != before {
			t.Error("log grew after ErrRetired")
		}
		again := mustIdentifier(t, h, "acme", "segment", "WINTER SALE")
		_, err = h.RenameIdentifier(ctx, RenameIdentifier{Workspace: "acme", IdentifierID: sale.ID, Name: "Winter Sale"})
		wantErr(t, err, ErrNameTaken)
		if again.ID == other.ID {
			t.Error("re-registration reused the retired id")
		}
	})
}
