package httpapi

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/commands/sealer"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/replay"
)

// AuditFilterParams are the filters of the audit log and export.
type AuditFilterParams struct {
	WS    string   `path:"ws" doc:"Workspace id"`
	Key   string   `query:"key" doc:"Only the events of this key (its id)"`
	Actor string   `query:"actor" doc:"Only the events caused by this key id"`
	Type  []string `query:"type,explode" doc:"Only events of these types: keyreg.key.revoked.v1, key.revoked or revoked (repeat, or separate with commas)"`
	Since string   `query:"since" doc:"Only events at or after this time (RFC 3339)"`
	Until string   `query:"until" doc:"Only events at or before this time (RFC 3339)"`
	After uint64   `query:"after" doc:"Only events after this stream sequence (the cursor: next of the previous page)"`
}

// filter checks the parameters and returns the views' filter.
func (p *AuditFilterParams) filter() (projections.AuditFilter, error) {
	var f projections.AuditFilter
	if p.Key != "" {
		id, err := events.ParseID("key", p.Key)
		if err != nil {
			return f, err
		}
		f.KeyID = id
	}
	if p.Actor != "" {
		id, err := events.ParseID("actor", p.Actor)
		if err != nil {
			return f, err
		}
		f.Actor = id
	}
	types, err := parseAuditTypes(p.Type)
	if err != nil {
		return f, err
	}
	f.Types = types
	for _, t := range []struct {
		name string
		in   string
		out  *time.Time
	}{{"since", p.Since, &f.Since}, {"until", p.Until, &f.Until}} {
		if t.in == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339Nano, t.in)
		if err != nil {
			return f, invalid(t.name, t.in, t.name+" must be an RFC 3339 time, e.g. 2026-01-02T15:04:05Z")
		}
		*t.out = v
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return f, invalid("until", p.Until, "until is before since")
	}
	return f, nil
}

