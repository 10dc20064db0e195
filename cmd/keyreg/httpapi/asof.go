package httpapi

import (
	"context"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/replay"
)

// readView is the View a read answers from, with the moment expiry is judged at.
type readView struct {
	View
	at      time.Time
	current bool // the current views (or the state a write's answer shows), not a past moment: answers carry an ETag
}

// view authorizes a read of workspace ws that needs perm and returns the view it answers
// from: the current views, or with asOf (an RFC 3339 time or a stream sequence) the log
// folded up to that moment, which an auditor (keyreg.audit.read) may read too.
func (a *API) view(ctx context.Context, ws string, perm events.Permission, asOf string) (readView, error) {
	if asOf == "" {
		if _, err := a.authorize(ctx, ws, perm); err != nil {
			return readView{}, err
		}
		return a.currentView(), nil
	}
	if _, err := a.authorize(ctx, ws, perm, PermAuditRead); err != nil {
		return readView{}, err
	}
	c, err := replay.ParseCut("as_of", asOf)
	if err != nil {
		return readView{}, a.fail(ctx, err)
	}
	at, err := c.At(ctx, a.d.Log)
	if err != nil {
		return readView{}, a.fail(ctx, err)
	}
	return readView{View: replay.View{Log: a.d.Log, Cut: c}, at: at}, nil
}

// currentView is the current views, judging expiry now.
func (a *API) currentView() readView {
	return readView{View: currentView{a.d.Views}, at: a.d.Now(), current: true}
}
