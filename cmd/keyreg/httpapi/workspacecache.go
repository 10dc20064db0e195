package httpapi

import (
	"context"
	"sync"

	"github.com/keyreg/keyreg/events"
)

// knownWorkspaces remembers the workspaces the views were found to hold. A workspace is
// never deleted, so views that hold one always will (a rebuilt generation of the views gets
// an API, and so a memory, of its own); only workspaces that exist are remembered, so
// the memory grows with the registry, not with the requests.
type knownWorkspaces struct{ m sync.Map } // events.Workspace -> struct{}

// requireWorkspace returns nil when the views hold workspace ws, from memory once they were
// found to, else the views' error (events.ErrNotFound when it does not exist). It spares an
// admin's requests a read of the views per request.
func (a *API) requireWorkspace(ctx context.Context, ws events.Workspace) error {
	if _, ok := a.workspaces.m.Load(ws); ok {
		return nil
	}
	if _, err := a.d.Views.Workspace(ctx, ws); err != nil {
		return err
	}
	a.workspaces.m.Store(ws, struct{}{})
	return nil
}
