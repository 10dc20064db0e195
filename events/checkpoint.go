package events

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// AggCheckpoint is the aggregate of the signed checkpoints of the audit tree. It has one
// instance, CheckpointID of workspace SystemWorkspace, so its events are on the subject
// "keyreg.system.checkpoint.tree.sealed" and the expected-last-sequence check on it lets
// only one of two concurrent sealers append a round.
const (
	AggCheckpoint Aggregate = "checkpoint"
	CheckpointID            = "tree"
)

// TypeCheckpointSealed records a signed checkpoint of the audit tree.
const TypeCheckpointSealed Type = "keyreg.checkpoint.sealed.v1"

// CheckpointOrigin is the first line of the text of every checkpoint note: it names the
// log the tree is over (keyreg's stream KEYREG).
const CheckpointOrigin = "keyreg " + StreamName

// CheckpointSealed is a signed checkpoint of the audit tree: an RFC 6962 Merkle tree whose
// leaf i is tlog.RecordHash of the stored bytes of the stream message with sequence i+1.
// TreeSize leaves are covered; RootHash is the tree's root, base64; Note is the
// golang.org/x/mod/sumdb/note text (FormatCheckpoint of the size and root) with its
// ed25519 signature lines.
type CheckpointSealed struct {
	TreeSize uint64 `json:"tree_size"`
	RootHash string `json:"root_hash"`
	Note     string `json:"note"`
}

// EventType implements Payload.
func (CheckpointSealed) EventType() Type { return TypeCheckpointSealed }

// Change implements Payload: the tree size and root (the note repeats them).
func (p CheckpointSealed) Change() Change {
	return Change{After: fields{"tree_size": p.TreeSize, "root_hash": p.RootHash}}
}

// Summary implements Payload.
func (p CheckpointSealed) Summary(time.Time) string {
	return "sealed a checkpoint of " + strconv.FormatUint(p.TreeSize, 10) + " events, root " + p.RootHash
}

// CheckpointState is the latest checkpoint sealed: its tree size, root, signed note, when
// it was sealed, and the stream sequence (Version) and hash (LastHash) of its event.
type CheckpointState struct {
	TreeSize uint64    `json:"tree_size"`
	RootHash string    `json:"root_hash"`
	Note     string    `json:"note"`
	SealedAt time.Time `json:"sealed_at"`
	Version  uint64    `json:"version"`
	LastHash string    `json:"last_hash"`
}

// Exists reports whether a checkpoint has been sealed.
func (s *CheckpointState) Exists() bool { return s.Version != 0 }

// Apply folds one checkpoint event into the state.
func (s *CheckpointState) Apply(seq uint64, data []byte, e Event, p Payload) error {
	c, ok := p.(*CheckpointSealed)
	if !ok {
		return fmt.Errorf("events: checkpoint: cannot apply %s", e.Type)
	}
	*s = CheckpointState{TreeSize: c.TreeSize, RootHash: c.RootHash, Note: c.Note, SealedAt: e.Time, Version: seq, LastHash: Hash(data)}
	return nil
}

// FormatCheckpoint returns the text a checkpoint note signs:
//
//	keyreg KEYREG
//	<tree size, decimal>
//	<root hash, base64>
func FormatCheckpoint(size uint64, root tlog.Hash) []byte {
	return fmt.Appendf(nil, "%s\n%d\n%s\n", CheckpointOrigin, size, base64.StdEncoding.EncodeToString(root[:]))
}

// ErrBadCheckpoint means a checkpoint text is not in the FormatCheckpoint form.
var ErrBadCheckpoint = errors.New("events: malformed checkpoint")

// ParseCheckpoint parses the text of a checkpoint note (without its signatures), as
// FormatCheckpoint writes it. Lines after the third are ignored, for later extensions.
// It returns an error wrapping ErrBadCheckpoint.
func ParseCheckpoint(text []byte) (size uint64, root tlog.Hash, err error) {
	lines := strings.SplitN(string(text), "\n", 4)
	if len(lines) < 4 || lines[0] != CheckpointOrigin {
		return 0, tlog.Hash{}, fmt.Errorf("%w: want %q then the tree size and root hash, one a line", ErrBadCheckpoint, CheckpointOrigin)
	}
	size, err = strconv.ParseUint(lines[1], 10, 64)
	if err != nil || lines[1] != strconv.FormatUint(size, 10) {
		return 0, tlog.Hash{}, fmt.Errorf("%w: tree size %q", ErrBadCheckpoint, lines[1])
	}
	if root, err = ParseTreeHash(lines[2]); err != nil {
		return 0, tlog.Hash{}, err
	}
	return size, root, nil
}

// ParseTreeHash decodes a base64 tree hash, as in checkpoints and inclusion proofs. It
// returns an error wrapping ErrBadCheckpoint.
func ParseTreeHash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != len(h) || base64.StdEncoding.EncodeToString(b) != s {
		return h, fmt.Errorf("%w: hash %q is not %d bytes of base64", ErrBadCheckpoint, s, len(h))
	}
	copy(h[:], b)
	return h, nil
}

// CheckpointSubject is the subject of every checkpoint event.
func CheckpointSubject() string {
	return Subject(SystemWorkspace, AggCheckpoint, CheckpointID, TypeCheckpointSealed)
}
