package events

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
	"golang.org/x/mod/sumdb/note"
)

// AggSigner is the aggregate of an audit signer: a node's ed25519 key that may sign the
// audit checkpoints and export statements. Its id is SignerID of the key's verifier key,
// in workspace SystemWorkspace, so its events are on
// "keyreg.system.signer.<id>.added|retired". The signers' events are the cluster's one
// audit identity: the published key set is the verifier keys added and not retired.
const AggSigner Aggregate = "signer"

// Signer event types, version 1.
const (
	TypeSignerAdded   Type = "keyreg.signer.added.v1"
	TypeSignerRetired Type = "keyreg.signer.retired.v1"
)

// SignerID returns the id of the signer aggregate of a verifier key: the first 16 bytes of
// its SHA-256, in hex. It is a subject token whatever the key.
func SignerID(verifierKey string) string {
	h := sha256.Sum256([]byte(verifierKey))
	return hex.EncodeToString(h[:16])
}

// SignerAddedEventID returns the event id of a verifier key's registration: a ULID made
// of the key's hash, the same on every node and every start, so registering a key again
// finds the earlier event instead of appending another.
func SignerAddedEventID(verifierKey string) string {
	h := sha256.Sum256([]byte("keyreg signer added\n" + verifierKey))
	var id ulid.ULID
	copy(id[:], h[:16])
	return id.String()
}

// ParseVerifierKey checks a verifier key in golang.org/x/mod/sumdb/note format
// ("<name>+<hash>+<base64 key>"), as `keyreg audit pubkey` prints it.
func ParseVerifierKey(field, s string) (string, error) {
	if _, err := note.NewVerifier(s); err != nil {
		return "", Invalid(field, s, "must be a note verifier key (name+hash+key, as keyreg audit pubkey prints it): %v", err)
	}
	return s, nil
}

// SignerAdded registers a node's audit verifier key: from then on the node may sign
// checkpoints of trees that hold this event. Node names the node that holds the private
// key (which never enters the log).
type SignerAdded struct {
	VerifierKey string `json:"verifier_key"`
	Node        string `json:"node"`
}

// SignerRetired withdraws a verifier key: a checkpoint signed with it is vouched for only
// if its tree does not hold this event. A retired key is never added again.
type SignerRetired struct {
	VerifierKey string `json:"verifier_key"`
}

// EventType implements Payload.
func (SignerAdded) EventType() Type { return TypeSignerAdded }

// Change implements Payload.
func (p SignerAdded) Change() Change {
	return Change{After: fields{"verifier_key": p.VerifierKey, "node": p.Node, "active": true}}
}

// Summary implements Payload.
func (p SignerAdded) Summary(time.Time) string {
	return "added audit signer " + p.VerifierKey + " of node " + p.Node
}

// EventType implements Payload.
func (SignerRetired) EventType() Type { return TypeSignerRetired }

// Change implements Payload.
func (p SignerRetired) Change() Change {
	return Change{Before: fields{"verifier_key": p.VerifierKey, "active": true}, After: fields{"verifier_key": p.VerifierKey, "active": false}}
}

// Summary implements Payload.
func (p SignerRetired) Summary(time.Time) string { return "retired audit signer " + p.VerifierKey }

// SignerState is an audit signer's state, folded from its events: its key, node, the
// stream sequences of its registration (AddedSeq) and retirement (RetiredSeq, 0 while
// active).
type SignerState struct {
	ID          string    `json:"id"` // SignerID(VerifierKey)
	VerifierKey string    `json:"verifier_key"`
	Node        string    `json:"node"`
	AddedAt     time.Time `json:"added_at"`
	AddedBy     string    `json:"added_by,omitempty"`
	AddedSeq    uint64    `json:"added_seq"`
	RetiredAt   time.Time `json:"retired_at,omitzero"`
	RetiredBy   string    `json:"retired_by,omitempty"`
	RetiredSeq  uint64    `json:"retired_seq,omitempty"`
	Version     uint64    `json:"version"`
	LastHash    string    `json:"-"`
}

// Exists reports whether the key was ever added.
func (s *SignerState) Exists() bool { return s.Version != 0 }

// Active reports whether the key is added and not retired.
func (s *SignerState) Active() bool { return s.AddedSeq != 0 && s.RetiredSeq == 0 }

// Vouches reports whether the log vouches for a checkpoint signed with this key of the
// tree of the first size stream messages: the tree holds the key's registration and not
// its retirement.
func (s *SignerState) Vouches(size uint64) bool {
	return s.AddedSeq != 0 && s.AddedSeq <= size && (s.RetiredSeq == 0 || size < s.RetiredSeq)
}

// Apply folds one event of this signer into the state.
func (s *SignerState) Apply(seq uint64, data []byte, e Event, p Payload) error {
	switch p := p.(type) {
	case *SignerAdded:
		*s = SignerState{ID: SignerID(p.VerifierKey), VerifierKey: p.VerifierKey, Node: p.Node, AddedAt: e.Time, AddedBy: e.Actor, AddedSeq: seq}
	case *SignerRetired:
		s.RetiredAt, s.RetiredBy, s.RetiredSeq = e.Time, e.Actor, seq
	default:
		return fmt.Errorf("events: signer %s: cannot apply %s", s.VerifierKey, e.Type)
	}
	s.Version, s.LastHash = seq, Hash(data)
	return nil
}

// SignersFilter is the subject filter of every signer event.
func SignersFilter() string {
	return SubjectPrefix + "." + string(SystemWorkspace) + "." + string(AggSigner) + ".*.*"
}
