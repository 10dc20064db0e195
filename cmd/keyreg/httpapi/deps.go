package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/usage"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/projections/keyindex"
	"github.com/keyreg/keyreg/replay"
)

// Deps are what the API runs on. Each part is a small interface of this package, so the
// API can run on other parts than a keyreg node's (cmd/keyreg/server wires the real
// ones: commands.Handler, projections.Store and Projector, the JetStream log).
type Deps struct {
	Commands Commands         // nil serves read-only: writes answer 405
	Views    Views            // the current views
	Waiter   Waiter           // for read-your-writes; nil: answers do not wait
	Log      events.Reader    // event bodies for history, as_of reads, event streams
	Metrics  *Metrics         // nil: no metrics
	Logger   *slog.Logger     // nil: slog.Default()
	Now      func() time.Time // nil: time.Now
	// VerifyFailureRate and VerifyFailureBurst bound the verifies that find no key per
	// end-user address (IPv6: per /64), per second and in bursts; each caller gets 4 and 5
	// times as much (see failureLimiter). 0: 5 per second, bursts of 20.
	VerifyFailureRate  float64
	VerifyFailureBurst int
	// ReadyCheck, when set, reports whether the views serve (projector caught up).
	ReadyCheck func(ctx context.Context) error
	// SSEHeartbeat is how often an idle event stream gets a heartbeat; 0 means
	// DefaultSSEHeartbeat.
	SSEHeartbeat time.Duration
	// Replayer, when set, serves POST and GET /v1/admin/replay.
	Replayer Replayer
	// Backup, when set, serves GET /v1/admin/backup (online backups).
	Backup Backuper
	// Audit writes audit exports and names the sealer's public key.
	Audit AuditDeps
	// TrustedProxies are the peers whose X-Forwarded-For gives the client address (for
	// allowlists, verify limits and actorip); from any other peer it is ignored.
	TrustedProxies []netip.Prefix
	// Subscribers, when set, serves /v1/subscribers (NATS credentials of services);
	// without it those answer 409 not_supported.
	Subscribers Subscribers
	// Webhooks, when set, serves /v1/workspaces/{ws}/webhooks; without it those answer
	// 409 not_supported.
	Webhooks Webhooks
	// SSEMaxPerKey and SSEMaxTotal bound the open event streams per registry key (429
	// beyond) and in all (503 beyond); 0 means DefaultSSEMaxPerKey, DefaultSSEMaxTotal.
	SSEMaxPerKey int
	SSEMaxTotal  int
	// MinSeqWait bounds how long a read with min_seq waits for the views to apply it
	// (then 503 with Retry-After); 0 means DefaultMinSeqWait.
	MinSeqWait time.Duration
	// CommandTimeout bounds each write's command, its append to the stream included (0:
	// DefaultCommandTimeout). Keep it well below the HTTP server's write timeout: a
	// command that runs out of time answers 503 unavailable with Retry-After, saying that
	// the outcome is unknown.
	CommandTimeout time.Duration
	// Usage, when set, records every verify that finds a key and shows the keys' use
	// (last_used_at, last_used_ip, GET .../keys/{id}/usage); without it keys show no use
	// and the usage endpoint answers 409 not_supported.
	Usage Usage
	// LeakReportKeys, when set, serves POST /v1/leaked-keys, checking reports against
	// these keys with Leaks; nil: that endpoint answers 404.
	LeakReportKeys LeakReportKeys
	// Leaks runs leak reports and the workspaces' leak responses (commands.Handler).
	Leaks LeakCommands
}

// Usage records and reads the keys' use, kept outside the stream (usage.Tracker).
type Usage interface {
	// Record notes a verify of key id of ws that answered code for a request from ip. It
	// is on verify's hot path: it must not block on I/O, and should not allocate.
	Record(ws events.Workspace, id, code string, ip netip.Addr, now time.Time)
	// LastUsed returns when the key was last used (to the flush interval) and from which
	// address; ok false if never.
	LastUsed(ws events.Workspace, id string) (at time.Time, ip string, ok bool)
	// Daily returns the key's verifies per outcome on each of the days UTC days up to
	// now's, oldest first.
	Daily(ws events.Workspace, id string, days int, now time.Time) []usage.Day
}

// Commands are the write commands the API runs (commands.Handler). Each returns the
// stream sequence it appended (for read-your-writes) and the errors its commands.Handler
// method documents.
type Commands interface {
	CreateWorkspace(ctx context.Context, c commands.CreateWorkspace) (commands.Result, error)
	DefinePermission(ctx context.Context, c commands.DefinePermission) (commands.Result, error)
	CreateKey(ctx context.Context, c commands.CreateKey) (commands.Result, error)
	UpdateKey(ctx context.Context, c commands.UpdateKey) (commands.Result, error)
	UpdateAllowlist(ctx context.Context, c commands.UpdateAllowlist) (commands.Result, error)
	RotateKey(ctx context.Context, c commands.RotateKey) (commands.Result, error)
	RevokeKey(ctx context.Context, c commands.RevokeKey) (commands.Result, error)
	RegisterIdentifier(ctx context.Context, c commands.RegisterIdentifier) (commands.Result, error)
	RenameIdentifier(ctx context.Context, c commands.RenameIdentifier) (commands.Result, error)
	RetireIdentifier(ctx context.Context, c commands.RetireIdentifier) (commands.Result, error)
}

