package commands

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
)

func TestKeyLifecycle(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		meta := events.Meta{Actor: "01JDX3ACT0R000000000000000", ActorIP: "192.0.2.7", RequestID: "req-1"}
		if _, err := h.CreateWorkspace(ctx, CreateWorkspace{Workspace: "acme", Name: " Acme Inc. ", Meta: meta}); err != nil {
			t.Fatal(err)
		}
		exp := time.Now().Add(24 * time.Hour)
		created, err := h.CreateKey(ctx, CreateKey{
			Workspace: "acme", Name: "Backend", Permissions: []string{"users.track", "campaigns.list", "users.track"},
			Allowlist: []string{"10.1.2.3/8", "::ffff:192.0.2.1"}, ExpiresAt: &exp, Meta: meta,
		})
		if err != nil {
			t.Fatal(err)
		}
		if !events.WellFormedSecret(created.Secret) {
			t.Fatalf("secret %q is not well formed", created.Secret)
		}
		if created.Version != 2 || created.Seq != 2 || created.Duplicate {
			t.Fatalf("create: %v", created)
		}
		k := keyState(t, h, "acme", created.ID)
		if k.SecretHash != events.HashSecret(created.Secret) || k.Name != "Backend" || k.CreatedBy != meta.Actor ||
			!slices.Equal(k.Permissions, []events.Permission{"campaigns.list", "users.track"}) ||
			!slices.Equal(k.Allowlist, prefixes("10.0.0.0/8", "192.0.2.1/32")) || !k.ExpiresAt.Equal(exp) {
			t.Fatalf("created state: %+v", k)
		}

		id := created.ID
		steps := []struct {
			name string
			run  func() (Result, error)
		}{
			{"rename", func() (Result, error) {
				return h.RenameKey(ctx, RenameKey{Workspace: "acme", KeyID: id, Name: "Backend v2", Meta: meta})
			}},
			{"permissions", func() (Result, error) {
				return h.UpdatePermissions(ctx, UpdatePermissions{Workspace: "acme", KeyID: id, Permissions: []string{"users.track", "users.export.ids"}, Meta: meta})
			}},
			{"allowlist", func() (Result, error) {
				return h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{"2001:db8::/32", "10.0.0.0/8"}, Meta: meta})
			}},
			{"expiry", func() (Result, error) {
				return h.SetKeyExpiry(ctx, SetKeyExpiry{Workspace: "acme", KeyID: id, Meta: meta})
			}},
		}
		version := created.Version
		for _, s := range steps {
			res, err := s.run()
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			if res.ID != id || res.Version <= version || res.Seq != res.Version || res.Secret != "" {
				t.Fatalf("%s: %v after version %d", s.name, res, version)
			}
			version = res.Version
			// The same command again changes nothing.
			before := lastSeq(t, h.Log)
			again, err := s.run()
			if err != nil || again.Version != version || again.Seq != version || lastSeq(t, h.Log) != before {
				t.Fatalf("%s again: %v, %v; want no-op at version %d", s.name, again, err, version)
			}
		}

		rotated, err := h.RotateKey(ctx, RotateKey{Workspace: "acme", KeyID: id, GraceSeconds: 3600, Meta: meta})
		if err != nil {
			t.Fatal(err)
		}
		if !events.WellFormedSecret(rotated.Secret) || rotated.Secret == created.Secret {
			t.Fatalf("rotated secret %q", rotated.Secret)
		}
		revoked, err := h.RevokeKey(ctx, RevokeKey{Workspace: "acme", KeyID: id, ExpectedVersion: rotated.Version, Meta: events.Meta{Reason: "leaked"}})
		if err != nil {
			t.Fatal(err)
		}

		k = keyState(t, h, "acme", id)
		if k.Name != "Backend v2" || !slices.Equal(k.Permissions, []events.Permission{"users.export.ids", "users.track"}) ||
			!slices.Equal(k.Allowlist, prefixes("10.0.0.0/8", "2001:db8::/32")) || k.ExpiresAt != nil ||
			k.SecretHash != events.HashSecret(rotated.Secret) || k.PreviousHash != events.HashSecret(created.Secret) ||
			k.Status != events.StatusRevoked || k.Version != revoked.Version {
			t.Fatalf("final state: %+v", k)
		}
		if d := k.PreviousValidUntil.Sub(k.UpdatedAt); k.PreviousValidUntil == nil || d > time.Hour || d < time.Hour-time.Minute {
			t.Errorf("previous secret valid until %v, rotated at about %v", k.PreviousValidUntil, k.UpdatedAt)
		}

		recs := records(t, h.Log, events.AggregateFilter("acme", events.AggKey, id))
		var types []events.Type
		for _, r := range recs {
			types = append(types, r.Event.Type)
			if r.Event.Actor != meta.Actor && r.Event.Type != events.TypeKeyRevoked {
				t.Errorf("%s: actor %q", r.Event.Type, r.Event.Actor)
			}
		}
		want := []events.Type{events.TypeKeyCreated, events.TypeKeyRenamed, events.TypeKeyPermissionsUpdated,
			events.TypeAllowlistUpdated, events.TypeKeyExpiryChanged, events.TypeKeySecretRotated, events.TypeKeyRevoked}
		if !slices.Equal(types, want) {
			t.Fatalf("event types %v, want %v", types, want)
		}
		perms := recs[2].Payload.(*events.KeyPermissionsUpdated)
		if !slices.Equal(perms.Added, []events.Permission{"users.export.ids"}) || !slices.Equal(perms.Removed, []events.Permission{"campaigns.list"}) {
			t.Errorf("permissions diff: %+v", perms)
		}
		allow := recs[3].Payload.(*events.AllowlistUpdated)
		if !slices.Equal(allow.Added, prefixes("2001:db8::/32")) || !slices.Equal(allow.Removed, prefixes("192.0.2.1/32")) {
			t.Errorf("allowlist diff: %+v", allow)
		}
		if rev := recs[6]; rev.Event.Reason != "leaked" || rev.Payload.(*events.KeyRevoked).PreviousStatus != events.StatusActive {
			t.Errorf("revoked: %+v %+v", rev.Event, rev.Payload)
		}
	})
}

