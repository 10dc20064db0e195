// Package sealer seals the audit log: a Sealer appends checkpoints of the audit Merkle
// tree (its size and root hash, signed with the node's ed25519 audit key as a
// golang.org/x/mod/sumdb/note) to the stream, periodically and on demand for exports, and
// signs export statements. It also keeps the audit key pair in a data dir
// (<data>/audit/signing.key and verifier.key).
//
// # One audit identity for a cluster
//
// Every node keeps its own private key: it never leaves the node's data dir (not in the
// stream, not in NATS), so losing a node loses no secret the others need, and no key has
// to be copied between machines. What the cluster shares is the log's record of the keys:
// a node registers its verifier key on start (Register: keyreg.signer.added.v1 on
// keyreg.system.signer.<id>.added, with an event id derived from the key, so a restart
// appends nothing), and an admin retires one (keyreg.signer.retired.v1). The published
// key set is the keys registered and not retired; since every node registers on start,
// it holds each node's key before any of them seals, and a set taken once keeps
// verifying exports after the sealer lease moves to another node.
//
// The log vouches for a key over a part of the log: checkpoints of trees that hold its
// registration and not its retirement (events.SignerState.Vouches). The sealer signs a
// checkpoint only then (ErrNotVouched, ErrKeyRetired otherwise), and an export statement
// only while its key is not retired; a node whose key is retired gives the lease up.
// Verifiers apply the retirement offline: `keyreg audit pubkey --all` prints a retired
// key with "retired=N", and `keyreg audit verify` rejects a checkpoint of a tree that
// holds its key's retirement, so the exports a key signed before its retirement keep
// verifying and a checkpoint it signs later does not. (Offline there is no lower bound: a
// key of a node that sealed before keyreg recorded signers registers on its next start,
// after checkpoints it signed.) The plain `keyreg audit pubkey`
// prints the active keys alone, one a line, the format of the one-key files before.
//
// Sharing one private key between nodes was the alternative: one public key forever, but a
// secret to distribute and rotate by hand, and nothing in the log saying which node
// signed. Per-node keys recorded in the log keep secrets local and make every change of
// the key set an audited event. Not done: a chain in which each new key's registration is
// covered by a checkpoint signed by an already trusted key, so that a reviewer holding an
// old set could learn a new key from an export alone; today a reviewer takes the new set
// out of band.
//
// It declares the small interfaces it consumes: Tree (the audit tree of the views, served
// by the projections' Pebble store), Waiter (waits until the views have applied a stream
// sequence, served by the projector) and Lease (one sealer per stream, served by the NATS
// KV lease of events/natslog). It reads the signers' events from the log itself. The
// binary wires the concrete ones in.
//
// sealer depends on events and commands only: it must not import projections, replay,
// cmd, or a NATS package.
package sealer
