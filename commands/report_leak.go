package commands

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/keyreg/keyreg/events"
)

// ReportLeak records a secret scanner's report that the secret of a key (hash SecretHash)
// was published: keyreg.key.leaked.v1 and, unless the workspace reports only
// (SetLeakResponse), keyreg.key.revoked.v1, in one atomic append. Meta.Reason should say
// that the key leaked: the revocation carries it.
type ReportLeak struct {
	Workspace  string
	KeyID      string
	SecretHash string // hex SHA-256 of the secret found (events.HashSecret)
	TokenType  string
	URL        string
	Source     string
	Reporter   string // the scanner's signing key identifier
	Meta       events.Meta
}

// LeakReport is what ReportLeak did.
type LeakReport struct {
	Result
	// Revoked reports that this report revoked the key.
	Revoked bool
}

type reportLeak struct {
	ws                                         events.Workspace
	id, hash, tokenType, url, source, reporter string
}

func (c ReportLeak) validate() (reportLeak, error) {
	ws, id, err := parseKeyRef(c.Workspace, c.KeyID)
	if err != nil {
		return reportLeak{}, err
	}
	if len(c.SecretHash) != 64 {
		return reportLeak{}, events.Invalid("secret_hash", c.SecretHash, "must be a hex SHA-256")
	}
	if c.Reporter == "" {
		return reportLeak{}, events.Invalid("reporter", "", "the reporter is required")
	}
	return reportLeak{ws: ws, id: id, hash: c.SecretHash, tokenType: c.TokenType, url: c.URL, source: c.Source, reporter: c.Reporter}, nil
}

// leakID is the event id of a report: the same report (key, secret, URL) sent again, as
// scanners do, appends nothing. Its time is the key's creation, the same on every node.
func (c reportLeak) leakID(created time.Time) string {
	sum := sha256.Sum256([]byte("keyreg leak report\x00" + string(c.ws) + "\x00" + c.id + "\x00" + c.hash + "\x00" + c.url))
	return derivedID(created, sum)
}

func (c reportLeak) decide(k events.KeyState, mode string, now time.Time) ([]change, bool, error) {
	if err := checkKey(k, c.ws, c.id, 0); err != nil {
		return nil, false, err
	}
	revoke := mode != events.LeakReportOnly
	leaked := keyChange(k, events.KeyLeaked{SecretHash: c.hash, TokenType: c.tokenType, URL: c.url, Source: c.source,
		Reporter: c.reporter, Revoked: revoke})
	if !revoke {
		return []change{leaked}, false, nil
	}
	// The revocation follows in the same batch: messages chains its prevhash to the leak's.
	return []change{leaked, keyChange(k, events.KeyRevoked{PreviousStatus: k.StatusAt(now)})}, true, nil
}

// ReportLeak records the leak of a key's secret and revokes the key unless its workspace
// reports only. A report sent again (same key, secret and URL) appends nothing and returns
// a Duplicate result.
//
// Errors: *events.ValidationError (fields workspace, key_id, secret_hash, reporter);
// events.ErrNotFound; ErrRevoked when the key is revoked already (nothing is appended).
func (h *Handler) ReportLeak(ctx context.Context, cmd ReportLeak) (LeakReport, error) {
	c, err := cmd.validate()
	if err != nil {
		return LeakReport{}, fmt.Errorf("report leak: %w", err)
	}
	k, err := h.stateOf(ctx).Key(ctx, c.ws, c.id)
	if err != nil {
		return LeakReport{}, fmt.Errorf("report leak: %w", err)
	}
	mode, _, err := h.leakResponse(ctx, c.ws)
	if err != nil {
		return LeakReport{}, fmt.Errorf("report leak: %w", err)
	}
	var revoked bool
	home := target{c.ws, events.AggKey, c.id}
	res, err := h.execute(ctx, home, c.leakID(k.CreatedAt), cmd.Meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
		k, err := h.stateOf(ctx).Key(ctx, c.ws, c.id)
		if err != nil {
			return nil, Result{}, err
		}
		var changes []change
		changes, revoked, err = c.decide(k, mode, now)
		return changes, unchanged(c.id, k.Version), err
	})
	if err != nil {
		return LeakReport{}, fmt.Errorf("report leak: %w", err)
	}
	return LeakReport{Result: res, Revoked: revoked && !res.Duplicate}, nil
}

