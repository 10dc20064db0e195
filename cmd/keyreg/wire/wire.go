// Package wire holds the JSON bodies of keyreg's HTTP API (/v1) as both sides see them:
// package httpapi answers with them and package client decodes them. Their struct tags
// (doc, enum) also describe them in the API's OpenAPI document.
//
// It imports only the standard library, so that a client of the API links nothing of
// keyreg's server side.
package wire

import (
	"encoding/json"
	"time"
)

// MaxPageSize is the most items a page of a list holds (keys, identifiers, workspaces,
// audit, history).
const MaxPageSize = 1000

// StartSequenceHeader is the response header of GET .../events that gives the sequence of
// the first event the stream can send (with neither after, since nor Last-Event-ID: the
// next one stored), so a client can resume from it after a dropped connection.
const StartSequenceHeader = "Keyreg-Start-Sequence"

// Read-your-writes across nodes. Every successful write answers with SequenceHeader: the
// stream sequence the change reached (for an idempotent replay or a change that was
// already made, that of the event that holds the state). A read sent with that sequence
// as MinSequenceHeader, or as the query parameter MinSequenceQuery, waits until the
// answering node's views have applied it (bounded: 503 with Retry-After beyond), so it
// sees the change on any node of the cluster.
const (
	SequenceHeader    = "Keyreg-Sequence"
	MinSequenceHeader = "Keyreg-Min-Sequence"
	MinSequenceQuery  = "min_seq"
)

// Workspace is a workspace as the API shows it.
type Workspace struct {
	ID        string    `json:"id" doc:"Slug [a-z0-9][a-z0-9-]{0,62}"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty" doc:"Key id of the creator"`
	Version   uint64    `json:"version" doc:"Stream sequence of the workspace's last event"`
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
	LastUsedAt               *time.Time `json:"last_used_at,omitempty" doc:"When a verify last found the key (any outcome), to the server's usage flush interval (--usage-flush-interval): the start of that interval. Kept outside the event stream; absent if never seen, and in as_of reads"`
	LastUsedIP               string     `json:"last_used_ip,omitempty" doc:"The end-user address (verify's ip) of that use"`
}

// KeyUsage is a key's use as verify saw it (GET .../keys/{id}/usage), kept outside the
// event stream and flushed once per interval by every node.
type KeyUsage struct {
	KeyID      string     `json:"key_id"`
	Workspace  string     `json:"workspace"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty" doc:"As in the key: when a verify last found it, to the flush interval"`
	LastUsedIP string     `json:"last_used_ip,omitempty" doc:"The end-user address of that use"`
	Days       []UsageDay `json:"days" doc:"One entry per UTC day, oldest first, today last"`
}

// UsageDay is one UTC day of a key's verifies.
type UsageDay struct {
	Date   string            `json:"date" doc:"The UTC day, YYYY-MM-DD"`
	Counts map[string]uint64 `json:"counts" doc:"Verifies of the key that day by outcome (VALID, REVOKED, EXPIRED, IP_NOT_ALLOWED, PERMISSION_DENIED), every outcome listed"`
	Total  uint64            `json:"total" doc:"The sum of counts"`
}

