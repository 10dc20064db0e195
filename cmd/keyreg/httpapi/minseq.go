package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/replay"
)

// Read-your-writes across nodes (see wire.SequenceHeader): writes answer with the stream
// sequence they reached; a read that sends it back as Keyreg-Min-Sequence or min_seq
// waits until this node's views have applied it.

// DefaultMinSeqWait bounds how long a read with min_seq waits for the views when
// Deps.MinSeqWait is 0.
const DefaultMinSeqWait = 5 * time.Second

// minSeqRetryAfter is the Retry-After (seconds) of a read whose min_seq the views had not
// applied in time.
const minSeqRetryAfter = "1"

// WriteHeaders are the headers of a successful write's answer.
type WriteHeaders struct {
	Sequence string `header:"Keyreg-Sequence" doc:"The stream sequence the change reached (for an idempotent replay or a change already made, that of the event that holds the state). Send it back as Keyreg-Min-Sequence or min_seq on a read, on any node, to see the change."`
	Replayed string `header:"Idempotent-Replayed" doc:"true when a retry with the same Idempotency-Key is answered as the first try was, and nothing is changed again"`
}

// written returns the headers of the answer to a command that returned res.
func written(res commands.Result) WriteHeaders {
	h := WriteHeaders{Sequence: uitoa(res.Seq)}
	if res.Duplicate {
		h.Replayed = "true"
	}
	return h
}

// takesMinSeq reports whether op takes min_seq: every GET of /v1, and verify.
func takesMinSeq(op *huma.Operation) bool {
	if op.Method == http.MethodGet {
		return strings.HasPrefix(op.Path, "/v1/")
	}
	return op.Method == verifyOp.Method && op.Path == verifyOp.Path
}

// minSeqDoc describes min_seq in the OpenAPI document.
const minSeqDoc = "Read-your-writes: answer only once this node's views have applied this stream sequence (a write's " +
	"Keyreg-Sequence), waiting for them a few seconds at most (then 503 with Retry-After, the problem naming min_seq " +
	"and the applied_seq). The header and the query parameter are alternatives."

// documentMinSeq declares the header Keyreg-Min-Sequence and the query parameter min_seq
// on the operations that take them (an OnAddOperation hook, so each operation is
// registered as usual).
func documentMinSeq(_ *huma.OpenAPI, op *huma.Operation) {
	if !takesMinSeq(op) {
		return
	}
	one := 1.0
	for _, in := range []struct{ name, where string }{{wire.MinSequenceHeader, "header"}, {wire.MinSequenceQuery, "query"}} {
		op.Parameters = append(op.Parameters, &huma.Param{Name: in.name, In: in.where, Description: minSeqDoc,
			Schema: &huma.Schema{Type: huma.TypeInteger, Format: "int64", Minimum: &one}})
	}
}

// minSeq returns the sequence a request asks its read to wait for (the larger when both
// the header and the query parameter are given), and given false when it asks none; a
// value that is not a positive integer is a 400 problem naming it.
func minSeq(ctx huma.Context) (seq uint64, field string, given bool, err error) {
	if h := ctx.Header(wire.MinSequenceHeader); h != "" {
		if seq, err = parseMinSeq(wire.MinSequenceHeader, h); err != nil {
			return 0, "", true, err
		}
		field, given = wire.MinSequenceHeader, true
	}
	if u := ctx.URL(); strings.Contains(u.RawQuery, wire.MinSequenceQuery) {
		if q := u.Query(); q.Has(wire.MinSequenceQuery) {
			v, err := parseMinSeq(wire.MinSequenceQuery, q.Get(wire.MinSequenceQuery))
			if err != nil {
				return 0, "", true, err
			}
			if v > seq {
				seq, field = v, wire.MinSequenceQuery
			}
			given = true
		}
	}
	return seq, field, given, nil
}

func parseMinSeq(field, s string) (uint64, error) {
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil || v == 0 {
		return 0, invalid(field, s, field+" must be a stream sequence: a whole number from 1 (a write's Keyreg-Sequence)")
	}
	return v, nil
}

