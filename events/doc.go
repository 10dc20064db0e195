// Package events is the bottom of keyreg: the domain's value types, the versioned event
// types and their payloads, the CloudEvents 1.0 envelope, the NATS subject scheme, hashing,
// the secret format, the aggregate state folds, the text of the audit tree's signed
// checkpoints, and the event log (an interface with a
// JetStream implementation, an in-memory one, and the embedded NATS server with the
// read-only rights of its subscribers).
//
// It must not import any other keyreg package.
package events
