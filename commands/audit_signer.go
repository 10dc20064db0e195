package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keyreg/keyreg/events"
)

// ErrSignerRetired means the audit signer's key was retired: it is never added again, and
// signs nothing the log vouches for (a node must make a new key).
var ErrSignerRetired = errors.New("commands: audit signer retired")

// AddSigner registers a node's audit verifier key (see events.SignerAdded). It is what
// every node does on start, before it may seal.
type AddSigner struct {
	VerifierKey string // golang.org/x/mod/sumdb/note verifier key
	Node        string // the node holding the private key, for people: 1 to 200 bytes
	Meta        events.Meta
}

// AddSigner registers cmd.VerifierKey, once: the event id is
// events.SignerAddedEventID(key), so a key added before (by any node, on any start) is
// found and answered as the first time (Result.Duplicate) and nothing is appended. The
// Result's ID is events.SignerID(key); its Version the registration's stream sequence.
//
// Errors: *events.ValidationError (fields verifier_key, node); ErrSignerRetired when the
// key was retired.
func (h *Handler) AddSigner(ctx context.Context, cmd AddSigner) (Result, error) {
	vkey, err := events.ParseVerifierKey("verifier_key", strings.TrimSpace(cmd.VerifierKey))
	if err != nil {
		return Result{}, fmt.Errorf("add audit signer: %w", err)
	}
	node := strings.TrimSpace(cmd.Node)
	if node == "" || len(node) > 200 {
		return Result{}, fmt.Errorf("add audit signer: %w", events.Invalid("node", node, "must be 1 to 200 bytes"))
	}
	id := events.SignerID(vkey)
	st, err := LogState{Log: h.Log}.Signer(ctx, vkey)
	if err != nil {
		return Result{}, fmt.Errorf("add audit signer: %w", err)
	}
	if st.RetiredSeq != 0 {
		return Result{}, fmt.Errorf("add audit signer %s: retired at sequence %d: %w", vkey, st.RetiredSeq, ErrSignerRetired)
	}
	home := target{events.SystemWorkspace, events.AggSigner, id}
	res, err := h.execute(ctx, home, events.SignerAddedEventID(vkey), cmd.Meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
		st, err := LogState{Log: h.Log}.Signer(ctx, vkey)
		switch {
		case err != nil:
			return nil, Result{}, err
		case st.RetiredSeq != 0:
			return nil, Result{}, fmt.Errorf("%s retired at sequence %d: %w", vkey, st.RetiredSeq, ErrSignerRetired)
		case st.Exists():
			return nil, unchanged(id, st.Version), nil
		}
		return []change{{ws: events.SystemWorkspace, agg: events.AggSigner, id: id, expect: st.Version, prevHash: st.LastHash,
			payload: events.SignerAdded{VerifierKey: vkey, Node: node}}}, Result{ID: id}, nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("add audit signer: %w", err)
	}
	return res, nil
}

// RetireSigner withdraws an audit verifier key (see events.SignerRetired).
type RetireSigner struct {
	VerifierKey string
	Meta        events.Meta
}

// RetireSigner retires cmd.VerifierKey: checkpoints of trees holding the retirement are no
// longer vouched for, so its node's sealer stops sealing. Retiring a retired key appends
// nothing. The Result's ID is events.SignerID(key).
//
// Errors: *events.ValidationError (field verifier_key); an error wrapping
// events.ErrNotFound when the key was never added.
func (h *Handler) RetireSigner(ctx context.Context, cmd RetireSigner) (Result, error) {
	vkey, err := events.ParseVerifierKey("verifier_key", strings.TrimSpace(cmd.VerifierKey))
	if err != nil {
		return Result{}, fmt.Errorf("retire audit signer: %w", err)
	}
	id := events.SignerID(vkey)
	home := target{events.SystemWorkspace, events.AggSigner, id}
	res, err := h.execute(ctx, home, "", cmd.Meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
		st, err := LogState{Log: h.Log}.Signer(ctx, vkey)
		switch {
		case err != nil:
			return nil, Result{}, err
		case !st.Exists():
			return nil, Result{}, fmt.Errorf("audit signer %s: %w", vkey, events.ErrNotFound)
		case st.RetiredSeq != 0:
			return nil, unchanged(id, st.Version), nil
		}
		return []change{{ws: events.SystemWorkspace, agg: events.AggSigner, id: id, expect: st.Version, prevHash: st.LastHash,
			payload: events.SignerRetired{VerifierKey: vkey}}}, Result{ID: id}, nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("retire audit signer: %w", err)
	}
	return res, nil
}

// Signer folds the events of the audit signer of verifier key vkey from the log (its zero
// state when never added).
func (s LogState) Signer(ctx context.Context, vkey string) (events.SignerState, error) {
	var st events.SignerState
	err := s.fold(ctx, events.SystemWorkspace, events.AggSigner, events.SignerID(vkey), st.Apply)
	return st, err
}

// Signers folds every audit signer's events from the log, in the order of their
// registration: the key set the log vouches for, retired keys included.
func (s LogState) Signers(ctx context.Context) ([]events.SignerState, error) {
	var out []events.SignerState
	at := map[string]int{}
	err := s.Log.Read(ctx, events.SignersFilter(), 1, func(r events.Record) error {
		d, err := events.DecodeRecord(r)
		if err != nil {
			return err
		}
		i, ok := at[d.Event.Subject]
		if !ok {
			i = len(out)
			at[d.Event.Subject] = i
			out = append(out, events.SignerState{})
		}
		return out[i].Apply(r.Seq, r.Data, d.Event, d.Payload)
	})
	if err != nil {
		return nil, fmt.Errorf("read audit signers: %w", err)
	}
	return out, nil
}
