package httpapi

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/events"
)

// Workspace is a workspace as the API shows it.
type Workspace struct {
	ID        string    `json:"id" doc:"Slug [a-z0-9][a-z0-9-]{0,62}"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty" doc:"Key id of the creator"`
	Version   uint64    `json:"version" doc:"Stream sequence of the workspace's last event"`
}

func workspaceOut(s events.WorkspaceState) Workspace {
	return Workspace{ID: string(s.ID), Name: s.Name, CreatedAt: s.CreatedAt, CreatedBy: s.CreatedBy, Version: s.Version}
}

// Key is a REST API key as the API shows it; never its secret or the secret's hash.
type Key struct {
	ID                       string     `json:"id"`
	Workspace                string     `json:"workspace"`
	Name                     string     `json:"name"`
	Permissions              []string   `json:"permissions"`
	Allowlist                []string   `json:"allowlist" doc:"IP addresses and CIDR prefixes allowed to use the key; empty: any"`
	Status                   string     `json:"status" enum:"active,revoked,expired"`
	ExpiresAt                *time.Time `json:"expires_at,omitempty"`
	PreviousSecretValidUntil *time.Time `json:"previous_secret_valid_until,omitempty" doc:"After a rotation with grace: until when the old secret still works"`
	CreatedAt                time.Time  `json:"created_at"`
	CreatedBy                string     `json:"created_by,omitempty" doc:"Key id of the creator"`
	UpdatedAt                time.Time  `json:"updated_at"`
	Version                  uint64     `json:"version" doc:"Stream sequence of the key's last event; its ETag"`
}

func keyOut(k events.KeyState, now time.Time) Key {
	out := Key{
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

// Identifier is an app identifier or an additional API identifier.
type Identifier struct {
	ID        string    `json:"id"`
	Workspace string    `json:"workspace"`
	Kind      string    `json:"kind" enum:"app,segment,campaign,canvas,content_card,template,subscription_group,send"`
	Name      string    `json:"name"`
	Platform  string    `json:"platform,omitempty" doc:"For apps: ios, android, web, ..."`
	Status    string    `json:"status" enum:"active,retired"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	Version   uint64    `json:"version"`
}

func identifierOut(s events.IdentifierState) Identifier {
	return Identifier{ID: s.ID, Workspace: string(s.Workspace), Kind: string(s.Kind), Name: s.Name, Platform: s.Platform,
		Status: s.Status, CreatedAt: s.CreatedAt, CreatedBy: s.CreatedBy, UpdatedAt: s.UpdatedAt, Version: s.Version}
}

// HistoryEntry is one event of a history: the CloudEvent as stored, with its stream
// sequence.
type HistoryEntry struct {
	Sequence uint64          `json:"sequence"`
	Event    json.RawMessage `json:"event" doc:"The CloudEvent 1.0 (structured JSON) as stored in the log"`
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
