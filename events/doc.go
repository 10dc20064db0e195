// Package events is the bottom of keyreg: the domain's value types, the versioned event
// types and their payloads, the CloudEvents 1.0 envelope, the NATS subject scheme, hashing,
// the secret format, the aggregate state folds, the text of the audit tree's signed
// checkpoints, and the event log: the Log interface and an in-memory implementation,
// MemLog. The JetStream implementation is package events/natslog, and the embedded NATS
// server package events/natslog/natsserver.
//
// It must not import any other keyreg package, nor NATS (nats.go, nats-server) or Pebble.
package events
