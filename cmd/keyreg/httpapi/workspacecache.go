package httpapi

import (
	"context"
	"errors"
	"sync"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
)

// knownWorkspaces remembers the workspaces the views were found to hold. A workspace is
// never deleted, so views that hold one always will (a rebuilt generation of the views gets
// an API, and so a memory, of its own); only workspaces that exist are remembered, so
// the memory grows with the registry, not with the requests.
type knownWorkspaces struct{ m sync.Map } // events.Workspace -> struct{}

// requireWorkspace returns nil when workspace ws exists, from memory once it was found to,
// else an error wrapping events.ErrNotFound (or the error of the read). It spares an
// admin's requests a read of the views per request. The views may lag behind the log: a
// workspace created a moment ago (on another node of a cluster, say) is looked for in the
// log when the views lack it, so that an admin's first write there is not refused.
func (a *API) requireWorkspace(ctx context.Context, ws events.Workspace) error {
	if _, ok := a.workspaces.m.Load(ws); ok {
		return nil
	}
	_, err := a.d.Views.Workspace(ctx, ws)
	if errors.Is(err, events.ErrNotFound) && a.d.Log != nil {
		st, lerr := commands.LogState{Log: a.d.Log}.Workspace(ctx, ws)
		switch {
		case lerr != nil:
			return lerr
		case st.Exists():
			err = nil
		}
	}
	if err != nil {
		return err
	}
	a.workspaces.m.Store(ws, struct{}{})
	return nil
}