// parseAuditTypes reads event types given in full (keyreg.key.revoked.v1), without
// prefix and version (key.revoked), or by name alone (revoked: every type of that name).
func parseAuditTypes(in []string) ([]events.Type, error) {
	var out []events.Type
	for _, v := range in {
		for s := range strings.SplitSeq(v, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			n := len(out)
			for _, t := range events.Types {
				if s == string(t.Type) || s == string(t.Aggregate)+"."+t.Name || s == t.Name {
					out = append(out, t.Type)
				}
			}
			if len(out) == n {
				return nil, invalid("type", s, "unknown event type: give keyreg.key.revoked.v1, key.revoked or revoked, for instance")
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

type pubkeyOutput struct {
	Body struct {
		VerifierKey  string               `json:"verifier_key" doc:"This node's ed25519 verifier key in golang.org/x/mod/sumdb/note format"`
		VerifierKeys []string             `json:"verifier_keys" doc:"The published key set: every key the log vouches for now (registered, not retired), one per node; write them one per line to a file for keyreg audit verify --pubkey @FILE"`
		Signers      []events.SignerState `json:"signers,omitempty" doc:"Every audit signer the log records, retired ones included: key, node, and the stream sequences of its registration and retirement"`
	}
}

// exportSchema describes the body of GET .../audit/export.
var exportSchema = &huma.Schema{
	Type: huma.TypeString,
	Description: "format=jsonl (application/x-ndjson): one line per event, " +
		`{"sequence":N,"leaf_index":N-1,"event":<the CloudEvent as stored>,"proof":["<base64 hash>",...]}, ` +
		"proof being the RFC 6962 inclusion proof of the event in the tree of the export's checkpoint; then a last line " +
		`{"checkpoint":{"tree_size":T,"root_hash":"<base64>","note":"<signed note>"},"statement":"<signed note>","workspace":"<ws>","events":N,"filter":{...}}, ` +
		"statement being the signed statement of what the export holds (its workspace, filter and snapshot sequence, the size and " +
		"root of the workspace's own Merkle tree, and for a key's export the key's last event), which proves an unfiltered or " +
		"key export complete. " +
		"Check it offline with keyreg audit verify. format=csv (text/csv): a header row, then one row per change with the " +
		"columns time, actor, actor_ip, aggregate, change, before, after, sequence, event_id, reason.",
}

var auditTags = []string{"audit"}

func (a *API) registerAudit() {
	a.registerAuditLog()
	a.registerAuditExport()
	a.registerAuditPubkey()
	a.registerAuditCheckpoint()
	a.registerRetireSigner()
}

func (a *API) registerAuditLog() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "audit-log", Method: http.MethodGet, Path: "/v1/workspaces/{ws}/audit", Tags: auditTags, Security: bearer,
		Summary: "A workspace's audit log",
		Description: "The workspace's events, oldest first, as stored CloudEvents with their stream sequence, filtered by key, " +
			"actor, type and time. Page with after=<next>. Needs keyreg.audit.read.",
	}, func(ctx context.Context, in *struct {
		AuditFilterParams
		Limit int `query:"limit" minimum:"1" maximum:"1000" default:"100"`
	}) (*historyOutput, error) {
		if _, err := a.authorize(ctx, in.WS, PermAuditRead); err != nil {
			return nil, err
		}
		f, err := in.filter()
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		entries, err := a.d.Views.Audit(events.Workspace(in.WS), f, in.After, in.Limit+1)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		return a.history(ctx, entries, in.Limit)
	})
}

func (a *API) registerAuditExport() {
	huma.Register(a.huma, a.stream(huma.Operation{
		OperationID: "audit-export", Method: http.MethodGet, Path: "/v1/workspaces/{ws}/audit/export", Tags: auditTags, Security: bearer,
		Summary: "Export a workspace's audit log",
		Description: "Streams the selected events, however many, as JSON Lines with inclusion proofs and a signed checkpoint " +
			"(verifiable offline with keyreg audit verify), or as CSV for reading. The export is a snapshot: events stored " +
			"after it starts are not in it. Needs keyreg.audit.read.",
		Responses: map[string]*huma.Response{
			"200": {Description: "The export", Content: map[string]*huma.MediaType{
				"application/x-ndjson": {Schema: exportSchema}, "text/csv": {Schema: exportSchema}}},
		},
	}), func(ctx context.Context, in *struct {
		AuditFilterParams
		Format string `query:"format" enum:"jsonl,csv" default:"jsonl" doc:"jsonl (with proofs, verifiable) or csv"`
	}) (*huma.StreamResponse, error) {
		if _, err := a.authorize(ctx, in.WS, PermAuditRead); err != nil {
			return nil, err
		}
		f, err := in.filter()
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		if a.d.Audit.Exporter == nil {
			return nil, problem(http.StatusServiceUnavailable, CodeUnavailable, "this server does not export audit logs")
		}
		q := replay.ExportQuery{Workspace: events.Workspace(in.WS), Filter: f, After: in.After, Format: in.Format}
		return &huma.StreamResponse{Body: func(hctx huma.Context) { a.streamExport(hctx, q) }}, nil
	})
}

type checkpointOutput struct {
	Body struct {
		TreeSize uint64    `json:"tree_size" doc:"How many events of the stream (sequences 1 to tree_size) the checkpoint covers"`
		RootHash string    `json:"root_hash" doc:"The root of the audit tree over them, base64"`
		SealedAt time.Time `json:"sealed_at" doc:"When it was sealed"`
		Sequence uint64    `json:"sequence" doc:"The stream sequence of its keyreg.checkpoint.sealed.v1 event"`
		Note     string    `json:"note" doc:"The signed note (golang.org/x/mod/sumdb/note): check it with a key of GET /v1/audit/pubkey"`
	}
}

// registerAuditCheckpoint serves the latest checkpoint to any valid key: reviewers see how
// far the sealed audit tree reaches without reading workspace system.
func (a *API) registerAuditCheckpoint() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "audit-checkpoint", Method: http.MethodGet, Path: "/v1/audit/checkpoint", Tags: auditTags, Security: bearer,
		Summary: "The latest signed checkpoint of the audit tree",
		Description: "The last checkpoint this node's views hold: tree size, root, when it was sealed and its signed note. " +
			"Any valid key may read it; 404 when none is sealed yet.",
	}, func(ctx context.Context, in *struct{}) (*checkpointOutput, error) {
		if _, err := a.authenticate(ctx); err != nil {
			return nil, err
		}
		if a.d.Audit.Checkpoints == nil {
			return nil, problem(http.StatusNotFound, CodeNotFound, "this server does not keep audit checkpoints")
		}
		cp, err := a.d.Audit.Checkpoints.SealedCheckpoint(ctx)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		if !cp.Exists() {
			return nil, problem(http.StatusNotFound, CodeNotFound, "no checkpoint is sealed yet")
		}
		out := &checkpointOutput{}
		out.Body.TreeSize, out.Body.RootHash, out.Body.SealedAt, out.Body.Sequence, out.Body.Note = cp.TreeSize, cp.RootHash, cp.SealedAt, cp.Version, cp.Note
		return out, nil
	})
}

