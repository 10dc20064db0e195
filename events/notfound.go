package events

import (
	"fmt"
	"strconv"
)

// NotFoundError names what was not found: a workspace, or a key or identifier of a
// workspace. It unwraps to ErrNotFound, the one not-found sentinel of keyreg (commands,
// projections and replay all report it).
type NotFoundError struct {
	What      string    // "workspace", "key" or "identifier"
	ID        string    // the id looked for
	Workspace Workspace // the workspace of a key or identifier; empty for a workspace
}

// NotFound returns a *NotFoundError for what (a "workspace", "key" or "identifier") with
// id in workspace ws.
func NotFound(what, id string, ws Workspace) error {
	return &NotFoundError{What: what, ID: id, Workspace: ws}
}

// Error says what was not found, e.g. `key "01J..." not found in workspace "acme"`.
func (e *NotFoundError) Error() string {
	if e.Workspace == "" || e.What == "workspace" {
		return fmt.Sprintf("%s %s not found", e.What, strconv.Quote(e.ID))
	}
	return fmt.Sprintf("%s %s not found in workspace %s", e.What, strconv.Quote(e.ID), strconv.Quote(string(e.Workspace)))
}

// Unwrap returns ErrNotFound.
func (e *NotFoundError) Unwrap() error { return ErrNotFound }
