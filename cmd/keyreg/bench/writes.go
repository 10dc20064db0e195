package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
)

// writesWorkspace is the workspace of the writes measured.
const writesWorkspace = "bench-writes"

// rounds is how many rounds a comparison of modes takes turns in, so that each mode sees
// the machine (shared, its load changing) in the same state.
const rounds = 5

// mode is a log to measure commands on, and its name in the report. With viewsState,
// writes' commands read state from the views instead of the log.
type mode struct {
	name       string
	log        events.Log
	viewsState bool
}

// modes are the logs commands are compared on: appending one command at a time (as before
// group commit), and with group commit.
func (r *runner) modes() []mode {
	return []mode{{"", r.log, false}, {", group commit", r.group, false}}
}

// writes measures allowlist updates through the whole write path on live views
// (Pebble without fsync, a running projector): the caller's key checked as the HTTP layer
// does, the command, the wait until the views applied it, and the answer read from the
// views. It reports each run and where its time went (commands.MeasureUpdates): one client
// changing one key, then clients clients each changing a key of its own; each run on
// every mode in turn, on keys of the mode's own.
func (r *runner) writes() error {
	const ws = writesWorkspace
	ctx, log, clients, writes := r.ctx, r.log, r.opts.Publishers, r.opts.Events
	// Group commit again, with state read from the views.
	modes := append(r.modes(), mode{", group commit, state from views", r.group, true})
	store, err := projections.Open(filepath.Join(r.opts.Dir, "bench-live"), projections.Options{LazySync: true})
	if err != nil {
		return err
	}
	defer store.Close()
	proj := projections.NewProjector(store, log)
	pctx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- proj.Run(pctx) }()
	defer func() { stop(); <-ran }()

	h := &commands.Handler{Log: log}
	if _, err := h.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: ws, Name: "bench"}); err != nil {
		return err
	}
	caller, err := h.CreateKey(ctx, commands.CreateKey{Workspace: ws, Name: "caller"})
	if err != nil {
		return err
	}
	keys := make([][]string, len(modes)) // per mode
	last := caller.Seq
	for m := range modes {
		for i := range clients {
			r, err := h.CreateKey(ctx, commands.CreateKey{Workspace: ws, Name: fmt.Sprint("key ", i), Allowlist: []string{"10.0.0.0/8"}})
			if err != nil {
				return err
			}
			keys[m], last = append(keys[m], r.ID), r.Seq
		}
	}
	if err := proj.WaitFor(ctx, last); err != nil {
		return err
	}
	ip := netip.MustParseAddr("10.1.2.3")
	path := commands.WritePath{
		Auth: func() error {
			if r := store.Verify(caller.Secret, ip, "", time.Now()); !r.Valid {
				return fmt.Errorf("caller's key: %s", r.Code)
			}
			return nil
		},
		Wait: proj.WaitFor,
		Respond: func(ctx context.Context, id string) error {
			k, err := store.Key(ctx, ws, id)
			if err == nil {
				_, err = json.Marshal(k)
			}
			return err
		},
	}
	early := max(writes/20, rounds) // 100 for the default 2,000
	runs := []writeRun{
		// A key's first changes, then its next ones: reading its state grows with them.
		{fmt.Sprintf("update allowlist, 1 client, one key, changes 1-%d", early), true, 1, early},
		{fmt.Sprintf("update allowlist, 1 client, one key, changes %d-%d", early+1, 5*early), true, 1, 4 * early},
		{fmt.Sprintf("update allowlist, %d clients, own keys", clients), false, clients, writes},
	}
	for _, run := range runs {
		if err := r.measureRun(run, modes, keys, path, store); err != nil {
			return err
		}
	}
	return nil
}

// writeRun is one measurement of writes: its name, whether all clients change one key,
// how many clients, how many writes in all.
type writeRun struct {
	name    string
	oneKey  bool
	clients int
	writes  int
}

// measureRun measures run on every mode in turn, rounds times, and reports each mode's
// sums.
func (r *runner) measureRun(run writeRun, modes []mode, keys [][]string, path commands.WritePath, store *projections.Store) error {
	ctx, ws := r.ctx, writesWorkspace
	sums := make([]commands.WriteStages, len(modes))
	applied := make([]projections.ApplyStats, len(modes)) // the views' share, summed over the rounds
	for range rounds {
		for m, md := range modes {
			path.Log, path.State = md.log, nil
			if md.viewsState { // as keyreg serve reads them: views, checked by the append
				path.State = commands.ViewState{Log: md.log, Views: func() commands.Views { return store }}
			}
			k := keys[m]
			if run.oneKey {
				k = k[:1]
			}
			before := store.ApplyStats()
			st, err := commands.MeasureUpdates(ctx, path, ws, k, run.clients, max(run.writes/rounds, 1))
			if err != nil {
				return fmt.Errorf("%s%s: %w", run.name, md.name, err)
			}
			after := store.ApplyStats()
			sums[m] = sums[m].Add(st)
			a := &applied[m]
			a.Batches += after.Batches - before.Batches
			a.Records += after.Records - before.Records
			a.Build += after.Build - before.Build
			a.Commit += after.Commit - before.Commit
		}
	}
	for m, md := range modes {
		r.reportStages(run.name+md.name, sums[m], applied[m])
	}
	return nil
}

// reportStages reports a run of writes and the mean time of each stage per write.
func (r *runner) reportStages(name string, st commands.WriteStages, applied projections.ApplyStats) {
	r.report(Result{Name: name, Count: st.Writes, Took: st.Wall, Unit: "writes"})
	stage := func(what string, took time.Duration) {
		r.report(Result{Name: "  " + what, Count: st.Writes, Took: took, Unit: "writes"})
	}
	stage("auth", st.Auth)
	stage("state read", st.Read)
	stage("decide", st.Decide)
	stage(fmt.Sprintf("append+fsync (%d appends)", st.Appends), st.Append)
	stage("wait for views", st.Wait)
	stage("response", st.Response)
	r.report(Result{Name: fmt.Sprintf("  of wait: views fold (%d batches)", applied.Batches), Count: st.Writes, Took: applied.Build, Unit: "writes"})
	r.report(Result{Name: "  of wait: views commit", Count: st.Writes, Took: applied.Commit, Unit: "writes"})
}
