package events

import (
	"strconv"
	"time"
)

// Notices about keys: events that record what happened to a key without changing what it
// allows (a leak does, through the revocation appended with it). They are events of the
// key, so they are in its history and audit, on its NATS subjects, event streams and
// `keyreg watch`, and they advance its version like any other of its events.
const (
	TypeKeyExpiring Type = "keyreg.key.expiring.v1"
	TypeKeyExpired  Type = "keyreg.key.expired.v1"
	TypeKeyLeaked   Type = "keyreg.key.leaked.v1"
	// TypeLeakResponseSet sets what a leak report does to the workspace's keys.
	TypeLeakResponseSet Type = "keyreg.workspace.leak_response_set.v1"
)

// KeyExpiring warns that a key comes within Threshold of its expiry ExpiresAt. Threshold
// is the warning threshold as configured ("7d", "36h"), ThresholdSeconds the same in
// seconds.
type KeyExpiring struct {
	ExpiresAt        time.Time `json:"expires_at"`
	Threshold        string    `json:"threshold"`
	ThresholdSeconds int64     `json:"threshold_seconds"`
}

// EventType implements Payload.
func (KeyExpiring) EventType() Type { return TypeKeyExpiring }

// Change implements Payload.
func (p KeyExpiring) Change() Change {
	return Change{After: fields{"expires_at": p.ExpiresAt, "threshold": p.Threshold}}
}

// Summary implements Payload.
func (p KeyExpiring) Summary(time.Time) string {
	return "expires within " + p.Threshold + ", at " + summaryTime(p.ExpiresAt)
}

// KeyExpired records that a key passed its expiry ExpiresAt. The key's status was expired
// from that moment on (KeyState.StatusAt); the event says so in the log.
type KeyExpired struct {
	ExpiresAt time.Time `json:"expires_at"`
}

// EventType implements Payload.
func (KeyExpired) EventType() Type { return TypeKeyExpired }

// Change implements Payload.
func (p KeyExpired) Change() Change {
	return Change{Before: fields{"status": StatusActive}, After: fields{"status": StatusExpired, "expires_at": p.ExpiresAt}}
}

// Summary implements Payload.
func (p KeyExpired) Summary(time.Time) string { return "expired at " + summaryTime(p.ExpiresAt) }

// KeyLeaked records a secret scanner's report that the key's secret (SecretHash: the
// SHA-256 of the secret found, which may be the previous secret during a rotation's grace)
// was published at URL. Reporter names the scanner's signing key; Source and TokenType are
// the scanner's words. Unless the workspace reports only (LeakResponseSet), a
// keyreg.key.revoked.v1 follows it in the same atomic append.
type KeyLeaked struct {
	SecretHash string `json:"secret_hash"`
	TokenType  string `json:"token_type,omitempty"`
	URL        string `json:"url"`
	Source     string `json:"source,omitempty"`
	Reporter   string `json:"reporter"`
	Revoked    bool   `json:"revoked"`
}

// EventType implements Payload.
func (KeyLeaked) EventType() Type { return TypeKeyLeaked }

// Change implements Payload.
func (p KeyLeaked) Change() Change {
	return Change{After: fields{"secret_sha256": shortHash(p.SecretHash), "url": p.URL, "source": p.Source,
		"reporter": p.Reporter, "revoked": p.Revoked}}
}

// Summary implements Payload.
func (p KeyLeaked) Summary(time.Time) string {
	s := "leaked at " + strconv.Quote(p.URL) + " (reported by " + p.Reporter + ")"
	if !p.Revoked {
		s += "; not revoked: the workspace reports only"
	}
	return s
}

// Leak responses of a workspace: what a leak report of one of its keys does.
const (
	LeakRevoke     = "revoke"      // append keyreg.key.leaked.v1 and revoke the key (the default)
	LeakReportOnly = "report_only" // append keyreg.key.leaked.v1 only
)

// LeakResponseSet sets a workspace's leak response: LeakRevoke or LeakReportOnly.
type LeakResponseSet struct {
	Mode     string `json:"mode"`
	Previous string `json:"previous"`
}

// EventType implements Payload.
func (LeakResponseSet) EventType() Type { return TypeLeakResponseSet }

// Change implements Payload.
func (p LeakResponseSet) Change() Change {
	return Change{Before: fields{"leak_response": p.Previous}, After: fields{"leak_response": p.Mode}}
}

// Summary implements Payload.
func (p LeakResponseSet) Summary(time.Time) string {
	return "leak response " + p.Mode + " (was " + p.Previous + ")"
}
