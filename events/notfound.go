package events

import (
	"fmt"
	"strconv"
)

// NotFoundError names what was not found: a workspace, or a key or identifier of a
// workspace. It unwraps to Err, the not-found sentinel of the package that reports it
// (ErrNotFound when Err is nil), so errors.Is with that sentinel keeps working.
type NotFoundError struct {
	What      string    // "workspace", "key" or "identifier"
	ID        string    // the id looked for
	Workspace Workspace // the workspace of a key or identifier; empty for a workspace
	Err       error
}

// NotFound returns a *NotFoundError for what (a "workspace", "key" or "identifier") with
// id in workspace ws, unwrapping to sentinel (ErrNotFound when nil).
func NotFound(what, id string, ws Workspace, sentinel error) error {
	return &NotFoundError{What: what, ID: id, Workspace: ws, Err: sentinel}
}

// Error says what was not found, e.g. `key "01J..." not found in workspace "acme"`.
func (e *NotFoundError) Error() string {
	if e.Workspace == "" || e.What == "workspace" {
		return fmt.Sprintf("%s %s not found", e.What, strconv.Quote(e.ID))
	}
	return fmt.Sprintf("%s %s not found in workspace %s", e.What, strconv.Quote(e.ID), strconv.Quote(string(e.Workspace)))
}

// Unwrap returns Err, or ErrNotFound when Err is nil.
func (e *NotFoundError) Unwrap() error {
	if e.Err == nil {
		return ErrNotFound
	}
	return e.Err
}