// Waiter waits until the views have applied a stream sequence (projections.Projector).
type Waiter interface {
	// WaitFor returns once the views have applied seq, or ctx's error.
	WaitFor(ctx context.Context, seq uint64) error
}

// KeyLookup finds the key of a presented secret and judges it (projections.Store.Verify):
// how every request authenticates, and what POST /v1/verify answers.
type KeyLookup interface {
	Verify(secret string, ip netip.Addr, permission events.Permission, now time.Time) keyindex.VerifyResult
	// VerifyDigest judges a secret known by its digest alone (see WithKeyDigest).
	VerifyDigest(d *[32]byte, ip netip.Addr, permission events.Permission, now time.Time) keyindex.VerifyResult
}

// Views are the current views the API reads (projections.Store). Lookups of what does
// not exist answer an error wrapping events.ErrNotFound.
type Views interface {
	KeyLookup
	// Checkpoint is the last stream sequence the views have applied.
	Checkpoint() uint64
	Workspace(ctx context.Context, ws events.Workspace) (events.WorkspaceState, error)
	Workspaces(after events.Workspace, limit int) ([]events.WorkspaceState, error)
	Key(ctx context.Context, ws events.Workspace, id string) (events.KeyState, error)
	Keys(ws events.Workspace, f projections.KeyFilter) ([]events.KeyState, error)
	Identifier(ctx context.Context, ws events.Workspace, id string) (events.IdentifierState, error)
	Identifiers(ws events.Workspace, f projections.IdentifierFilter) ([]events.IdentifierState, error)
	// History and Audit return index entries (stream sequences) of an aggregate's and a
	// workspace's events; the API reads their bodies from Deps.Log.
	History(ws events.Workspace, agg events.Aggregate, id string, after uint64, limit int) ([]projections.HistoryEntry, error)
	Audit(ws events.Workspace, f projections.AuditFilter, after uint64, limit int) ([]projections.HistoryEntry, error)
}

// View answers the reads of keys and identifiers that take as_of: the current views
// (Deps.Views) and the log folded up to a past moment (replay.View) both answer through
// it, with the same filters, order and errors, so each read is written once.
type View interface {
	Key(ctx context.Context, ws events.Workspace, id string) (events.KeyState, error)
	Keys(ctx context.Context, ws events.Workspace, f projections.KeyFilter) ([]events.KeyState, error)
	Identifier(ctx context.Context, ws events.Workspace, id string) (events.IdentifierState, error)
	Identifiers(ctx context.Context, ws events.Workspace, f projections.IdentifierFilter) ([]events.IdentifierState, error)
}

// currentView is the current views as a View.
type currentView struct{ v Views }

func (c currentView) Key(ctx context.Context, ws events.Workspace, id string) (events.KeyState, error) {
	return c.v.Key(ctx, ws, id)
}

func (c currentView) Keys(_ context.Context, ws events.Workspace, f projections.KeyFilter) ([]events.KeyState, error) {
	return c.v.Keys(ws, f)
}

func (c currentView) Identifier(ctx context.Context, ws events.Workspace, id string) (events.IdentifierState, error) {
	return c.v.Identifier(ctx, ws, id)
}

func (c currentView) Identifiers(_ context.Context, ws events.Workspace, f projections.IdentifierFilter) ([]events.IdentifierState, error) {
	return c.v.Identifiers(ws, f)
}

// Exporter writes a workspace's audit export (replay.Exporter on the views and the log).
type Exporter interface {
	// Export writes the export of q to w. Errors: as replay.Exporter.Export, among them
	// replay.ErrNoCheckpoint and projections.ErrNoTree.
	Export(ctx context.Context, w io.Writer, q replay.ExportQuery) (replay.ExportStats, error)
}

// AuditDeps are what the audit endpoints need beyond the views and the log.
type AuditDeps struct {
	// Exporter writes exports; nil: GET .../audit/export answers 503.
	Exporter Exporter
	// VerifierKey is the sealer's public key (note verifier key), served by
	// GET /v1/audit/pubkey; empty: 404.
	VerifierKey string
	// Signers, when set, is the key set the log vouches for: GET /v1/audit/pubkey serves
	// its active keys, and DELETE /v1/audit/signers/{signer} retires one. Without it the
	// published set is VerifierKey alone and retiring answers 409 not_supported.
	Signers AuditSigners
	// Checkpoints, when set, serves GET /v1/audit/checkpoint: the latest checkpoint the
	// views hold (projections.Store); nil: 404.
	Checkpoints CheckpointReader
}

// CheckpointReader reads the latest signed checkpoint of the audit tree
// (projections.Store.SealedCheckpoint); one that does not exist has Version 0.
type CheckpointReader interface {
	SealedCheckpoint(ctx context.Context) (events.CheckpointState, error)
}

// AuditSigners reads and retires the audit signers recorded in the log.
type AuditSigners interface {
	// Signers returns every signer the log holds, retired ones included, in the order of
	// their registration (commands.LogState.Signers).
	Signers(ctx context.Context) ([]events.SignerState, error)
	// RetireSigner retires a verifier key. Errors: as commands.Handler.RetireSigner.
	RetireSigner(ctx context.Context, c commands.RetireSigner) (commands.Result, error)
}
