package events

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Statuses of keys and identifiers. A key past its expiry is reported as StatusExpired by
// KeyState.StatusAt; the stored status stays active.
const (
	StatusActive  = "active"
	StatusRevoked = "revoked"
	StatusExpired = "expired"
	StatusRetired = "retired"
)

// Head is where an aggregate's state stands in the log: Version is the stream sequence of
// its last event (0 before the first); LastHash the hash of that event as stored, which the
// next event of the aggregate carries as its prevhash. The states of the aggregates embed
// it, last, so their JSON ends with "version" and "last_hash".
type Head struct {
	Version  uint64 `json:"version"`
	LastHash string `json:"last_hash"`
}

// Exists reports whether the aggregate has an event: a key or workspace created, an
// identifier registered, a name claimed (and maybe released since).
func (h *Head) Exists() bool { return h.Version != 0 }

// advance moves the head to the event stored at seq as data.
func (h *Head) advance(seq uint64, data []byte) { h.Version, h.LastHash = seq, Hash(data) }

// KeyState is the current state of a key aggregate, folded from its events.
type KeyState struct {
	ID                 string         `json:"id"`
	Workspace          Workspace      `json:"workspace"`
	Name               string         `json:"name"`
	Permissions        []Permission   `json:"permissions"`
	Allowlist          []netip.Prefix `json:"allowlist"`
	Status             string         `json:"status"`
	ExpiresAt          *time.Time     `json:"expires_at,omitempty"`
	SecretHash         string         `json:"secret_hash"`
	PreviousHash       string         `json:"previous_hash,omitempty"`
	PreviousValidUntil *time.Time     `json:"previous_valid_until,omitempty"`
	CreatedAt          time.Time      `json:"created_at"`
	CreatedBy          string         `json:"created_by"`
	UpdatedAt          time.Time      `json:"updated_at"`
	Head
}

// StatusAt returns revoked, expired (active but past ExpiresAt at t) or active.
func (k *KeyState) StatusAt(t time.Time) string {
	if k.Status == StatusActive && k.ExpiresAt != nil && !t.Before(*k.ExpiresAt) {
		return StatusExpired
	}
	return k.Status
}

// Apply folds one event of this key into the state. seq and data are the record's.
func (k *KeyState) Apply(seq uint64, data []byte, e Event, p Payload) error {
	switch p := p.(type) {
	case *KeyCreated:
		_, id := e.Aggregate()
		*k = KeyState{
			ID: id, Workspace: e.Workspace(), Name: p.Name, Permissions: p.Permissions,
			Allowlist: p.Allowlist, Status: StatusActive, ExpiresAt: p.ExpiresAt,
			SecretHash: p.SecretHash, CreatedAt: e.Time, CreatedBy: e.Actor,
		}
	case *KeyRenamed:
		k.Name = p.Name
	case *KeyPermissionsUpdated:
		k.Permissions = p.Permissions
	case *AllowlistUpdated:
		k.Allowlist = p.Allowlist
	case *KeySecretRotated:
		until := p.PreviousValidUntil
		k.SecretHash, k.PreviousHash, k.PreviousValidUntil = p.SecretHash, p.PreviousHash, &until
	case *KeyExpiryChanged:
		k.ExpiresAt = p.ExpiresAt
	case *KeyRevoked:
		k.Status = StatusRevoked
	case *KeyExpiring, *KeyExpired, *KeyLeaked:
		// Notices (keynotices.go): the key's state is unchanged, its version advances.
	default:
		return fmt.Errorf("events: key %s: cannot apply %s", k.ID, e.Type)
	}
	if k.Permissions == nil {
		k.Permissions = []Permission{}
	}
	if k.Allowlist == nil {
		k.Allowlist = []netip.Prefix{}
	}
	k.UpdatedAt = e.Time
	k.advance(seq, data)
	return nil
}

// IdentifierState is the current state of an identifier aggregate.
type IdentifierState struct {
	ID        string    `json:"id"`
	Workspace Workspace `json:"workspace"`
	Kind      Kind      `json:"kind"`
	Name      string    `json:"name"`
	Platform  string    `json:"platform,omitempty"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	UpdatedAt time.Time `json:"updated_at"`
	Head
}

// Apply folds one event of this identifier into the state.
func (s *IdentifierState) Apply(seq uint64, data []byte, e Event, p Payload) error {
	switch p := p.(type) {
	case *IdentifierRegistered:
		_, id := e.Aggregate()
		*s = IdentifierState{
			ID: id, Workspace: e.Workspace(), Kind: p.Kind, Name: p.Name, Platform: p.Platform,
			Status: StatusActive, CreatedAt: e.Time, CreatedBy: e.Actor,
		}
	case *IdentifierRenamed:
		s.Name = p.Name
	case *IdentifierRetired:
		s.Status = StatusRetired
	default:
		return fmt.Errorf("events: identifier %s: cannot apply %s", s.ID, e.Type)
	}
	s.UpdatedAt = e.Time
	s.advance(seq, data)
	return nil
}

// WorkspaceState is the current state of a workspace aggregate. Permissions are the
// workspace's own, in the order they were defined.
type WorkspaceState struct {
	ID          Workspace        `json:"id"`
	Name        string           `json:"name"`
	Permissions []PermissionInfo `json:"permissions,omitempty"`
	CreatedAt   time.Time        `json:"created_at"`
	CreatedBy   string           `json:"created_by"`
	Head
}

// Apply folds one event of this workspace into the state.
func (s *WorkspaceState) Apply(seq uint64, data []byte, e Event, p Payload) error {
	switch p := p.(type) {
	case *WorkspaceCreated:
		*s = WorkspaceState{ID: e.Workspace(), Name: p.Name, CreatedAt: e.Time, CreatedBy: e.Actor}
	case *PermissionDefined:
		if !s.Exists() {
			return fmt.Errorf("events: workspace %s: %s before workspace.created", e.Workspace(), e.Type)
		}
		s.Permissions = append(slices.Clip(s.Permissions), PermissionInfo{Name: p.Name, Description: p.Description, Group: GroupWorkspace, Workspace: s.ID})
	case *LeakResponseSet:
		// Read from the log where needed (the leak report), not kept in the state.
	default:
		return fmt.Errorf("events: workspace %s: cannot apply %s", s.ID, e.Type)
	}
	s.advance(seq, data)
	return nil
}

// NameClaimState is the state of a name claim: who holds the name, if anyone.
type NameClaimState struct {
	Holder string `json:"holder"` // identifier id; empty when released
	Head
}

// Apply folds one claim or release into the state.
func (s *NameClaimState) Apply(seq uint64, data []byte, e Event, p Payload) error {
	switch p := p.(type) {
	case *NameClaimed:
		s.Holder = p.IdentifierID
	case *NameReleased:
		s.Holder = ""
	default:
		return fmt.Errorf("events: name claim: cannot apply %s", e.Type)
	}
	s.advance(seq, data)
	return nil
}

// Decoded is a record with its envelope and typed payload decoded.
type Decoded struct {
	Record
	Event   Event
	Payload Payload
}

// DecodeRecord decodes a record's envelope and payload.
func DecodeRecord(r Record) (Decoded, error) {
	e, err := Decode(r.Data)
	if err != nil {
		return Decoded{}, fmt.Errorf("seq %d: %w", r.Seq, err)
	}
	p, err := e.Payload()
	if err != nil {
		return Decoded{}, fmt.Errorf("seq %d: %w", r.Seq, err)
	}
	return Decoded{Record: r, Event: e, Payload: p}, nil
}
