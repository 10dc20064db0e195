// Package events is the bottom of keyreg: the domain's value types, the versioned event
// types and their payloads, the CloudEvents 1.0 envelope, the NATS subject scheme, hashing,
// the secret format, the aggregate state folds, and the event log (an interface with a
// JetStream implementation, an in-memory one, and the embedded NATS server).
//
// It must not import any other keyreg package.
package events
