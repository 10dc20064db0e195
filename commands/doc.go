// Package commands owns keyreg's write side: one command per file (CreateWorkspace,
// CreateKey, UpdateAllowlist, RotateKey, RegisterIdentifier, ...), each with its input
// validation, a pure decide function that turns the current state of an aggregate into
// events, and an append to the event log with optimistic concurrency and retry. It also
// generates key secrets; only their SHA-256 enters the log.
//
// A Handler runs the commands. It reads state through StateReader: LogState folds an
// aggregate's events from the log (exact, and costlier as the aggregate and the stream
// grow); ViewState reads the views (one local read, possibly stale). A stale read is safe:
// the append expects each aggregate the decision read to be at the version read, fails with
// events.ErrConflict otherwise, and the command is retried on an exact read; a decision that
// no append would check (a refusal, a no-op) is made again on an exact read first.
//
// commands depends on events only. It must not import projections, replay or cmd.
package commands
