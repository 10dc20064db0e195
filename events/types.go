package events

import (
	"net/netip"
	"time"
)

// Aggregate names the kind of thing an event belongs to; it is the third token of the
// subject.
type Aggregate string

// Aggregates. AggName holds the claims that keep identifier names unique per workspace and
// kind: its id is NameClaimID(kind, folded name).
const (
	AggWorkspace  Aggregate = "workspace"
	AggKey        Aggregate = "key"
	AggIdentifier Aggregate = "identifier"
	AggName       Aggregate = "name"
)

// Type is a versioned CloudEvents type such as "keyreg.key.allowlist_updated.v1". A
// published type never changes meaning; a new shape gets a new version and an upcaster.
type Type string

// Event types, version 1.
const (
	TypeWorkspaceCreated      Type = "keyreg.workspace.created.v1"
	TypePermissionDefined     Type = "keyreg.workspace.permission_defined.v1"
	TypeKeyCreated            Type = "keyreg.key.created.v1"
	TypeKeyRenamed            Type = "keyreg.key.renamed.v1"
	TypeKeyPermissionsUpdated Type = "keyreg.key.permissions_updated.v1"
	TypeAllowlistUpdated      Type = "keyreg.key.allowlist_updated.v1"
	TypeKeySecretRotated      Type = "keyreg.key.secret_rotated.v1"
	TypeKeyExpiryChanged      Type = "keyreg.key.expiry_changed.v1"
	TypeKeyRevoked            Type = "keyreg.key.revoked.v1"
	TypeIdentifierRegistered  Type = "keyreg.identifier.registered.v1"
	TypeIdentifierRenamed     Type = "keyreg.identifier.renamed.v1"
	TypeIdentifierRetired     Type = "keyreg.identifier.retired.v1"
	TypeNameClaimed           Type = "keyreg.name.claimed.v1"
	TypeNameReleased          Type = "keyreg.name.released.v1"
)

// Types lists every event type with its aggregate and the subject's last token.
var Types = []struct {
	Type      Type
	Aggregate Aggregate
	Name      string
}{
	{TypeWorkspaceCreated, AggWorkspace, "created"},
	{TypePermissionDefined, AggWorkspace, "permission_defined"},
	{TypeKeyCreated, AggKey, "created"},
	{TypeKeyRenamed, AggKey, "renamed"},
	{TypeKeyPermissionsUpdated, AggKey, "permissions_updated"},
	{TypeAllowlistUpdated, AggKey, "allowlist_updated"},
	{TypeKeySecretRotated, AggKey, "secret_rotated"},
	{TypeKeyExpiryChanged, AggKey, "expiry_changed"},
	{TypeKeyRevoked, AggKey, "revoked"},
	{TypeIdentifierRegistered, AggIdentifier, "registered"},
	{TypeIdentifierRenamed, AggIdentifier, "renamed"},
	{TypeIdentifierRetired, AggIdentifier, "retired"},
	{TypeNameClaimed, AggName, "claimed"},
	{TypeNameReleased, AggName, "released"},
	{TypeCheckpointSealed, AggCheckpoint, "sealed"},
	{TypeSubscriberAdded, AggSubscriber, "added"},
	{TypeSubscriberRemoved, AggSubscriber, "removed"},
}

// Payload is the data of an event. Every payload carries the new state of what changed
// and its previous value, so a history reads without replaying.
type Payload interface {
	EventType() Type
}

// WorkspaceCreated starts a workspace.
type WorkspaceCreated struct {
	Name string `json:"name"`
}

// PermissionDefined adds a permission of the workspace's own to its catalogue, for its
// keys to be granted. Name is never in the built-in catalogue nor a keyreg.* permission.
type PermissionDefined struct {
	Name        Permission `json:"name"`
	Description string     `json:"description"`
}

// KeyCreated starts a REST API key. SecretHash is the hex SHA-256 of the secret; the
// secret itself never enters the log. An empty Allowlist allows any address.
type KeyCreated struct {
	Name        string         `json:"name"`
	Permissions []Permission   `json:"permissions"`
	Allowlist   []netip.Prefix `json:"allowlist"`
	SecretHash  string         `json:"secret_hash"`
	ExpiresAt   *time.Time     `json:"expires_at,omitempty"`
}

// KeyRenamed changes a key's name.
type KeyRenamed struct {
	Name     string `json:"name"`
	Previous string `json:"previous"`
}

// KeyPermissionsUpdated replaces a key's permissions.
type KeyPermissionsUpdated struct {
	Permissions []Permission `json:"permissions"`
	Previous    []Permission `json:"previous"`
	Added       []Permission `json:"added"`
	Removed     []Permission `json:"removed"`
}

