package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
	sealer *sealer.Sealer
	vkey   string
}

// openAudit loads (or makes) the signing key and the sealer lease, and makes the sealer.
func (n *Node) openAudit(ctx context.Context) error {
	signer, vkey, err := sealer.LoadOrCreateSigningKey(n.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	replicas := 1
	if n.cfg.NATSURL != "" {
		replicas = max(n.cfg.Replicas, 1)
	}
	host, _ := os.Hostname()
	lease, err := natslog.OpenKVLease(ctx, n.stream.Log.JetStream(), sealer.LeaseKey, host+"/"+events.NewID(), sealer.DefaultLeaseTTL, replicas)
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
// key is logged, not fatal: the node serves, and seals nothing until given a new key.
func (n *Node) registerAuditKey(ctx context.Context) error {
	if n.audit == nil {
		return nil
	}
	host, _ := os.Hostname()
	node := host + " " + n.ln.Addr().String()
	st, err := n.audit.sealer.Register(ctx, node)
	if errors.Is(err, sealer.ErrKeyRetired) {
		n.cfg.Logger.Warn("this node's audit key is retired: it seals nothing; to give it a new key, stop it, remove "+
			filepath.Join(n.cfg.DataDir, "audit", "signing.key")+" and start it again", "verifier_key", n.audit.vkey)
		return nil
	}
	if err != nil {
		return fmt.Errorf("serve: audit key: %w", err)
	}
	n.cfg.Logger.Info("audit signer registered", "verifier_key", st.VerifierKey, "node", st.Node, "seq", st.AddedSeq)
	return nil
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
		return httpapi.AuditDeps{Exporter: x, VerifierKey: vkey}
	}
	x.Seal, x.Attest = n.audit.sealer.Seal, n.audit.sealer.Attest
	return httpapi.AuditDeps{Exporter: x, VerifierKey: n.audit.vkey, Signers: auditSigners{log: n.js, cmds: n.Commands}}
}

// Sealer returns the node's sealer (nil when read-only).
func (n *Node) Sealer() *sealer.Sealer {
	if n.audit == nil {
		return nil
	}
	return n.audit.sealer
}
