package server

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/projections/verifier"
)

// DefaultVerifySnapshotInterval is how often a node writes a snapshot of its verify index
// for embedded verifiers when its views moved (Config.VerifySnapshotInterval 0).
const DefaultVerifySnapshotInterval = 5 * time.Minute

// snapshotter keeps the snapshot of the verify index that embedded verifiers start from
// (verifier.WriteSnapshot) current: once the views have caught up with the stream at
// start, then every interval, and on shutdown, each time only if the views moved since
// the latest snapshot.
type snapshotter struct {
	n        *Node
	js       jetstream.JetStream
	every    time.Duration
	replicas int
	// final bounds the snapshot written on shutdown (Config.ShutdownTimeout, as for the
	// HTTP drain): a cluster without quorum never answers it, and a shutdown must end.
	final time.Duration
	last  uint64 // the sequence of the latest snapshot
	have  bool   // whether there is one
}

// newSnapshotter returns the node's snapshotter, or nil when it writes none (read-only,
// or a negative interval).
func (n *Node) newSnapshotter(cfg Config) (*snapshotter, error) {
	if cfg.ReadOnly || n.stream == nil || cfg.VerifySnapshotInterval < 0 {
		return nil, nil
	}
	js, err := jetstream.New(n.stream.conn)
	if err != nil {
		return nil, err
	}
	s := &snapshotter{n: n, js: js, every: cfg.VerifySnapshotInterval, replicas: cfg.replicas(), final: cfg.ShutdownTimeout}
	if s.every == 0 {
		s.every = DefaultVerifySnapshotInterval
	}
	return s, nil
}

// run writes snapshots until ctx ends, then writes the last one.
func (s *snapshotter) run(ctx context.Context) error {
	wait := time.NewTicker(100 * time.Millisecond)
	for !s.n.caught.Load() {
		select {
		case <-ctx.Done():
			wait.Stop()
			return nil
		case <-wait.C:
		}
	}
	wait.Stop()
	err := retryStart(ctx, s.n.cfg, "the verify snapshot stream", func(ctx context.Context) error {
		_, err := verifier.EnsureSnapshotStream(ctx, s.js, s.replicas)
		return err
	})
	if err != nil {
		s.n.cfg.Logger.Warn("no verify snapshots", "err", err)
		<-ctx.Done()
		return nil
	}
	s.last, s.have = verifier.LatestSnapshot(ctx, s.js)
	s.write(ctx)
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.final)
			defer cancel()
			s.write(fctx)
			return nil
		case <-t.C:
			s.write(ctx)
		}
	}
}

// write writes a snapshot of the serving views if they moved since the latest one.
func (s *snapshotter) write(ctx context.Context) {
	store := s.n.Store()
	if s.have && store.Checkpoint() == s.last {
		return
	}
	start := time.Now()
	info, err := verifier.WriteSnapshot(ctx, s.js, "", store.EachKey)
	if err != nil {
		s.n.cfg.Logger.Warn("verify snapshot", "err", err)
		return
	}
	s.last, s.have = info.Seq, true
	s.n.cfg.Logger.Info("verify snapshot written", "seq", info.Seq, "keys", info.Keys, "bytes", info.Bytes, "took", time.Since(start).Round(time.Millisecond))
}