// minSeqMiddleware serves min_seq: a read that asks for a sequence the views have not
// applied yet waits for them (awaitApplied) before it runs. A request that asks none goes
// straight on. It authenticates first, so only callers with a registry key make the
// server wait; anyone else goes on to the handler, which refuses them.
func (a *API) minSeqMiddleware(ctx huma.Context, next func(huma.Context)) {
	seq, field, given, err := minSeq(ctx)
	if !given || !takesMinSeq(ctx.Operation()) {
		next(ctx)
		return
	}
	if err != nil {
		writeProblemTo(ctx, toProblem(err))
		return
	}
	if a.d.Views.Checkpoint() >= seq {
		next(ctx)
		return
	}
	if _, err := a.authenticate(ctx.Context()); err != nil {
		next(ctx)
		return
	}
	if p := a.awaitApplied(ctx.Context(), field, seq); p != nil {
		writeProblemTo(ctx, p)
		return
	}
	next(ctx)
}

// awaitApplied waits until the views have applied seq, at most Deps.MinSeqWait (or the
// request's deadline, if sooner). It returns nil once they have; a 400 problem when seq
// is beyond the stream's last sequence (a sequence of another stream: waiting would not
// help); a 503 problem with Retry-After, naming field and the applied sequence, when the
// bound passed first.
func (a *API) awaitApplied(ctx context.Context, field string, seq uint64) *Problem {
	if a.d.Log != nil {
		if last, err := a.d.Log.LastSeq(ctx); err == nil && seq > last {
			return invalid(field, uitoa(seq), field+" "+uitoa(seq)+" is beyond the stream's last sequence "+uitoa(last)+
				": it is not a sequence of this stream (one restored or created again since?); read without it")
		}
	}
	var err error = ErrUnavailable // a read-only copy of the views never advances
	if a.d.Waiter != nil {
		wait := a.d.MinSeqWait
		if wait <= 0 {
			wait = DefaultMinSeqWait
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		a.minSeqWaiting.Add(1)
		err = a.d.Waiter.WaitFor(wctx, seq)
		a.minSeqWaiting.Add(-1)
		cancel()
	}
	if err == nil {
		return nil
	}
	applied := a.d.Views.Checkpoint()
	p := problem(http.StatusServiceUnavailable, CodeUnavailable, "this node's views have applied the stream up to sequence "+
		uitoa(applied)+", not yet "+field+" "+uitoa(seq)+"; retry (here or on another node)")
	p.Field, p.Value, p.AppliedSeq = field, uitoa(seq), applied
	p.headers = http.Header{"Retry-After": {minSeqRetryAfter}}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && !errors.Is(err, ErrUnavailable) {
		p.internal = err
		a.d.Logger.Warn("wait for min_seq", "request_id", callerOf(ctx).requestID, "err", err)
	}
	return p
}

// answerView returns the view the answer to a command that returned res shows: the
// current views; or, for a command the log held already (a retry with the same
// Idempotency-Key answered from the log: after a restart, or on another node than the
// first try), the log as of the command's last event, so that the retry answers with the
// state the first try answered with, and its ETag.
func (a *API) answerView(ctx context.Context, res commands.Result) (readView, error) {
	if !res.Duplicate {
		return a.currentView(), nil
	}
	return a.commandView(ctx, res)
}

// commandView is the log as of the last event of the command that returned res: the
// state the command left, answered with its ETag.
func (a *API) commandView(ctx context.Context, res commands.Result) (readView, error) {
	c := replay.Cut{Seq: res.Seq}
	at, err := c.At(ctx, a.d.Log)
	if err != nil {
		return readView{}, a.fail(ctx, err)
	}
	return readView{View: replay.View{Log: a.d.Log, Cut: c}, at: at, current: true}, nil
}

// answerWorkspace returns workspace ws as the answer to a command that returned res
// shows it: as answerView, the current views or the log as of the command's last event.
func (a *API) answerWorkspace(ctx context.Context, ws events.Workspace, res commands.Result) (events.WorkspaceState, error) {
	if !res.Duplicate {
		return a.d.Views.Workspace(ctx, ws)
	}
	var st events.WorkspaceState
	err := a.d.Log.Read(ctx, events.AggregateFilter(ws, events.AggWorkspace, string(ws)), 1, func(r events.Record) error {
		if r.Seq > res.Seq {
			return errPastAnswer
		}
		d, err := events.DecodeRecord(r)
		if err != nil {
			return err
		}
		return st.Apply(r.Seq, r.Data, d.Event, d.Payload)
	})
	if err != nil && !errors.Is(err, errPastAnswer) {
		return st, err
	}
	if !st.Exists() {
		return st, events.NotFound("workspace", string(ws), ws)
	}
	return st, nil
}

// errPastAnswer stops a read of the log at the end of the answer it folds.
var errPastAnswer = errors.New("past the answer")
