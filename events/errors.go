package events

import (
	"errors"
	"fmt"
)

// Sentinel errors, checked with errors.Is.
var (
	// ErrInvalid is returned (wrapped in a *ValidationError) for bad input.
	ErrInvalid = errors.New("events: invalid")
	// ErrConflict means an append's expected aggregate version was stale.
	ErrConflict = errors.New("events: conflict")
	// ErrNotFound means an aggregate or record does not exist.
	ErrNotFound = errors.New("events: not found")
	// ErrClosed is returned by a log that has been closed.
	ErrClosed = errors.New("events: closed")
	// ErrUnavailable means the log cannot take or answer a request now: its stream has no
	// leader or no quorum, or the connection to it is down. Nothing is wrong with the
	// request; it may be retried later. When the error also wraps
	// context.DeadlineExceeded, an append may have been stored all the same (its answer
	// did not come, in time or at all).
	ErrUnavailable = errors.New("events: unavailable")
)

// ValidationError names the field and the bad value of an invalid input. It unwraps to
// ErrInvalid. Value is quoted with %q when printed, so control characters and invalid
// UTF-8 are shown escaped.
type ValidationError struct {
	Field string
	Value string
	Msg   string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Field, e.Value, e.Msg)
}

// Unwrap returns ErrInvalid.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Invalid returns a *ValidationError for field with the given bad value.
func Invalid(field, value, format string, args ...any) error {
	return &ValidationError{Field: field, Value: value, Msg: fmt.Sprintf(format, args...)}
}
