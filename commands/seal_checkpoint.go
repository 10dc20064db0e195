package commands

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/keyreg/keyreg/events"
)

// SealCheckpoint appends a signed checkpoint of the audit tree (see
// events.CheckpointSealed). The sealer computes the root of the first TreeSize leaves and
// signs it; the command checks the note says what the fields say, and appends the event
// only if the checkpoint aggregate has not moved since it was read.
type SealCheckpoint struct {
	TreeSize uint64
	RootHash string // base64 of the tree's root hash
	// Note is the signed note: events.FormatCheckpoint(TreeSize, root), a blank line and
	// its signature lines.
	Note string
	Meta events.Meta
}

// CheckpointReader reads the latest sealed checkpoint: its zero state, not an error, when
// none was sealed yet. The views serve it (projections.Store.SealedCheckpoint); a stale
// read is safe, as for every other state.
type CheckpointReader interface {
	SealedCheckpoint(ctx context.Context) (events.CheckpointState, error)
}

// SealedCheckpoint implements CheckpointReader by folding every checkpoint event of the
// log: correct, and slow once there are many checkpoints.
func (s LogState) SealedCheckpoint(ctx context.Context) (events.CheckpointState, error) {
	var st events.CheckpointState
	err := s.fold(ctx, events.SystemWorkspace, events.AggCheckpoint, events.CheckpointID, st.Apply)
	return st, err
}

type sealCheckpoint struct {
	size uint64
	root string
	note string
}

func (c SealCheckpoint) validate() (sealCheckpoint, error) {
	if c.TreeSize == 0 {
		return sealCheckpoint{}, events.Invalid("tree_size", "0", "a checkpoint covers at least one event")
	}
	root, err := events.ParseTreeHash(c.RootHash)
	if err != nil {
		return sealCheckpoint{}, events.Invalid("root_hash", c.RootHash, "must be a base64 SHA-256 hash")
	}
	i := strings.LastIndex(c.Note, "\n\n")
	if i < 0 {
		return sealCheckpoint{}, events.Invalid("note", truncateNote(c.Note), "must be a signed note: text, a blank line, signatures")
	}
	size, noteRoot, err := events.ParseCheckpoint([]byte(c.Note[:i+1]))
	if err != nil {
		return sealCheckpoint{}, events.Invalid("note", truncateNote(c.Note), "%v", err)
	}
	if size != c.TreeSize || noteRoot != root {
		return sealCheckpoint{}, events.Invalid("note", truncateNote(c.Note), "the note does not sign this tree size and root hash")
	}
	return sealCheckpoint{size: c.TreeSize, root: c.RootHash, note: c.Note}, nil
}

func truncateNote(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// decide appends the checkpoint unless the latest one already covers as many leaves.
func (c sealCheckpoint) decide(st events.CheckpointState) []change {
	if st.TreeSize >= c.size {
		return nil
	}
	return []change{{ws: events.SystemWorkspace, agg: events.AggCheckpoint, id: events.CheckpointID,
		payload: events.CheckpointSealed{TreeSize: c.size, RootHash: c.root, Note: c.note},
		expect:  st.Version, prevHash: st.LastHash}}
}

// SealCheckpoint appends a checkpoint, expecting the checkpoint aggregate to be at the
// version read, so that of two sealers that read the same state only one appends; the
// other re-reads, finds a checkpoint at least as large and appends nothing. When the latest
// checkpoint already covers cmd.TreeSize leaves or more, it appends nothing and the
// Result's Version and Seq are that checkpoint's sequence. It reads the state through
// h.Checkpoints, or the log when that is nil.
//
// Errors: *events.ValidationError (fields tree_size, root_hash, note); an error wrapping
// events.ErrConflict after too many concurrent changes.
func (h *Handler) SealCheckpoint(ctx context.Context, cmd SealCheckpoint) (Result, error) {
	c, err := cmd.validate()
	if err != nil {
		return Result{}, fmt.Errorf("seal checkpoint: %w", err)
	}
	home := target{events.SystemWorkspace, events.AggCheckpoint, events.CheckpointID}
	res, err := h.execute(ctx, home, "", cmd.Meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
		st, err := h.stateOf(ctx).SealedCheckpoint(ctx)
		if err != nil {
			return nil, Result{}, err
		}
		return c.decide(st), unchanged(events.CheckpointID, st.Version), nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("seal checkpoint: %w", err)
	}
	return res, nil
}
