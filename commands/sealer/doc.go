// Package sealer seals the audit log: a Sealer appends checkpoints of the audit Merkle
// tree (its size and root hash, signed with the node's ed25519 audit key as a
// golang.org/x/mod/sumdb/note) to the stream, periodically and on demand for exports, and
// signs export statements. It also keeps the audit key pair in a data dir
// (<data>/audit/signing.key and verifier.key).
//
// It declares the small interfaces it consumes: Tree (the audit tree of the views, served
// by the projections' Pebble store), Waiter (waits until the views have applied a stream
// sequence, served by the projector) and Lease (one sealer per stream, served by the NATS
// KV lease of events/natslog). The binary wires the concrete ones in.
//
// sealer depends on events and commands only: it must not import projections, replay,
// cmd, or a NATS package.
package sealer
