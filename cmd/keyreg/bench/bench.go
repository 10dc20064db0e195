package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/replay"
)

// BenchOptions size `keyreg bench`.
type BenchOptions struct {
	Events     int // events appended by each append measurement
	Publishers int // concurrent publishers
	Dir        string
}

// BenchResult is one measured figure.
type BenchResult struct {
	Name  string
	Count int
	Took  time.Duration
	Unit  string // what Count counts
}

// Rate is Count per second.
func (r BenchResult) Rate() float64 { return float64(r.Count) / r.Took.Seconds() }

// Bench measures this machine on a fresh embedded server under opts.Dir (fsync on, as in
// production): appends one at a time, from concurrent publishers and in atomic batches;
// commands end to end; Verify; and a full replay beside a plain drain of the stream. It
// reports each result to report as it is measured.
func Bench(ctx context.Context, opts BenchOptions, report func(BenchResult)) error {
	if opts.Events <= 0 {
		opts.Events = 2000
	}
	if opts.Publishers <= 0 {
		opts.Publishers = 16
	}
	s, err := OpenStream(ctx, Config{DataDir: opts.Dir})
	if err != nil {
		return err
	}
	defer s.Close()
	log := s.Log
	msg := func(ws events.Workspace) events.Message {
		id := events.NewID()
		e, _ := events.NewEvent(ws, events.AggWorkspace, id, events.WorkspaceCreated{Name: "bench"}, events.Meta{}, "", time.Now())
		data, _ := e.Encode()
		return events.Message{Subject: events.Subject(ws, events.AggWorkspace, id, e.Type), ID: e.ID, Data: data}
	}
	timed := func(name, unit string, count int, f func() error) error {
		start := time.Now()
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		report(BenchResult{Name: name, Count: count, Took: time.Since(start), Unit: unit})
		return nil
	}
	parallel := func(n, workers int, f func(i int) error) error {
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make([]error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
					if err := f(i); err != nil {
						errs[w] = err
						return
					}
				}
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	n := opts.Events
	if err := timed("append, one at a time", "events", n, func() error {
		for range n {
			if _, err := log.Append(ctx, []events.Message{msg("bench-a")}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := timed(fmt.Sprintf("append, %d publishers", opts.Publishers), "events", n, func() error {
		return parallel(n, opts.Publishers, func(int) error {
			_, err := log.Append(ctx, []events.Message{msg("bench-b")})
			return err
		})
	}); err != nil {
		return err
	}
	if err := timed("append, atomic batches of 100", "events", n*10, func() error {
		for i := 0; i < n*10; i += 100 {
			batch := make([]events.Message, 100)
			for j := range batch {
				batch[j] = msg("bench-c")
			}
			if _, err := log.Append(ctx, batch); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}

	h := &commands.Handler{Log: log}
	if _, err := h.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: "bench", Name: "bench"}); err != nil && !errors.Is(err, commands.ErrAlreadyExists) {
		return err
	}
	secrets := make([]string, n)
	if err := timed(fmt.Sprintf("CreateKey commands, %d clients", opts.Publishers), "commands", n, func() error {
		return parallel(n, opts.Publishers, func(i int) error {
			r, err := h.CreateKey(ctx, commands.CreateKey{Workspace: "bench", Name: fmt.Sprint("key ", i),
				Permissions: []string{"users.track"}, Allowlist: []string{"10.0.0.0/8"}})
			secrets[i] = r.Secret
			return err
		})
	}); err != nil {
		return err
	}

	last, err := log.LastSeq(ctx)
	if err != nil {
		return err
	}
	if err := timed("drain the stream (ordered consumer)", "events", int(last), func() error {
		stop := errors.New("stop")
		err := log.Follow(ctx, 1, func(r events.Record) error {
			if r.Seq >= last {
				return stop
			}
			return nil
		})
		if errors.Is(err, stop) {
			return nil
		}
		return err
	}); err != nil {
		return err
	}
	dir := filepath.Join(opts.Dir, "bench-views")
	if err := timed("replay into Pebble views", "events", int(last), func() error {
		_, err := replay.Rebuild(ctx, log, dir, replay.Options{UntilSeq: last})
		return err
	}); err != nil {
		return err
	}
	store, err := projections.Open(dir, projections.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer store.Close()
	ip, now := netip.MustParseAddr("10.1.2.3"), time.Now()
	const verifies = 1_000_000
	return timed("Verify (in-process, one core)", "verifies", verifies, func() error {
		for i := range verifies {
			if r := store.Verify(secrets[i%len(secrets)], ip, "users.track", now); !r.Valid {
				return fmt.Errorf("verify answered %s", r.Code)
			}
		}
		return nil
	})
}

// PrintBench writes a result as one aligned line.
func PrintBench(w io.Writer, r BenchResult) {
	per := r.Took / time.Duration(max(r.Count, 1))
	fmt.Fprintf(w, "%-40s %9d %-9s in %9s  %12.0f/s  %10s each\n", r.Name, r.Count, r.Unit, r.Took.Round(time.Millisecond), r.Rate(), per)
}

// BenchDir makes a temporary directory for Bench when none is given.
func BenchDir() (string, func(), error) {
	dir, err := os.MkdirTemp("", "keyreg-bench-")
	if err != nil {
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}