// AllowlistUpdated replaces a key's IP allowlist.
type AllowlistUpdated struct {
	Allowlist []netip.Prefix `json:"allowlist"`
	Previous  []netip.Prefix `json:"previous"`
	Added     []netip.Prefix `json:"added"`
	Removed   []netip.Prefix `json:"removed"`
}

// KeySecretRotated replaces a key's secret. The previous secret stays valid until
// PreviousValidUntil (equal to the event time when there is no grace period).
type KeySecretRotated struct {
	SecretHash         string    `json:"secret_hash"`
	PreviousHash       string    `json:"previous_hash"`
	PreviousValidUntil time.Time `json:"previous_valid_until"`
}

// KeyExpiryChanged sets or clears (nil) a key's expiry.
type KeyExpiryChanged struct {
	ExpiresAt *time.Time `json:"expires_at"`
	Previous  *time.Time `json:"previous"`
}

// KeyRevoked revokes a key for good; its history is kept.
type KeyRevoked struct {
	PreviousStatus string `json:"previous_status"`
}

// IdentifierRegistered registers an app identifier or an additional API identifier.
// Platform is set for apps only.
type IdentifierRegistered struct {
	Kind     Kind   `json:"kind"`
	Name     string `json:"name"`
	Platform string `json:"platform,omitempty"`
}

// IdentifierRenamed changes an identifier's name.
type IdentifierRenamed struct {
	Name     string `json:"name"`
	Previous string `json:"previous"`
}

// IdentifierRetired retires an identifier; its name becomes free again.
type IdentifierRetired struct {
	Kind Kind   `json:"kind"`
	Name string `json:"name"`
}

// NameClaimed reserves an identifier name within its workspace and kind.
type NameClaimed struct {
	IdentifierID string `json:"identifier_id"`
	Kind         Kind   `json:"kind"`
	Name         string `json:"name"`
}

// NameReleased frees a claimed name.
type NameReleased struct {
	IdentifierID string `json:"identifier_id"`
	Kind         Kind   `json:"kind"`
	Name         string `json:"name"`
}

func (WorkspaceCreated) EventType() Type      { return TypeWorkspaceCreated }
func (PermissionDefined) EventType() Type     { return TypePermissionDefined }
func (KeyCreated) EventType() Type            { return TypeKeyCreated }
func (KeyRenamed) EventType() Type            { return TypeKeyRenamed }
func (KeyPermissionsUpdated) EventType() Type { return TypeKeyPermissionsUpdated }
func (AllowlistUpdated) EventType() Type      { return TypeAllowlistUpdated }
func (KeySecretRotated) EventType() Type      { return TypeKeySecretRotated }
func (KeyExpiryChanged) EventType() Type      { return TypeKeyExpiryChanged }
func (KeyRevoked) EventType() Type            { return TypeKeyRevoked }
func (IdentifierRegistered) EventType() Type  { return TypeIdentifierRegistered }
func (IdentifierRenamed) EventType() Type     { return TypeIdentifierRenamed }
func (IdentifierRetired) EventType() Type     { return TypeIdentifierRetired }
func (NameClaimed) EventType() Type           { return TypeNameClaimed }
func (NameReleased) EventType() Type          { return TypeNameReleased }

// newPayload returns a pointer to a zero payload of type t, or nil for an unknown type.
func newPayload(t Type) Payload {
	switch t {
	case TypeWorkspaceCreated:
		return &WorkspaceCreated{}
	case TypePermissionDefined:
		return &PermissionDefined{}
	case TypeKeyCreated:
		return &KeyCreated{}
	case TypeKeyRenamed:
		return &KeyRenamed{}
	case TypeKeyPermissionsUpdated:
		return &KeyPermissionsUpdated{}
	case TypeAllowlistUpdated:
		return &AllowlistUpdated{}
	case TypeKeySecretRotated:
		return &KeySecretRotated{}
	case TypeKeyExpiryChanged:
		return &KeyExpiryChanged{}
	case TypeKeyRevoked:
		return &KeyRevoked{}
	case TypeIdentifierRegistered:
		return &IdentifierRegistered{}
	case TypeIdentifierRenamed:
		return &IdentifierRenamed{}
	case TypeIdentifierRetired:
		return &IdentifierRetired{}
	case TypeNameClaimed:
		return &NameClaimed{}
	case TypeNameReleased:
		return &NameReleased{}
	case TypeCheckpointSealed:
		return &CheckpointSealed{}
	case TypeSubscriberAdded:
		return &SubscriberAdded{}
	case TypeSubscriberRemoved:
		return &SubscriberRemoved{}
	}
	return nil
}
