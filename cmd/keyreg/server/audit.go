package server

import (
	"context"
	"fmt"
	"os"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
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
	n.audit = &auditNode{sealer: sealer.New(cfg, n.Log, views, signer, lease, n.cfg.Logger), vkey: vkey}
	return nil
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
	return httpapi.AuditDeps{Exporter: x, VerifierKey: n.audit.vkey}
}

// Sealer returns the node's sealer (nil when read-only).
func (n *Node) Sealer() *sealer.Sealer {
	if n.audit == nil {
		return nil
	}
	return n.audit.sealer
}
