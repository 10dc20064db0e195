package commands

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
)

func TestValidation(t *testing.T) {
	h := &Handler{Log: newLog(t)}
	mustWorkspace(t, h, "acme")
	key := mustKey(t, h, "acme").ID
	ident := mustIdentifier(t, h, "acme", "segment", "Summer Sale").ID
	past := time.Now().Add(-time.Hour)
	long := strings.Repeat("a", events.MaxNameBytes+1)
	lowerID := strings.ToLower(events.NewID())
	tooMany := make([]string, events.MaxPermissions+1)
	for i := range tooMany {
		tooMany[i] = "p" + strconv.Itoa(i)
	}

	tests := []struct {
		name  string
		run   func() error
		field string
		value string
	}{
		{"CreateWorkspace/workspace", func() error {
			_, err := h.CreateWorkspace(testCtx(t), CreateWorkspace{Workspace: "Acme", Name: "Acme"})
			return err
		}, "workspace", "Acme"},
		{"CreateWorkspace/name", func() error {
			_, err := h.CreateWorkspace(testCtx(t), CreateWorkspace{Workspace: "beta", Name: "  "})
			return err
		}, "name", "  "},
		{"CreateWorkspace/event_id", func() error {
			_, err := h.CreateWorkspace(testCtx(t), CreateWorkspace{Workspace: "beta", Name: "Beta", EventID: "not-a-ulid"})
			return err
		}, "event_id", "not-a-ulid"},
		{"CreateKey/workspace", func() error {
			_, err := h.CreateKey(testCtx(t), CreateKey{Workspace: "", Name: "k"})
			return err
		}, "workspace", ""},
		{"CreateKey/name/control", func() error {
			_, err := h.CreateKey(testCtx(t), CreateKey{Workspace: "acme", Name: "a\x00b"})
			return err
		}, "name", "a\x00b"},
		{"CreateKey/name/utf8", func() error {
			_, err := h.CreateKey(testCtx(t), CreateKey{Workspace: "acme", Name: "a\xffb"})
			return err
		}, "name", "a\xffb"},
		{"CreateKey/name/long", func() error {
			_, err := h.CreateKey(testCtx(t), CreateKey{Workspace: "acme", Name: long})
			return err
		}, "name", long[:32] + "..."},
		{"CreateKey/permissions", func() error {
			_, err := h.CreateKey(testCtx(t), CreateKey{Workspace: "acme", Name: "k", Permissions: []string{"users.track", "Users Track"}})
			return err
		}, "permissions", "Users Track"},
		{"CreateKey/permissions/count", func() error {
			_, err := h.CreateKey(testCtx(t), CreateKey{Workspace: "acme", Name: "k", Permissions: tooMany})
			return err
		}, "permissions", "257 entries"},
		{"CreateKey/allowlist", func() error {
			_, err := h.CreateKey(testCtx(t), CreateKey{Workspace: "acme", Name: "k", Allowlist: []string{"10.0.0.0/33"}})
			return err
		}, "allowlist", "10.0.0.0/33"},
		{"CreateKey/allowlist/zone", func() error {
			_, err := h.CreateKey(testCtx(t), CreateKey{Workspace: "acme", Name: "k", Allowlist: []string{"fe80::1%eth0"}})
			return err
		}, "allowlist", "fe80::1%eth0"},
		{"CreateKey/expires_at", func() error {
			_, err := h.CreateKey(testCtx(t), CreateKey{Workspace: "acme", Name: "k", ExpiresAt: &past})
			return err
		}, "expires_at", past.Format(time.RFC3339Nano)},
		{"CreateKey/event_id", func() error {
			_, err := h.CreateKey(testCtx(t), CreateKey{Workspace: "acme", Name: "k", EventID: lowerID})
			return err
		}, "event_id", lowerID},
		{"RenameKey/workspace", func() error {
			_, err := h.RenameKey(testCtx(t), RenameKey{Workspace: "ac me", KeyID: key, Name: "n"})
			return err
		}, "workspace", "ac me"},
		{"RenameKey/key_id", func() error {
			_, err := h.RenameKey(testCtx(t), RenameKey{Workspace: "acme", KeyID: "k1", Name: "n"})
			return err
		}, "key_id", "k1"},
		{"RenameKey/name", func() error {
			_, err := h.RenameKey(testCtx(t), RenameKey{Workspace: "acme", KeyID: key, Name: ""})
			return err
		}, "name", ""},
		{"UpdatePermissions/key_id", func() error {
			_, err := h.UpdatePermissions(testCtx(t), UpdatePermissions{Workspace: "acme", KeyID: ""})
			return err
		}, "key_id", ""},
		{"UpdatePermissions/permissions", func() error {
			_, err := h.UpdatePermissions(testCtx(t), UpdatePermissions{Workspace: "acme", KeyID: key, Permissions: []string{""}})
			return err
		}, "permissions", ""},
		{"UpdateAllowlist/workspace", func() error {
			_, err := h.UpdateAllowlist(testCtx(t), UpdateAllowlist{Workspace: "-acme", KeyID: key})
			return err
		}, "workspace", "-acme"},
		{"UpdateAllowlist/allowlist", func() error {
			_, err := h.UpdateAllowlist(testCtx(t), UpdateAllowlist{Workspace: "acme", KeyID: key, Allowlist: []string{"10.0.0.1", "not-an-ip"}})
			return err
		}, "allowlist", "not-an-ip"},
		{"UpdateAllowlist/allowlist/mapped", func() error {
			_, err := h.UpdateAllowlist(testCtx(t), UpdateAllowlist{Workspace: "acme", KeyID: key, Allowlist: []string{"::ffff:10.0.0.0/64"}})
			return err
		}, "allowlist", "::ffff:10.0.0.0/64"},
		{"UpdateAllowlist/event_id", func() error {
			_, err := h.UpdateAllowlist(testCtx(t), UpdateAllowlist{Workspace: "acme", KeyID: key, EventID: "x"})
			return err
		}, "event_id", "x"},
		{"RotateKey/key_id", func() error {
			_, err := h.RotateKey(testCtx(t), RotateKey{Workspace: "acme", KeyID: strings.ToLower(key)})
			return err
		}, "key_id", strings.ToLower(key)},
		{"RotateKey/grace_seconds/negative", func() error {
			_, err := h.RotateKey(testCtx(t), RotateKey{Workspace: "acme", KeyID: key, GraceSeconds: -1})
			return err
		}, "grace_seconds", "-1"},
		{"RotateKey/grace_seconds/too_long", func() error {
			_, err := h.RotateKey(testCtx(t), RotateKey{Workspace: "acme", KeyID: key, GraceSeconds: 30*24*3600 + 1})
			return err
		}, "grace_seconds", "2592001"},
		{"SetKeyExpiry/key_id", func() error {
			_, err := h.SetKeyExpiry(testCtx(t), SetKeyExpiry{Workspace: "acme", KeyID: "nope"})
			return err
		}, "key_id", "nope"},
		{"SetKeyExpiry/expires_at", func() error {
			_, err := h.SetKeyExpiry(testCtx(t), SetKeyExpiry{Workspace: "acme", KeyID: key, ExpiresAt: &past})
			return err
		}, "expires_at", past.Format(time.RFC3339Nano)},
		{"RevokeKey/workspace", func() error {
			_, err := h.RevokeKey(testCtx(t), RevokeKey{Workspace: "ACME", KeyID: key})
			return err
		}, "workspace", "ACME"},
		{"RevokeKey/key_id", func() error {
			_, err := h.RevokeKey(testCtx(t), RevokeKey{Workspace: "acme", KeyID: key + "0"})
			return err
		}, "key_id", key + "0"},
		{"RegisterIdentifier/workspace", func() error {
			_, err := h.RegisterIdentifier(testCtx(t), RegisterIdentifier{Workspace: "a.b", Kind: "segment", Name: "n"})
			return err
		}, "workspace", "a.b"},
		{"RegisterIdentifier/kind", func() error {
			_, err := h.RegisterIdentifier(testCtx(t), RegisterIdentifier{Workspace: "acme", Kind: "widget", Name: "n"})
			return err
		}, "kind", "widget"},
		{"RegisterIdentifier/name", func() error {
			_, err := h.RegisterIdentifier(testCtx(t), RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: "\t"})
			return err
		}, "name", "\t"},
		{"RegisterIdentifier/platform/missing", func() error {
			_, err := h.RegisterIdentifier(testCtx(t), RegisterIdentifier{Workspace: "acme", Kind: "app", Name: "Shop"})
			return err
		}, "platform", ""},
		{"RegisterIdentifier/platform/bad", func() error {
			_, err := h.RegisterIdentifier(testCtx(t), RegisterIdentifier{Workspace: "acme", Kind: "app", Name: "Shop", Platform: "iOS"})
			return err
		}, "platform", "iOS"},
		{"RegisterIdentifier/platform/not_app", func() error {
			_, err := h.RegisterIdentifier(testCtx(t), RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: "Shop", Platform: "ios"})
			return err
		}, "platform", "ios"},
		{"RegisterIdentifier/event_id", func() error {
			_, err := h.RegisterIdentifier(testCtx(t), RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: "Shop", EventID: "idem-1"})
			return err
		}, "event_id", "idem-1"},
		{"RenameIdentifier/identifier_id", func() error {
			_, err := h.RenameIdentifier(testCtx(t), RenameIdentifier{Workspace: "acme", IdentifierID: key[:20], Name: "n"})
			return err
		}, "identifier_id", key[:20]},
		{"RenameIdentifier/name", func() error {
			_, err := h.RenameIdentifier(testCtx(t), RenameIdentifier{Workspace: "acme", IdentifierID: ident, Name: "a\nb"})
			return err
		}, "name", "a\nb"},
		{"RetireIdentifier/workspace", func() error {
			_, err := h.RetireIdentifier(testCtx(t), RetireIdentifier{Workspace: "", IdentifierID: ident})
			return err
		}, "workspace", ""},
		{"RetireIdentifier/identifier_id", func() error {
			_, err := h.RetireIdentifier(testCtx(t), RetireIdentifier{Workspace: "acme", IdentifierID: "Summer Sale"})
			return err
		}, "identifier_id", "Summer Sale"},
		{"RetireIdentifier/event_id", func() error {
			_, err := h.RetireIdentifier(testCtx(t), RetireIdentifier{Workspace: "acme", IdentifierID: ident, EventID: ident + "X"})
			return err
		}, "event_id", ident + "X"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := lastSeq(t, h.Log)
			err := tt.run()
			var verr *events.ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("got %v, want a *events.ValidationError", err)
			}
			if !errors.Is(err, events.ErrInvalid) {
				t.Errorf("errors.Is(%v, events.ErrInvalid) = false", err)
			}
			if verr.Field != tt.field {
				t.Errorf("field = %q, want %q", verr.Field, tt.field)
			}
			if verr.Value != tt.value {
				t.Errorf("value = %q, want %q", verr.Value, tt.value)
			}
			if after := lastSeq(t, h.Log); after != before {
				t.Errorf("log grew from %d to %d after a validation error", before, after)
			}
		})
	}
}

// TestValidationBeforeState checks that invalid input is reported even when the
// aggregate does not exist: validation comes before any read.
func TestValidationBeforeState(t *testing.T) {
	h := &Handler{Log: newLog(t)}
	_, err := h.UpdateAllowlist(testCtx(t), UpdateAllowlist{Workspace: "nowhere", KeyID: events.NewID(), Allowlist: []string{"300.0.0.1"}})
	wantErr(t, err, events.ErrInvalid)
}
