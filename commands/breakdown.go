package commands

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyreg/keyreg/events"
)

// WriteStages is where the time of a run of writes went: each stage summed over Writes
// writes (divide by Writes for the mean per write). Concurrent writes overlap, so the
// stages of a concurrent run add up to more than its wall time.
type WriteStages struct {
	Writes   int
	Appends  int           // appends tried: Writes plus the retries after a conflict
	Wall     time.Duration // the run's elapsed time
	Auth     time.Duration // checking the caller's secret (WritePath.Auth)
	Read     time.Duration // reading the state the command decides on (StateReader)
	Decide   time.Duration // validating, deciding and encoding: the command's time less Read and Append
	Append   time.Duration // the log's append: publish, the stream's fsync, the acknowledgement
	Wait     time.Duration // from the acknowledgement until the views applied it (WritePath.Wait)
	Response time.Duration // reading and encoding the answer (WritePath.Respond)
}

// Add returns the sum of s and t, as one run.
func (s WriteStages) Add(t WriteStages) WriteStages {
	return WriteStages{
		Writes: s.Writes + t.Writes, Appends: s.Appends + t.Appends, Wall: s.Wall + t.Wall,
		Auth: s.Auth + t.Auth, Read: s.Read + t.Read, Decide: s.Decide + t.Decide, Append: s.Append + t.Append,
		Wait: s.Wait + t.Wait, Response: s.Response + t.Response,
	}
}

// WritePath is the write path that MeasureUpdates drives: the command layer on Log and
// State, and around it what a server does before and after a command.
type WritePath struct {
	Log   events.Log
	State StateReader // nil: LogState{Log}; views: a ViewState (see Handler.State)
	// Auth checks the caller, Wait waits for the views to apply a sequence and Respond
	// builds the answer; each may be nil (not measured).
	Auth    func() error
	Wait    func(ctx context.Context, seq uint64) error
	Respond func(ctx context.Context, keyID string) error
}

// MeasureUpdates runs writes allowlist updates on the existing keys of ws from clients
// concurrent callers (caller c updates keys[c%len(keys)], each time to a new list, so that
// no update is a no-op) and returns where their time went. With one client and one
// key it is the cost of changing one key repeatedly.
func MeasureUpdates(ctx context.Context, p WritePath, ws string, keys []string, clients, writes int) (WriteStages, error) {
	if len(keys) == 0 || clients <= 0 {
		return WriteStages{}, errors.New("measure updates: no keys or no clients")
	}
	var read, appendT, appends atomic.Int64
	st := p.State
	if st == nil {
		st = LogState{Log: p.Log}
	}
	h := &Handler{Log: timedAppends{Log: p.Log, took: &appendT, n: &appends}, State: timed(st, &read)}
	var auth, command, wait, respond atomic.Int64
	timed := func(sum *atomic.Int64, f func() error) error {
		if f == nil {
			return nil
		}
		start := time.Now()
		err := f()
		sum.Add(int64(time.Since(start)))
		return err
	}
	var next atomic.Int64
	errs := make([]error, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := keys[c%len(keys)]
			for {
				i := next.Add(1)
				if i > int64(writes) {
					return
				}
				// A list of this write's own, so that no update is a no-op.
				n := listSeq.Add(1)
				list := []string{"10.0.0.0/8", fmt.Sprintf("192.%d.%d.0/24", n>>8&255, n&255)}
				var res Result
				err := timed(&auth, p.Auth)
				if err == nil {
					err = timed(&command, func() (err error) {
						res, err = h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: ws, KeyID: key, Allowlist: list})
						return err
					})
				}
				if err == nil && p.Wait != nil {
					err = timed(&wait, func() error { return p.Wait(ctx, res.Seq) })
				}
				if err == nil && p.Respond != nil {
					err = timed(&respond, func() error { return p.Respond(ctx, key) })
				}
				if err != nil {
					errs[c] = fmt.Errorf("update key %s: %w", key, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	s := WriteStages{
		Writes: writes, Appends: int(appends.Load()), Wall: time.Since(start),
		Auth: time.Duration(auth.Load()), Read: time.Duration(read.Load()), Append: time.Duration(appendT.Load()),
		Wait: time.Duration(wait.Load()), Response: time.Duration(respond.Load()),
	}
	s.Decide = time.Duration(command.Load()) - s.Read - s.Append
	return s, errors.Join(errs...)
}

// listSeq numbers the lists MeasureUpdates sets.
var listSeq atomic.Uint32

// timedAppends is a Log that sums the time its appends take.
type timedAppends struct {
	events.Log
	took, n *atomic.Int64
}

func (l timedAppends) Append(ctx context.Context, msgs []events.Message) ([]uint64, error) {
	start := time.Now()
	seqs, err := l.Log.Append(ctx, msgs)
	l.took.Add(int64(time.Since(start)))
	l.n.Add(1)
	return seqs, err
}

// timed returns st summing the time its reads take into took; a FreshReader stays one.
func timed(st StateReader, took *atomic.Int64) StateReader {
	if fr, ok := st.(FreshReader); ok {
		return timedFresh{timedReads{StateReader: st, took: took}, fr}
	}
	return timedReads{StateReader: st, took: took}
}

// timedFresh is a timed FreshReader: its Fresh reads are timed too.
type timedFresh struct {
	timedReads
	fr FreshReader
}

func (r timedFresh) Fresh() StateReader { return timedReads{StateReader: r.fr.Fresh(), took: r.took} }

// timedReads is a StateReader that sums the time its reads take.
type timedReads struct {
	StateReader
	took *atomic.Int64
}

func (r timedReads) since(start time.Time) { r.took.Add(int64(time.Since(start))) }

func (r timedReads) Workspace(ctx context.Context, ws events.Workspace) (events.WorkspaceState, error) {
	defer r.since(time.Now())
	return r.StateReader.Workspace(ctx, ws)
}

func (r timedReads) Key(ctx context.Context, ws events.Workspace, id string) (events.KeyState, error) {
	defer r.since(time.Now())
	return r.StateReader.Key(ctx, ws, id)
}

func (r timedReads) Identifier(ctx context.Context, ws events.Workspace, id string) (events.IdentifierState, error) {
	defer r.since(time.Now())
	return r.StateReader.Identifier(ctx, ws, id)
}

func (r timedReads) NameClaim(ctx context.Context, ws events.Workspace, claimID string) (events.NameClaimState, error) {
	defer r.since(time.Now())
	return r.StateReader.NameClaim(ctx, ws, claimID)
}
