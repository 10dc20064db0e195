// Package commands owns keyreg's write side: one command per file (CreateWorkspace,
// CreateKey, UpdateAllowlist, RotateKey, RegisterIdentifier, ...), each with its input
// validation, a pure decide function that turns the current state of an aggregate into
// events, and an append to the event log with optimistic concurrency and retry. It also
// generates key secrets; only their SHA-256 enters the log.
//
// A Handler runs the commands. It reads state through StateReader (LogState folds an
// aggregate's events from the log; the projections may serve it too): a stale read is safe,
// because the append expects each aggregate to be at the version that was read, fails with
// events.ErrConflict otherwise, and the command is retried from a fresh read.
//
// commands depends on events only. It must not import projections, replay or cmd.
package commands
