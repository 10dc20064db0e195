package httpapi

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

func workspaceOut(s events.WorkspaceState) wire.Workspace {
	return wire.Workspace{ID: string(s.ID), Name: s.Name, CreatedAt: s.CreatedAt, CreatedBy: s.CreatedBy, Version: s.Version}
}

func keyOut(k events.KeyState, now time.Time) wire.Key {
	out := wire.Key{
		ID: k.ID, Workspace: string(k.Workspace), Name: k.Name, Permissions: make([]string, len(k.Permissions)),
		Allowlist: make([]string, len(k.Allowlist)), Status: k.StatusAt(now), ExpiresAt: k.ExpiresAt,
		CreatedAt: k.CreatedAt, CreatedBy: k.CreatedBy, UpdatedAt: k.UpdatedAt, Version: k.Version,
	}
	for i, p := range k.Permissions {
		out.Permissions[i] = string(p)
	}
	for i, p := range k.Allowlist {
		out.Allowlist[i] = p.String()
	}
	if k.PreviousValidUntil != nil && now.Before(*k.PreviousValidUntil) {
		out.PreviousSecretValidUntil = k.PreviousValidUntil
	}
	return out
}

func identifierOut(s events.IdentifierState) wire.Identifier {
	return wire.Identifier{ID: s.ID, Workspace: string(s.Workspace), Kind: string(s.Kind), Name: s.Name, Platform: s.Platform,
		Status: s.Status, CreatedAt: s.CreatedAt, CreatedBy: s.CreatedBy, UpdatedAt: s.UpdatedAt, Version: s.Version}
}

// NullableTime is a JSON time that tells an absent field (Set false) from null (Set true,
// Time nil).
type NullableTime struct {
	Set  bool
	Time *time.Time
}

// UnmarshalJSON implements json.Unmarshaler.
func (n *NullableTime) UnmarshalJSON(b []byte) error {
	n.Set = true
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		n.Time = nil
		return nil
	}
	var t time.Time
	if err := json.Unmarshal(b, &t); err != nil {
		return err
	}
	n.Time = &t
	return nil
}

// Schema implements huma.SchemaProvider: an RFC 3339 time or null.
func (NullableTime) Schema(r huma.Registry) *huma.Schema {
	return &huma.Schema{Type: "string", Format: "date-time", Nullable: true, Description: "RFC 3339 time; null clears it"}
}