func (a *API) registerAuditPubkey() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "audit-pubkey", Method: http.MethodGet, Path: "/v1/audit/pubkey", Tags: auditTags,
		Summary: "The audit checkpoints' verifier keys",
		Description: "The public keys that check the signatures of the audit checkpoints: the key set the log vouches for " +
			"(each node registers its key on start; keyreg audit signer retire withdraws one). It is public: no token needed.",
	}, func(ctx context.Context, in *struct{}) (*pubkeyOutput, error) {
		out := &pubkeyOutput{}
		out.Body.VerifierKey = a.d.Audit.VerifierKey
		out.Body.VerifierKeys = []string{}
		if a.d.Audit.Signers == nil {
			if a.d.Audit.VerifierKey == "" {
				return nil, problem(http.StatusNotFound, CodeNotFound, "this server does not seal checkpoints")
			}
			out.Body.VerifierKeys = append(out.Body.VerifierKeys, a.d.Audit.VerifierKey)
			return out, nil
		}
		signers, err := a.d.Audit.Signers.Signers(ctx)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		out.Body.Signers = signers
		for _, s := range signers {
			if s.Active() {
				out.Body.VerifierKeys = append(out.Body.VerifierKeys, s.VerifierKey)
			}
		}
		if len(out.Body.VerifierKeys) == 0 {
			return nil, problem(http.StatusNotFound, CodeNotFound, "no audit signer is registered: no node can seal checkpoints")
		}
		return out, nil
	})
}

func (a *API) registerRetireSigner() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "retire-audit-signer", Method: http.MethodDelete, Path: "/v1/audit/signers/{signer}", Tags: auditTags, Security: bearer,
		Summary: "Retire an audit signer's key", DefaultStatus: http.StatusNoContent,
		Description: "Withdraws a verifier key from the published set (keyreg.signer.retired.v1): the log no longer vouches for " +
			"checkpoints it signs of trees that hold the retirement, and its node stops sealing until given a new key. " +
			"signer is the signer's id (GET /v1/audit/pubkey lists them; keyreg audit signer retire takes the key). Needs keyreg.admin.",
	}, func(ctx context.Context, in *struct {
		ID string `path:"signer" doc:"The signer's id (32 hex digits): signers[].id of GET /v1/audit/pubkey"`
	}) (*struct{}, error) {
		if err := a.writable(); err != nil {
			return nil, err
		}
		p, err := a.requireAdmin(ctx)
		if err != nil {
			return nil, err
		}
		if a.d.Audit.Signers == nil {
			return nil, problem(http.StatusConflict, CodeNotSupported, "this server does not record audit signers")
		}
		signers, err := a.d.Audit.Signers.Signers(ctx)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		i := slices.IndexFunc(signers, func(s events.SignerState) bool { return s.ID == in.ID })
		if i < 0 {
			return nil, problem(http.StatusNotFound, CodeNotFound, "no audit signer with id "+strconv.Quote(in.ID)+": GET /v1/audit/pubkey lists them")
		}
		_, err = a.d.Audit.Signers.RetireSigner(ctx, commands.RetireSigner{VerifierKey: signers[i].VerifierKey, Meta: callerOf(ctx).meta(p)})
		a.d.Metrics.command("retire_audit_signer", err)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		return nil, nil
	})
}

