package commands

import "errors"

// Sentinel errors, checked with errors.Is. Invalid input is reported as an
// *events.ValidationError (errors.Is(err, events.ErrInvalid)); a command that kept meeting
// concurrent changes returns an error wrapping events.ErrConflict.
var (
	// ErrNotFound means the workspace, key or identifier does not exist.
	ErrNotFound = errors.New("commands: not found")
	// ErrAlreadyExists means the workspace already exists, or an EventID was already used
	// by a different command.
	ErrAlreadyExists = errors.New("commands: already exists")
	// ErrNameTaken means an active identifier of the same kind already has the name
	// (compared case-insensitively, see events.FoldName).
	ErrNameTaken = errors.New("commands: name taken")
	// ErrRevoked means the key is revoked and accepts no further change.
	ErrRevoked = errors.New("commands: key revoked")
	// ErrRetired means the identifier is retired and accepts no further change.
	ErrRetired = errors.New("commands: identifier retired")
	// ErrPrecondition means the aggregate's version is not the ExpectedVersion given
	// (HTTP If-Match).
	ErrPrecondition = errors.New("commands: precondition failed")
)
