// Package bench is `keyreg bench`: it measures keyreg's parts on this machine (appends
// with fsync, commands, a drain and a replay of the stream, Verify) on a throwaway
// embedded server, and reports one figure per measurement.
package bench

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

	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/replay"
)

// Options size a run.
type Options struct {
	Events     int // events appended by each append measurement; 0 means 2000
	Publishers int // concurrent publishers; 0 means 16
	Dir        string
}

// Result is one measured figure.
type Result struct {
	Name  string
	Count int
	Took  time.Duration
	Unit  string // what Count counts
}

// Rate is Count per second.
func (r Result) Rate() float64 { return float64(r.Count) / r.Took.Seconds() }

// Run measures this machine on a fresh embedded server under opts.Dir (fsync on, as in
// production): appends one at a time, from concurrent publishers and in atomic batches;
// commands end to end; Verify; and a full replay beside a plain drain of the stream. It
// reports each result to report as it is measured.
func Run(ctx context.Context, opts Options, report func(Result)) error {
	if opts.Events <= 0 {
		opts.Events = 2000
	}
	if opts.Publishers <= 0 {
		opts.Publishers = 16
	}
	s, err := server.OpenStream(ctx, server.Config{DataDir: opts.Dir})
	if err != nil {
		return err
	}
	defer s.Close()
	r := &runner{ctx: ctx, log: s.Log, group: events.NewGroupLog(s.Log), opts: opts, report: report}
	if err := r.appends(); err != nil {
		return err
	}
	secrets, err := r.commands()
	if err != nil {
		return err
	}
	if err := r.writes(); err != nil {
		return err
	}
	last, err := r.log.LastSeq(ctx)
	if err != nil {
		return err
	}
	if err := r.drain(last); err != nil {
		return err
	}
	store, err := r.replay(last)
	if err != nil {
		return err
	}
	defer store.Close()
	return r.verify(store, secrets)
}

// runner runs the measurements of one Run.
type runner struct {
	ctx    context.Context
	log    events.Log
	group  *events.GroupLog // log with group commit
	opts   Options
	report func(Result)
}