func TestRevokedKeyAcceptsNoChange(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		id := mustKey(t, h, "acme").ID
		if _, err := h.RevokeKey(ctx, RevokeKey{Workspace: "acme", KeyID: id}); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Hour)
		before := lastSeq(t, h.Log)
		for name, run := range map[string]func() (Result, error){
			"RenameKey": func() (Result, error) { return h.RenameKey(ctx, RenameKey{Workspace: "acme", KeyID: id, Name: "x"}) },
			"RenameKey/same": func() (Result, error) {
				return h.RenameKey(ctx, RenameKey{Workspace: "acme", KeyID: id, Name: "Backend"})
			},
			"UpdatePermissions": func() (Result, error) {
				return h.UpdatePermissions(ctx, UpdatePermissions{Workspace: "acme", KeyID: id})
			},
			"UpdateAllowlist": func() (Result, error) {
				return h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{"1.2.3.4"}})
			},
			"RotateKey": func() (Result, error) { return h.RotateKey(ctx, RotateKey{Workspace: "acme", KeyID: id}) },
			"SetKeyExpiry": func() (Result, error) {
				return h.SetKeyExpiry(ctx, SetKeyExpiry{Workspace: "acme", KeyID: id, ExpiresAt: &later})
			},
			"RevokeKey": func() (Result, error) { return h.RevokeKey(ctx, RevokeKey{Workspace: "acme", KeyID: id}) },
		} {
			res, err := run()
			if !errors.Is(err, ErrRevoked) || res.Secret != "" {
				t.Errorf("%s: got %v, %v; want ErrRevoked", name, res, err)
			}
		}
		if after := lastSeq(t, h.Log); after != before {
			t.Errorf("log grew from %d to %d", before, after)
		}
	})
}

func TestNotFound(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		_, err := h.CreateKey(ctx, CreateKey{Workspace: "nowhere", Name: "k"})
		wantErr(t, err, events.ErrNotFound)
		_, err = h.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "nowhere", Kind: "segment", Name: "n"})
		wantErr(t, err, events.ErrNotFound)
		mustWorkspace(t, h, "acme")
		missing := events.NewID()
		_, err = h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: missing})
		wantErr(t, err, events.ErrNotFound)
		_, err = h.RotateKey(ctx, RotateKey{Workspace: "acme", KeyID: missing})
		wantErr(t, err, events.ErrNotFound)
		_, err = h.RetireIdentifier(ctx, RetireIdentifier{Workspace: "acme", IdentifierID: missing})
		wantErr(t, err, events.ErrNotFound)
		// A key of another workspace is not found.
		mustWorkspace(t, h, "beta")
		id := mustKey(t, h, "acme").ID
		_, err = h.RevokeKey(ctx, RevokeKey{Workspace: "beta", KeyID: id})
		wantErr(t, err, events.ErrNotFound)
		if seq := lastSeq(t, h.Log); seq != 3 {
			t.Errorf("log has %d events, want 3", seq)
		}
	})
}