// KeyWithSecret is a key with its new secret, shown once: at creation and rotation.
type KeyWithSecret struct {
	Key    Key    `json:"key"`
	Secret string `json:"secret,omitempty" doc:"The key's secret (kr_...), shown only in this response. Absent when an Idempotency-Key retry is answered from the log (after a restart, or on another node than the first try; header Idempotent-Replayed: true): the secret is never stored, so it cannot be shown again."`
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

// HistoryEntry is one event of a history: the CloudEvent as stored, with its stream
// sequence.
type HistoryEntry struct {
	Sequence uint64          `json:"sequence"`
	Event    json.RawMessage `json:"event" doc:"The CloudEvent 1.0 (structured JSON) as stored in the log"`
}

// Permission is an entry of the permission catalogue as the API shows it. Workspace is
// set for a workspace's own permissions.
type Permission struct {
	Name        string `json:"name" doc:"The permission, e.g. users.track"`
	Description string `json:"description" doc:"What it allows"`
	Group       string `json:"group" doc:"The group it is listed under; keyreg for the registry's own, workspace for a workspace's own"`
	Workspace   string `json:"workspace,omitempty" doc:"The workspace that defined it; absent for built-in permissions"`
}

// PermissionList is the catalogue: built-in permissions, then a workspace's own.
type PermissionList struct {
	Permissions []Permission `json:"permissions"`
}

// Subscriber is a service's NATS credentials, without the password.
type Subscriber struct {
	Name         string    `json:"name"`
	NATSUser     string    `json:"nats_user" doc:"The NATS user name (the subscriber's name)"`
	InboxPrefix  string    `json:"inbox_prefix" doc:"Connect with this inbox prefix (nats.CustomInboxPrefix, nats --inbox-prefix): the subscriber may subscribe to its own inboxes only"`
	MaxConsumers int       `json:"max_consumers"`
	Consumers    []string  `json:"consumers" doc:"The only consumer names the subscriber may use on the KEYREG stream"`
	AddedAt      time.Time `json:"added_at"`
	AddedBy      string    `json:"added_by"`
	Version      uint64    `json:"version"`
}

// NewSubscriber is a subscriber just added, with its password: shown this once.
type NewSubscriber struct {
	Subscriber
	Password string `json:"password" doc:"The NATS password, shown this once; keyreg keeps only its bcrypt hash"`
	NATSURL  string `json:"nats_url" doc:"Where to connect"`
}

// VerifyRequest is the body of a verify request.
type VerifyRequest struct {
	Key        string `json:"key" doc:"The presented secret (kr_...)"`
	IP         string `json:"ip" doc:"The end user's address: the address the request to verify came from"`
	Permission string `json:"permission,omitempty" doc:"The permission the request needs; empty: none checked"`
}

// VerifyResponse is the answer to a verify request.
type VerifyResponse struct {
	Valid       bool     `json:"valid"`
	Code        string   `json:"code" enum:"VALID,MALFORMED,NOT_FOUND,REVOKED,EXPIRED,IP_NOT_ALLOWED,PERMISSION_DENIED"`
	KeyID       string   `json:"key_id,omitempty"`
	Workspace   string   `json:"workspace,omitempty"`
	Permissions []string `json:"permissions,omitempty" doc:"The key's permissions, when valid"`
	AppliedSeq  uint64   `json:"applied_seq" doc:"The stream sequence the views had applied when they answered: every change up to it is in the answer (a key's version is the sequence of its last change)"`
}

// Problem is an error answer as a client reads it: an RFC 9457 problem details object
// (application/problem+json) with a stable machine-readable Code, and for invalid input
// the Field and the bad Value. The server builds its answers with httpapi.Problem, which
// writes these same fields.
type Problem struct {
	Type    string        `json:"type,omitempty"`
	Title   string        `json:"title"`
	Status  int           `json:"status"`
	Detail  string        `json:"detail,omitempty"`
	Code    string        `json:"code"`
	Field   string        `json:"field,omitempty"`
	Value   string        `json:"value,omitempty"`
	Errors  []ErrorDetail `json:"errors,omitempty"`
	RetryIn int           `json:"retry_after_seconds,omitempty"`
	// Holder is, for name_taken, the id of the active identifier that has the name.
	Holder string `json:"holder,omitempty"`
	// CurrentVersion is, for precondition_failed, the resource's version now (also sent
	// as the ETag header).
	CurrentVersion uint64 `json:"current_version,omitempty"`
	// Limit is, for quota_exceeded, the most the workspace may hold.
	Limit int `json:"limit,omitempty"`
	// AppliedSeq is, for a read whose min_seq the views had not applied in time, the
	// sequence they had applied.
	AppliedSeq uint64 `json:"applied_seq,omitempty"`
}

// ErrorDetail is one validation error of a Problem.
type ErrorDetail struct {
	Message  string `json:"message,omitempty"`
	Location string `json:"location,omitempty"`
	Value    any    `json:"value,omitempty"`
}
