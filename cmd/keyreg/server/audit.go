package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/commands/sealer"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/replay"
)

// auditNode is a node's sealer and verifier key.
type auditNode struct {
	sealer     *sealer.Sealer
	vkey       string
	registered bool // the key is registered (or retired): set by Open, then by runSealer alone
}

// openAudit loads (or makes) the signing key and the sealer lease, and makes the sealer.
func (n *Node) openAudit(ctx context.Context) error {
	signer, vkey, err := sealer.LoadOrCreateSigningKey(n.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	host, _ := os.Hostname()
	var lease *natslog.KVLease
	err = retryStart(ctx, n.cfg, "the sealer's lease bucket", func(ctx context.Context) (err error) {
		lease, err = natslog.OpenKVLease(ctx, n.stream.Log.JetStream(), sealer.LeaseKey, host+"/"+events.NewID(), sealer.DefaultLeaseTTL, n.cfg.replicas())
		return err
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	views := func() (sealer.Tree, sealer.Waiter) {
		v := n.current.Load()
		if v.projector == nil {
			return v.store, nil
		}
		return v.store, v.projector
	}
	cfg := sealer.Config{EveryEvents: n.cfg.SealEveryEvents, Interval: n.cfg.SealInterval}
	key := sealer.Key{Signer: signer, VerifierKey: vkey}
	n.audit = &auditNode{sealer: sealer.New(cfg, n.Log, views, key, lease, n.cfg.Logger), vkey: vkey}
	return nil
}

// registerAuditKey records the node's verifier key in the log (once: the registration is
// idempotent), so that the published key set holds it before this node seals. A retired
// key is logged, not fatal: the node serves, and seals nothing until given a new key. A
// log that cannot take the write now (a stream without quorum) is not fatal either: the
// sealer's actor registers the key before it seals (runSealer), and seals nothing until.
func (n *Node) registerAuditKey(ctx context.Context) {
	if n.audit == nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n.audit.registered = n.tryRegister(rctx)
}

// tryRegister registers the node's key once, logging the outcome, and reports whether it
// is done with it (registered, or retired).
func (n *Node) tryRegister(ctx context.Context) bool {
	host, _ := os.Hostname()
	st, err := n.audit.sealer.Register(ctx, host+" "+n.ln.Addr().String())
	switch {
	case errors.Is(err, sealer.ErrKeyRetired):
		n.cfg.Logger.Warn("this node's audit key is retired: it seals nothing; to give it a new key, stop it, remove "+
			filepath.Join(n.cfg.DataDir, "audit", "signing.key")+" and start it again", "verifier_key", n.audit.vkey)
		return true
	case err != nil:
		n.cfg.Logger.Warn("audit key not registered yet: this node seals nothing until it is; retrying", "err", err)
		return false
	}
	n.cfg.Logger.Info("audit signer registered", "verifier_key", st.VerifierKey, "node", st.Node, "seq", st.AddedSeq)
	return true
}

// runSealer registers the node's key if Open could not (retrying every few seconds), then
// runs the sealer until ctx is done.
func (n *Node) runSealer(ctx context.Context) error {
	for !n.audit.registered {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(3 * time.Second):
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		n.audit.registered = n.tryRegister(rctx)
		cancel()
	}
	return n.audit.sealer.Run(ctx)
}

// auditSigners serves the API's audit signers from the log.
type auditSigners struct {
	log  events.Reader
	cmds *commands.Handler
}

func (a auditSigners) Signers(ctx context.Context) ([]events.SignerState, error) {
	return commands.LogState{Log: a.log}.Signers(ctx)
}

func (a auditSigners) RetireSigner(ctx context.Context, c commands.RetireSigner) (commands.Result, error) {
	return a.cmds.RetireSigner(ctx, c)
}

// auditDeps are the API's audit dependencies: exports of store's views sealed by the
// sealer, or for a read-only node exports up to the latest checkpoint and just the
// verifier key of its data dir, if any.
func (n *Node) auditDeps(store *projections.Store) httpapi.AuditDeps {
	x := replay.Exporter{Log: n.js, Store: store}
	if n.audit == nil {
		var vkey string
		if n.cfg.DataDir != "" {
			vkey, _ = sealer.ReadVerifierKey(n.cfg.DataDir)
		}
		return httpapi.AuditDeps{Exporter: x, VerifierKey: vkey, Checkpoints: store}
	}
	x.Seal, x.Attest = n.audit.sealer.Seal, n.audit.sealer.Attest
	return httpapi.AuditDeps{Exporter: x, VerifierKey: n.audit.vkey, Signers: auditSigners{log: n.js, cmds: n.Commands}, Checkpoints: store}
}

// Sealer returns the node's sealer (nil when read-only).
func (n *Node) Sealer() *sealer.Sealer {
	if n.audit == nil {
		return nil
	}
	return n.audit.sealer
}