// SetLeakResponse sets what a leak report does to the keys of a workspace:
// events.LeakRevoke (the default) or events.LeakReportOnly.
type SetLeakResponse struct {
	Workspace string
	Mode      string
	EventID   string // optional ULID, the event's id; see Handler
	Meta      events.Meta
}

// SetLeakResponse records the workspace's leak response (keyreg.workspace.leak_response_set.v1
// on the workspace). Setting the current one appends nothing. The Result's ID is the
// workspace id.
//
// Errors: *events.ValidationError (fields workspace, mode, event_id); events.ErrNotFound
// when the workspace does not exist.
func (h *Handler) SetLeakResponse(ctx context.Context, cmd SetLeakResponse) (Result, error) {
	ws, err := events.ParseWorkspace(cmd.Workspace)
	if err != nil {
		return Result{}, fmt.Errorf("set leak response: %w", err)
	}
	if cmd.Mode != events.LeakRevoke && cmd.Mode != events.LeakReportOnly {
		return Result{}, fmt.Errorf("set leak response: %w", events.Invalid("mode", cmd.Mode, "must be %s or %s", events.LeakRevoke, events.LeakReportOnly))
	}
	if err := parseEventID(cmd.EventID); err != nil {
		return Result{}, fmt.Errorf("set leak response: %w", err)
	}
	home := target{ws, events.AggWorkspace, string(ws)}
	res, err := h.execute(ctx, home, cmd.EventID, cmd.Meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
		// Exact reads: the expectation below is on the version the log holds.
		st, err := LogState{Log: h.Log}.Workspace(ctx, ws)
		if err != nil {
			return nil, Result{}, err
		}
		if !st.Exists() {
			return nil, Result{}, fmt.Errorf("workspace %s: %w", ws, events.ErrNotFound)
		}
		prev, _, err := h.leakResponse(ctx, ws)
		if err != nil {
			return nil, Result{}, err
		}
		if prev == cmd.Mode {
			return nil, unchanged(string(ws), st.Version), nil
		}
		return []change{{ws: ws, agg: events.AggWorkspace, id: string(ws), payload: events.LeakResponseSet{Mode: cmd.Mode, Previous: prev},
			expect: st.Version, prevHash: st.LastHash}}, unchanged(string(ws), st.Version), nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("set leak response: %w", err)
	}
	return res, nil
}

// LeakResponse returns the leak response of workspace ws (events.LeakRevoke unless set)
// and the stream sequence of the event that set it (0: never set).
func (h *Handler) LeakResponse(ctx context.Context, ws events.Workspace) (string, uint64, error) {
	return h.leakResponse(ctx, ws)
}

// leakResponse reads the workspace's last leak_response_set event from the log: the
// setting is rare and read only by leak reports, so it is not kept in the views.
func (h *Handler) leakResponse(ctx context.Context, ws events.Workspace) (string, uint64, error) {
	mode, seq := events.LeakRevoke, uint64(0)
	subject := events.Subject(ws, events.AggWorkspace, string(ws), events.TypeLeakResponseSet)
	err := h.Log.Read(ctx, subject, 1, func(r events.Record) error {
		d, err := events.DecodeRecord(r)
		if err != nil {
			return err
		}
		p, ok := d.Payload.(*events.LeakResponseSet)
		if !ok {
			return errors.New("not a leak_response_set event")
		}
		mode, seq = p.Mode, r.Seq
		return nil
	})
	if err != nil {
		return "", 0, fmt.Errorf("read leak response of %s: %w", ws, err)
	}
	return mode, seq, nil
}
