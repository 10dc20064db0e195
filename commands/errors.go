package commands

import (
	"errors"
	"fmt"

	"github.com/keyreg/keyreg/events"
)

// Sentinel errors, checked with errors.Is. Invalid input is reported as an
// *events.ValidationError (errors.Is(err, events.ErrInvalid)); a workspace, key or
// identifier that does not exist as an error wrapping events.ErrNotFound (usually an
// *events.NotFoundError); a command that kept meeting concurrent changes returns an error
// wrapping events.ErrConflict.
var (
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
	// ErrForbidden means the caller may not do what the command asks, such as grant a
	// registry permission it does not hold (see GrantError).
	ErrForbidden = errors.New("commands: forbidden")
)

// ErrQuotaExceeded means the workspace holds as many keys or identifiers as the Handler
// allows (see Handler.MaxKeysPerWorkspace); the error is a *QuotaError.
var ErrQuotaExceeded = errors.New("commands: quota exceeded")

// PreconditionError is an ErrPrecondition that gives the aggregate's current version.
type PreconditionError struct {
	Current  uint64 // the aggregate's version: the stream sequence of its last event
	Expected uint64 // the version the command expected
}

func (e *PreconditionError) Error() string {
	return fmt.Sprintf("version is %d, expected %d: %v", e.Current, e.Expected, ErrPrecondition)
}

// Unwrap returns ErrPrecondition.
func (e *PreconditionError) Unwrap() error { return ErrPrecondition }

// NameTakenError is an ErrNameTaken that names the identifier holding the name.
type NameTakenError struct {
	Kind   events.Kind
	Name   string // the name asked for
	Holder string // id of the active identifier that has the name
}

func (e *NameTakenError) Error() string {
	return fmt.Sprintf("%s %q: the name is held by identifier %s: %v", e.Kind, e.Name, e.Holder, ErrNameTaken)
}

// Unwrap returns ErrNameTaken.
func (e *NameTakenError) Unwrap() error { return ErrNameTaken }

// QuotaError is an ErrQuotaExceeded that names the workspace, what it holds too many of
// ("keys" or "identifiers") and the limit.
type QuotaError struct {
	Workspace events.Workspace
	What      string
	Limit     int
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("workspace %q holds %d %s, the most allowed (revoked and retired ones count too)", e.Workspace, e.Limit, e.What)
}

// Unwrap returns ErrQuotaExceeded.
func (e *QuotaError) Unwrap() error { return ErrQuotaExceeded }

// ExistsError says what already exists, e.g. `workspace "acme" already exists`. It
// unwraps to ErrAlreadyExists.
type ExistsError struct {
	What string // e.g. `workspace "acme"`
}

func (e *ExistsError) Error() string { return e.What + " already exists" }

// Unwrap returns ErrAlreadyExists.
func (e *ExistsError) Unwrap() error { return ErrAlreadyExists }

func alreadyExists(format string, args ...any) error {
	return &ExistsError{What: fmt.Sprintf(format, args...)}
}
