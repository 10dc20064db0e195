package events

import (
	"net/netip"
	"strconv"
	"strings"
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

// TypeInfo describes one event type: its aggregate, its name (the last token of its
// subjects, the change column of audit exports) and the constructor of its payload.
type TypeInfo struct {
	Type      Type
	Aggregate Aggregate
	Name      string
	// New returns a pointer to a zero payload of the type, for decoding.
	New func() Payload
}

// Types lists every event type, in a fixed order: it is the one list of them. The decoder
// (Event.Payload), the subject scheme and the type filters of the API all read it. To add
// an event type: its Type constant, its payload (a struct with the methods of Payload) and
// a row here, its fold in its aggregate's state (state.go), and a sample payload in
// cloudevents_test.go; TestEventTypeUnits checks all of them (README: Adding an event type).
var Types = []TypeInfo{
	eventType(AggWorkspace, func() Payload { return &WorkspaceCreated{} }),
	eventType(AggWorkspace, func() Payload { return &PermissionDefined{} }),
	eventType(AggKey, func() Payload { return &KeyCreated{} }),
	eventType(AggKey, func() Payload { return &KeyRenamed{} }),
	eventType(AggKey, func() Payload { return &KeyPermissionsUpdated{} }),
	eventType(AggKey, func() Payload { return &AllowlistUpdated{} }),
	eventType(AggKey, func() Payload { return &KeySecretRotated{} }),
	eventType(AggKey, func() Payload { return &KeyExpiryChanged{} }),
	eventType(AggKey, func() Payload { return &KeyRevoked{} }),
	eventType(AggIdentifier, func() Payload { return &IdentifierRegistered{} }),
	eventType(AggIdentifier, func() Payload { return &IdentifierRenamed{} }),
	eventType(AggIdentifier, func() Payload { return &IdentifierRetired{} }),
	eventType(AggName, func() Payload { return &NameClaimed{} }),
	eventType(AggName, func() Payload { return &NameReleased{} }),
	eventType(AggCheckpoint, func() Payload { return &CheckpointSealed{} }),
	eventType(AggSubscriber, func() Payload { return &SubscriberAdded{} }),
	eventType(AggSubscriber, func() Payload { return &SubscriberRemoved{} }),
	eventType(AggSigner, func() Payload { return &SignerAdded{} }),
	eventType(AggSigner, func() Payload { return &SignerRetired{} }),
	eventType(AggKey, func() Payload { return &KeyExpiring{} }),
	eventType(AggKey, func() Payload { return &KeyExpired{} }),
	eventType(AggKey, func() Payload { return &KeyLeaked{} }),
	eventType(AggWorkspace, func() Payload { return &LeakResponseSet{} }),
	eventType(AggWebhook, func() Payload { return &WebhookRegistered{} }),
	eventType(AggWebhook, func() Payload { return &WebhookRemoved{} }),
}

// eventType is the row of Types of the payload newPayload makes, of aggregate agg.
func eventType(agg Aggregate, newPayload func() Payload) TypeInfo {
	t := newPayload().EventType()
	return TypeInfo{Type: t, Aggregate: agg, Name: t.Name(), New: newPayload}
}

// payloadOf is Types by type.
var payloadOf = func() map[Type]func() Payload {
	m := make(map[Type]func() Payload, len(Types))
	for _, x := range Types {
		m[x.Type] = x.New
	}
	return m
}()

// newPayload returns a pointer to a zero payload of type t, or nil for an unknown type.
func newPayload(t Type) Payload {
	if f, ok := payloadOf[t]; ok {
		return f()
	}
	return nil
}

// Name returns the name of the type, its third token: "allowlist_updated" for
// "keyreg.key.allowlist_updated.v1". It is the last token of the type's subjects and the
// change column of audit exports. A type not of the form keyreg.<aggregate>.<name>.vN is
// its own name.
func (t Type) Name() string {
	parts := strings.Split(string(t), ".")
	if len(parts) == 4 {
		return parts[2]
	}
	return string(t)
}

// Payload is the data of an event. Every payload carries the new state of what changed
// and its previous value, so a history reads without replaying. Payloads are structs whose
// methods have value receivers; decoding gives pointers to them.
type Payload interface {
	// EventType returns the payload's event type.
	EventType() Type
	// Change returns the values the event changed, as the audit log and the CSV export
	// show them.
	Change() Change
	// Summary says in a few words what the event changed, for one line of `keyreg
	// watch`; at is the event's time.
	Summary(at time.Time) string
}

// WorkspaceCreated starts a workspace.
type WorkspaceCreated struct {
	Name string `json:"name"`
}

// EventType implements Payload.
func (WorkspaceCreated) EventType() Type { return TypeWorkspaceCreated }

// Change implements Payload.
func (p WorkspaceCreated) Change() Change { return Change{After: fields{"name": p.Name}} }

// Summary implements Payload.
func (p WorkspaceCreated) Summary(time.Time) string { return "created " + strconv.Quote(p.Name) }

// PermissionDefined adds a permission of the workspace's own to its catalogue, for its
// keys to be granted. Name is never in the built-in catalogue nor a keyreg.* permission.
type PermissionDefined struct {
	Name        Permission `json:"name"`
	Description string     `json:"description"`
}

// EventType implements Payload.
func (PermissionDefined) EventType() Type { return TypePermissionDefined }

// Change implements Payload.
func (p PermissionDefined) Change() Change {
	return Change{After: fields{"permission": p.Name, "description": p.Description}}
}

// Summary implements Payload.
func (p PermissionDefined) Summary(time.Time) string {
	return "defined permission " + string(p.Name) + " " + strconv.Quote(p.Description)
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

// EventType implements Payload.
func (KeyCreated) EventType() Type { return TypeKeyCreated }

// Change implements Payload.
func (p KeyCreated) Change() Change {
	return Change{After: fields{"name": p.Name, "permissions": nonNil(p.Permissions), "allowlist": nonNil(p.Allowlist),
		"expires_at": p.ExpiresAt, "secret_sha256": shortHash(p.SecretHash)}}
}

// Summary implements Payload.
func (p KeyCreated) Summary(time.Time) string {
	s := "created " + strconv.Quote(p.Name) + " permissions " + listPermissions(p.Permissions) + " allowlist " + listPrefixes(p.Allowlist)
	if p.ExpiresAt != nil {
		s += " expires " + summaryTime(*p.ExpiresAt)
	}
	return s
}

// KeyRenamed changes a key's name.
type KeyRenamed struct {
	Name     string `json:"name"`
	Previous string `json:"previous"`
}

// EventType implements Payload.
func (KeyRenamed) EventType() Type { return TypeKeyRenamed }

// Change implements Payload.
func (p KeyRenamed) Change() Change {
	return Change{Before: fields{"name": p.Previous}, After: fields{"name": p.Name}}
}

// Summary implements Payload.
func (p KeyRenamed) Summary(time.Time) string {
	return "renamed " + strconv.Quote(p.Previous) + " -> " + strconv.Quote(p.Name)
}

// KeyPermissionsUpdated replaces a key's permissions.
type KeyPermissionsUpdated struct {
	Permissions []Permission `json:"permissions"`
	Previous    []Permission `json:"previous"`
	Added       []Permission `json:"added"`
	Removed     []Permission `json:"removed"`
}

// EventType implements Payload.
func (KeyPermissionsUpdated) EventType() Type { return TypeKeyPermissionsUpdated }

// Change implements Payload.
func (p KeyPermissionsUpdated) Change() Change {
	return Change{Before: fields{"permissions": nonNil(p.Previous)}, After: fields{"permissions": nonNil(p.Permissions)}}
}

// Summary implements Payload.
func (p KeyPermissionsUpdated) Summary(time.Time) string {
	return "permissions " + listPermissions(p.Permissions) +
		addedRemoved(len(p.Added), listPermissions(p.Added), len(p.Removed), listPermissions(p.Removed))
}

// AllowlistUpdated replaces a key's IP allowlist.
type AllowlistUpdated struct {
	Allowlist []netip.Prefix `json:"allowlist"`
	Previous  []netip.Prefix `json:"previous"`
	Added     []netip.Prefix `json:"added"`
	Removed   []netip.Prefix `json:"removed"`
}

// EventType implements Payload.
func (AllowlistUpdated) EventType() Type { return TypeAllowlistUpdated }

// Change implements Payload.
func (p AllowlistUpdated) Change() Change {
	return Change{Before: fields{"allowlist": nonNil(p.Previous)}, After: fields{"allowlist": nonNil(p.Allowlist)}}
}

// Summary implements Payload.
func (p AllowlistUpdated) Summary(time.Time) string {
	return "allowlist " + listPrefixes(p.Allowlist) +
		addedRemoved(len(p.Added), listPrefixes(p.Added), len(p.Removed), listPrefixes(p.Removed))
}

// KeySecretRotated replaces a key's secret. The previous secret stays valid until
// PreviousValidUntil (equal to the event time when there is no grace period).
type KeySecretRotated struct {
	SecretHash         string    `json:"secret_hash"`
	PreviousHash       string    `json:"previous_hash"`
	PreviousValidUntil time.Time `json:"previous_valid_until"`
}

// EventType implements Payload.
func (KeySecretRotated) EventType() Type { return TypeKeySecretRotated }

// Change implements Payload.
func (p KeySecretRotated) Change() Change {
	return Change{Before: fields{"secret_sha256": shortHash(p.PreviousHash)},
		After: fields{"secret_sha256": shortHash(p.SecretHash), "previous_valid_until": p.PreviousValidUntil}}
}

// Summary implements Payload.
func (p KeySecretRotated) Summary(at time.Time) string {
	if !p.PreviousValidUntil.After(at) {
		return "secret rotated; the old one stopped at once"
	}
	return "secret rotated; the old one works until " + summaryTime(p.PreviousValidUntil)
}

// KeyExpiryChanged sets or clears (nil) a key's expiry.
type KeyExpiryChanged struct {
	ExpiresAt *time.Time `json:"expires_at"`
	Previous  *time.Time `json:"previous"`
}

// EventType implements Payload.
func (KeyExpiryChanged) EventType() Type { return TypeKeyExpiryChanged }

// Change implements Payload.
func (p KeyExpiryChanged) Change() Change {
	return Change{Before: fields{"expires_at": p.Previous}, After: fields{"expires_at": p.ExpiresAt}}
}

// Summary implements Payload.
func (p KeyExpiryChanged) Summary(time.Time) string {
	return "expires " + summaryExpiry(p.ExpiresAt) + " (was " + summaryExpiry(p.Previous) + ")"
}

// KeyRevoked revokes a key for good; its history is kept.
type KeyRevoked struct {
	PreviousStatus string `json:"previous_status"`
}

// EventType implements Payload.
func (KeyRevoked) EventType() Type { return TypeKeyRevoked }

// Change implements Payload.
func (p KeyRevoked) Change() Change {
	return Change{Before: fields{"status": p.PreviousStatus}, After: fields{"status": StatusRevoked}}
}

// Summary implements Payload.
func (p KeyRevoked) Summary(time.Time) string { return "revoked (was " + p.PreviousStatus + ")" }

// IdentifierRegistered registers an app identifier or an additional API identifier.
// Platform is set for apps only.
type IdentifierRegistered struct {
	Kind     Kind   `json:"kind"`
	Name     string `json:"name"`
	Platform string `json:"platform,omitempty"`
}

// EventType implements Payload.
func (IdentifierRegistered) EventType() Type { return TypeIdentifierRegistered }

// Change implements Payload.
func (p IdentifierRegistered) Change() Change {
	after := fields{"kind": p.Kind, "name": p.Name}
	if p.Platform != "" {
		after["platform"] = p.Platform
	}
	return Change{After: after}
}

// Summary implements Payload.
func (p IdentifierRegistered) Summary(time.Time) string {
	s := "registered " + string(p.Kind) + " " + strconv.Quote(p.Name)
	if p.Platform != "" {
		s += " platform " + p.Platform
	}
	return s
}

// IdentifierRenamed changes an identifier's name.
type IdentifierRenamed struct {
	Name     string `json:"name"`
	Previous string `json:"previous"`
}

// EventType implements Payload.
func (IdentifierRenamed) EventType() Type { return TypeIdentifierRenamed }

// Change implements Payload.
func (p IdentifierRenamed) Change() Change {
	return Change{Before: fields{"name": p.Previous}, After: fields{"name": p.Name}}
}

// Summary implements Payload.
func (p IdentifierRenamed) Summary(time.Time) string {
	return "renamed " + strconv.Quote(p.Previous) + " -> " + strconv.Quote(p.Name)
}

// IdentifierRetired retires an identifier; its name becomes free again.
type IdentifierRetired struct {
	Kind Kind   `json:"kind"`
	Name string `json:"name"`
}

// EventType implements Payload.
func (IdentifierRetired) EventType() Type { return TypeIdentifierRetired }

// Change implements Payload.
func (IdentifierRetired) Change() Change {
	return Change{Before: fields{"status": StatusActive}, After: fields{"status": StatusRetired}}
}

// Summary implements Payload.
func (p IdentifierRetired) Summary(time.Time) string {
	return "retired " + string(p.Kind) + " " + strconv.Quote(p.Name)
}

// NameClaimed reserves an identifier name within its workspace and kind.
type NameClaimed struct {
	IdentifierID string `json:"identifier_id"`
	Kind         Kind   `json:"kind"`
	Name         string `json:"name"`
}

// EventType implements Payload.
func (NameClaimed) EventType() Type { return TypeNameClaimed }

// Change implements Payload.
func (p NameClaimed) Change() Change {
	return Change{After: fields{"holder": p.IdentifierID, "kind": p.Kind, "name": p.Name}}
}

// Summary implements Payload.
func (p NameClaimed) Summary(time.Time) string {
	return "name " + string(p.Kind) + " " + strconv.Quote(p.Name) + " claimed by " + p.IdentifierID
}

// NameReleased frees a claimed name.
type NameReleased struct {
	IdentifierID string `json:"identifier_id"`
	Kind         Kind   `json:"kind"`
	Name         string `json:"name"`
}

// EventType implements Payload.
func (NameReleased) EventType() Type { return TypeNameReleased }

// Change implements Payload.
func (p NameReleased) Change() Change {
	return Change{Before: fields{"holder": p.IdentifierID, "kind": p.Kind, "name": p.Name}}
}

// Summary implements Payload.
func (p NameReleased) Summary(time.Time) string {
	return "name " + string(p.Kind) + " " + strconv.Quote(p.Name) + " released by " + p.IdentifierID
}