// exportWriter sends the status and headers with the first byte of the export, so that an
// export that fails before writing anything still answers with a problem.
type exportWriter struct {
	hctx    huma.Context
	w       http.ResponseWriter
	format  string
	ws      string
	started bool
}

func (e *exportWriter) Write(p []byte) (int, error) {
	if !e.started {
		e.started = true
		ext, ct := "jsonl", "application/x-ndjson"
		if e.format == replay.FormatCSV {
			ext, ct = "csv", "text/csv; charset=utf-8"
		}
		e.hctx.SetHeader("Content-Type", ct)
		e.hctx.SetHeader("Content-Disposition", `attachment; filename="keyreg-audit-`+e.ws+"-"+time.Now().UTC().Format("20060102T150405Z")+"."+ext+`"`)
		e.hctx.SetHeader("Cache-Control", "no-store")
		e.hctx.SetStatus(http.StatusOK)
	}
	return e.w.Write(p)
}

// Flush sends what was written so far.
func (e *exportWriter) Flush() error {
	if !e.started {
		return nil
	}
	return http.NewResponseController(e.w).Flush()
}

func (a *API) streamExport(hctx huma.Context, q replay.ExportQuery) {
	ctx := hctx.Context()
	rw, _ := hctx.BodyWriter().(http.ResponseWriter)
	if rw == nil {
		a.d.Logger.Error("audit export: the response cannot stream")
		return
	}
	w := &exportWriter{hctx: hctx, w: rw, format: q.Format, ws: string(q.Workspace)}
	stats, err := a.d.Audit.Exporter.Export(ctx, w, q)
	switch {
	case err == nil:
		a.d.Logger.Info("audit export", "request_id", callerOf(ctx).requestID, "workspace", q.Workspace, "format", q.Format,
			"events", stats.Events, "checkpoint", stats.Checkpoint.TreeSize)
	case !w.started:
		p := toProblem(err)
		switch {
		case errors.Is(err, replay.ErrNoCheckpoint):
			p = problem(http.StatusServiceUnavailable, CodeUnavailable, "no signed checkpoint of the audit log yet: this server cannot seal one; retry once the sealer has run")
		case errors.Is(err, sealer.ErrNotVouched):
			p = problem(http.StatusServiceUnavailable, CodeUnavailable, "this node cannot sign the export: the log does not vouch for its audit key ("+
				err.Error()+"); export from another node, or give this one a new key (remove <data>/audit/signing.key and restart it)")
		case errors.Is(err, projections.ErrNoTree):
			p = problem(http.StatusServiceUnavailable, CodeUnavailable, "the views predate the workspace audit trees that prove an export complete: an operator must rebuild them (keyreg replay)")
		}
		if p.internal != nil {
			a.d.Logger.Error("audit export failed", "request_id", callerOf(ctx).requestID, "err", p.internal)
		}
		writeProblem(rw, p)
	default:
		// The status is sent: end the export with a line that makes it fail verification
		// (a JSON Lines export then has no checkpoint at its end).
		a.d.Logger.Error("audit export failed midway", "request_id", callerOf(ctx).requestID, "events", stats.Events, "err", err)
		if q.Format == replay.FormatJSONL && ctx.Err() == nil {
			w.Write([]byte(`{"error":"the export failed midway; it is incomplete"}` + "\n"))
		}
	}
}