func TestCreateWorkspaceTwice(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		mustWorkspace(t, h, "acme")
		_, err := h.CreateWorkspace(testCtx(t), CreateWorkspace{Workspace: "acme", Name: "Other"})
		wantErr(t, err, ErrAlreadyExists)
	})
}

func TestExpectedVersion(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		k := mustKey(t, h, "acme")
		res, err := h.RenameKey(ctx, RenameKey{Workspace: "acme", KeyID: k.ID, Name: "A", ExpectedVersion: k.Version})
		if err != nil {
			t.Fatal(err)
		}
		before := lastSeq(t, h.Log)
		_, err = h.RenameKey(ctx, RenameKey{Workspace: "acme", KeyID: k.ID, Name: "B", ExpectedVersion: k.Version})
		wantErr(t, err, ErrPrecondition)
		if !strings.Contains(err.Error(), "rename key") {
			t.Errorf("error %q does not name the action", err)
		}
		ident := mustIdentifier(t, h, "acme", "canvas", "Onboarding")
		_, err = h.RetireIdentifier(ctx, RetireIdentifier{Workspace: "acme", IdentifierID: ident.ID, ExpectedVersion: ident.Version + 100})
		wantErr(t, err, ErrPrecondition)
		if after := lastSeq(t, h.Log); after != before+2 {
			t.Errorf("log grew from %d to %d, want only the registration", before, after)
		}
		if _, err := h.RenameKey(ctx, RenameKey{Workspace: "acme", KeyID: k.ID, Name: "B", ExpectedVersion: res.Version}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSecretsNeverLogged(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		created := mustKey(t, h, "acme")
		rotated, err := h.RotateKey(ctx, RotateKey{Workspace: "acme", KeyID: created.ID, GraceSeconds: 60})
		if err != nil {
			t.Fatal(err)
		}
		secrets := []string{created.Secret, rotated.Secret}
		err = h.Log.Read(ctx, ">", 1, func(r events.Record) error {
			for _, s := range secrets {
				body := s[len(events.SecretPrefix) : len(s)-6]
				if strings.Contains(string(r.Data), body) || strings.Contains(r.Subject, body) || strings.Contains(r.MsgID, body) {
					t.Errorf("record %d holds a secret", r.Seq)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if s := rotated.String(); strings.Contains(s, rotated.Secret) || !strings.Contains(s, "redacted") {
			t.Errorf("Result.String() = %s", s)
		}
	})
}

// TestPrevHashChain checks that every event's prevhash is the hash of the previous event
// of its aggregate as stored, and empty for the first.
func TestPrevHashChain(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		k := mustKey(t, h, "acme")
		a := mustIdentifier(t, h, "acme", "segment", "Summer Sale")
		for i, list := range [][]string{{"1.1.1.1"}, {"2.2.2.2"}, {}} {
			if _, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: k.ID, Allowlist: list}); err != nil {
				t.Fatal(i, err)
			}
		}
		steps := []func() (Result, error){
			func() (Result, error) {
				return h.RenameIdentifier(ctx, RenameIdentifier{Workspace: "acme", IdentifierID: a.ID, Name: "Winter Sale"})
			},
			func() (Result, error) {
				return h.RenameIdentifier(ctx, RenameIdentifier{Workspace: "acme", IdentifierID: a.ID, Name: "WINTER SALE"})
			},
			func() (Result, error) {
				return h.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: "summer sale"})
			},
			func() (Result, error) {
				return h.RetireIdentifier(ctx, RetireIdentifier{Workspace: "acme", IdentifierID: a.ID})
			},
			func() (Result, error) {
				return h.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: "Winter sale"})
			},
			func() (Result, error) { return h.RotateKey(ctx, RotateKey{Workspace: "acme", KeyID: k.ID}) },
		}
		for i, step := range steps {
			if _, err := step(); err != nil {
				t.Fatal(i, err)
			}
		}
		last := map[string]string{} // aggregate filter -> hash of its last event
		n := 0
		err := h.Log.Read(ctx, ">", 1, func(r events.Record) error {
			d, err := events.DecodeRecord(r)
			if err != nil {
				return err
			}
			s, _ := events.ParseSubject(r.Subject)
			filter := events.AggregateFilter(s.Workspace, s.Aggregate, s.ID)
			if d.Event.PrevHash != last[filter] {
				t.Errorf("seq %d (%s): prevhash %q, want %q", r.Seq, d.Event.Type, d.Event.PrevHash, last[filter])
			}
			last[filter] = events.Hash(r.Data)
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n != 18 {
			t.Errorf("checked %d events, want 18", n)
		}
	})
}
