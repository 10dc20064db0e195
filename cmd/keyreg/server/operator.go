package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/replay"
)

// Operator tools that run with the server stopped (they open the data dir's stream
// themselves), or against a cluster with --nats-url.

func generations(cfg Config) replay.Generations {
	return replay.Generations{Root: filepath.Join(cfg.DataDir, "projections")}
}

// RebuildViews rebuilds every view from the stream into a new generation and swaps it in;
// the old generation serves until the swap, and a crash before it leaves the old one.
func RebuildViews(ctx context.Context, cfg Config, opts replay.Options) (string, replay.Stats, error) {
	s, err := OpenStream(ctx, cfg)
	if err != nil {
		return "", replay.Stats{}, err
	}
	defer s.Close()
	gens := generations(cfg)
	if err := gens.RemoveStale(); err != nil {
		return "", replay.Stats{}, err
	}
	return replay.RebuildGeneration(ctx, s.Log, gens, opts)
}

// RebuildInto writes a point-in-time copy of every view (up to opts.UntilSeq or
// opts.UntilTime) into dir, which must not hold views yet.
func RebuildInto(ctx context.Context, cfg Config, dir string, opts replay.Options) (replay.Stats, error) {
	s, err := OpenStream(ctx, cfg)
	if err != nil {
		return replay.Stats{}, err
	}
	defer s.Close()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return replay.Stats{}, err
	}
	return replay.Rebuild(ctx, s.Log, dir, opts)
}

// VerifyViews rebuilds the views up to the serving generation's checkpoint into a
// temporary store and compares them with it, key by key. It returns up to max
// differences (0: all).
func VerifyViews(ctx context.Context, cfg Config, max int) ([]replay.Difference, uint64, error) {
	gens := generations(cfg)
	cur, err := gens.Current()
	if err != nil {
		return nil, 0, err
	}
	if cur == "" {
		return nil, 0, fmt.Errorf("no views under %s yet: run keyreg serve or keyreg replay first", gens.Root)
	}
	s, err := OpenStream(ctx, cfg)
	if err != nil {
		return nil, 0, err
	}
	defer s.Close()
	live, err := projections.Open(gens.Dir(cur), projections.Options{ReadOnly: true})
	if err != nil {
		return nil, 0, err
	}
	defer live.Close()
	diffs, err := replay.Verify(ctx, s.Log, live, cfg.DataDir, max)
	return diffs, live.Checkpoint(), err
}