// timed runs f and reports how long it took to do count units.
func (r *runner) timed(name, unit string, count int, f func() error) error {
	start := time.Now()
	if err := f(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	r.report(Result{Name: name, Count: count, Took: time.Since(start), Unit: unit})
	return nil
}

// parallel calls f(i) for i in [0, n) from workers goroutines; a worker stops at its
// first error.
func parallel(n, workers int, f func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if err := f(i); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// message is a workspace.created event of a new workspace id in ws, ready to append.
func message(ws events.Workspace) events.Message {
	id := events.NewID()
	e, _ := events.NewEvent(ws, events.AggWorkspace, id, events.WorkspaceCreated{Name: "bench"}, events.Meta{}, "", time.Now())
	data, _ := e.Encode()
	return events.Message{Subject: events.Subject(ws, events.AggWorkspace, id, e.Type), ID: e.ID, Data: data}
}

// appends measures appends one at a time, from concurrent publishers (with and without
// group commit), and in atomic batches of 100.
func (r *runner) appends() error {
	ctx, n := r.ctx, r.opts.Events
	if err := r.timed("append, one at a time", "events", n, func() error {
		for range n {
			if _, err := r.log.Append(ctx, []events.Message{message("bench-a")}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := r.timed(fmt.Sprintf("append, %d publishers", r.opts.Publishers), "events", n, func() error {
		return parallel(n, r.opts.Publishers, func(int) error {
			_, err := r.log.Append(ctx, []events.Message{message("bench-b")})
			return err
		})
	}); err != nil {
		return err
	}
	if err := r.timed(fmt.Sprintf("append, %d publishers, group commit", r.opts.Publishers), "events", n, func() error {
		return parallel(n, r.opts.Publishers, func(int) error {
			_, err := r.group.Append(ctx, []events.Message{message("bench-b")})
			return err
		})
	}); err != nil {
		return err
	}
	return r.timed("append, atomic batches of 100", "events", n*10, func() error {
		for i := 0; i < n*10; i += 100 {
			batch := make([]events.Message, 100)
			for j := range batch {
				batch[j] = message("bench-c")
			}
			if _, err := r.log.Append(ctx, batch); err != nil {
				return err
			}
		}
		return nil
	})
}

// commands measures CreateKey commands from 1 and from concurrent clients, appending one
// command at a time (as before group commit) and with group commit, the two taking turns
// in rounds; it returns the secrets of the keys made.
func (r *runner) commands() ([]string, error) {
	ctx, n := r.ctx, r.opts.Events
	h := &commands.Handler{Log: r.log}
	if _, err := h.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: "bench", Name: "bench"}); err != nil && !errors.Is(err, commands.ErrAlreadyExists) {
		return nil, err
	}
	var secrets []string
	var mu sync.Mutex
	for _, clients := range []int{1, r.opts.Publishers} {
		count := n
		if clients == 1 {
			count = max(n/4, 1)
		}
		per := max(count/rounds, 1)
		took := make([]time.Duration, len(r.modes()))
		for range rounds {
			for m, md := range r.modes() {
				hm := &commands.Handler{Log: md.log}
				start := time.Now()
				err := parallel(per, clients, func(i int) error {
					res, err := hm.CreateKey(ctx, commands.CreateKey{Workspace: "bench", Name: fmt.Sprint("key ", i),
						Permissions: []string{"users.track"}, Allowlist: []string{"10.0.0.0/8"}})
					mu.Lock()
					secrets = append(secrets, res.Secret)
					mu.Unlock()
					return err
				})
				if err != nil {
					return nil, fmt.Errorf("CreateKey commands%s: %w", md.name, err)
				}
				took[m] += time.Since(start)
			}
		}
		for m, md := range r.modes() {
			r.report(Result{Name: fmt.Sprintf("CreateKey commands, %d clients%s", clients, md.name), Count: per * rounds, Took: took[m], Unit: "commands"})
		}
	}
	return secrets, nil
}

// drain measures an ordered consumer reading the stream up to last.
func (r *runner) drain(last uint64) error {
	return r.timed("drain the stream (ordered consumer)", "events", int(last), func() error {
		stop := errors.New("stop")
		err := r.log.Follow(r.ctx, 1, func(rec events.Record) error {
			if rec.Seq >= last {
				return stop
			}
			return nil
		})
		if errors.Is(err, stop) {
			return nil
		}
		return err
	})
}

// replay measures a rebuild of the views up to last, and opens them.
func (r *runner) replay(last uint64) (*projections.Store, error) {
	dir := filepath.Join(r.opts.Dir, "bench-views")
	if err := r.timed("replay into Pebble views", "events", int(last), func() error {
		_, err := replay.Rebuild(r.ctx, r.log, dir, replay.Options{UntilSeq: last, GCPercent: 400})
		return err
	}); err != nil {
		return nil, err
	}
	return projections.Open(dir, projections.Options{ReadOnly: true})
}

// verify measures a million Verify calls on one core, cycling through secrets.
func (r *runner) verify(store *projections.Store, secrets []string) error {
	ip, now := netip.MustParseAddr("10.1.2.3"), time.Now()
	const verifies = 1_000_000
	return r.timed("Verify (in-process, one core)", "verifies", verifies, func() error {
		for i := range verifies {
			if v := store.Verify(secrets[i%len(secrets)], ip, "users.track", now); !v.Valid {
				return fmt.Errorf("verify answered %s", v.Code)
			}
		}
		return nil
	})
}

// Print writes a result as one aligned line.
func Print(w io.Writer, r Result) {
	per := r.Took / time.Duration(max(r.Count, 1))
	fmt.Fprintf(w, "%-40s %9d %-9s in %9s  %12.0f/s  %10s each\n", r.Name, r.Count, r.Unit, r.Took.Round(time.Millisecond), r.Rate(), per)
}

// TempDir makes a temporary directory for Run when none is given, and returns it with
// the function that removes it.
func TempDir() (string, func(), error) {
	dir, err := os.MkdirTemp("", "keyreg-bench-")
	if err != nil {
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}
