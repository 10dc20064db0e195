// Package projections owns keyreg's read side: the Pebble-backed views folded from the
// event log (workspaces, keys, the secret-hash index, identifiers with their name index,
// name claims, per-aggregate and per-workspace history indexes, the audit Merkle tree over
// every stream message and its signed checkpoints), the checkpoint that says
// how far they are, the Projector that follows the log and applies its records, the
// queries over the views, and Verify, the hot path that checks a secret against the
// in-memory index of package projections/keyindex (which package projections/verifier
// keeps inside a service).
//
// Every view can be deleted and rebuilt from the log: the views depend only on the records
// applied, never on when or in which batches they were applied, so views built live one
// event at a time are byte-identical to views rebuilt in one big batch.
//
// It imports only events and projections/keyindex (and Pebble). It must never import
// commands, replay or cmd.
//
// # Pebble key layout
//
// Keys are ASCII except for folded names (UTF-8). <ws> is a workspace slug, <id> an
// aggregate id (neither contains '/'), <seq> a stream sequence as 20 zero-padded decimal
// digits (so byte order is numeric order), <hash> the lower-case hex SHA-256 of a secret.
//
//	meta/checkpoint                         last applied stream sequence, in decimal
//	meta/format                             FormatVersion, in decimal (absent: format 1)
//	ws/<ws>                                 events.WorkspaceState
//	key/<ws>/<id>                           events.KeyState
//	secret/<hash>                           "<ws>/<id>" of the key whose current secret, or
//	                                        previous secret after a rotation, has this hash
//	                                        (kept after revocation, so Verify says REVOKED)
//	ident/<ws>/<id>                         events.IdentifierState
//	identname/<ws>/<kind>/<folded>\x00<id>  empty; one per active identifier, where
//	                                        <folded> is events.FoldName of its name
//	nameclaim/<ws>/<claim id>               events.NameClaimState
//	hist/<ws>/<aggregate>/<id>/<seq>        {"type","actor","time"} of each event of an
//	                                        aggregate
//	wshist/<ws>/<seq>                       {"type","actor","time","aggregate","id"} of each
//	                                        event of a workspace
//	tlog/<index>                            32-byte hash of the audit tree at tlog storage
//	                                        index <index> (20 digits); see tree.go
//	wtlog/<ws>/<index>                      32-byte hash of workspace <ws>'s own audit tree
//	                                        (its events only); see tree.go
//	wtseq/<ws>/<seq>                        leaf index (uvarint) of the event <seq> in the
//	                                        tree of <ws>
//	ckpt/latest                             events.CheckpointState of the latest
//	                                        signed checkpoint of the audit tree
//	ckpt/size/<size>                        the same, of every checkpoint, by tree size
//
// States, history entries and checkpoints are in the binary form of codec.go (format 2;
// format 1 stored JSON, which ReadableValue shows). Event bodies stay in the log; the history indexes hold just enough to filter an audit
// query, and the bodies are fetched by sequence (events.Reader.Get).
package projections
