package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
)

// KeyPathParams are the path parameters of one key.
type KeyPathParams struct {
	WS string `path:"ws" doc:"Workspace id"`
	ID string `path:"id" doc:"Key id (ULID)"`
}

type keyOutput struct {
	ETag     string `header:"ETag"`
	Location string `header:"Location"`
	Body     wire.Key
}

type keyWithSecretOutput struct {
	ETag     string `header:"ETag"`
	Location string `header:"Location"`
	WriteHeaders
	Body wire.KeyWithSecret
}

// keyWriteOutput is the answer to a change of a key.
type keyWriteOutput struct {
	ETag     string `header:"ETag"`
	Location string `header:"Location"`
	WriteHeaders
	Body wire.Key
}

type keysOutput struct {
	Body struct {
		Keys []wire.Key `json:"keys"`
		Next string     `json:"next,omitempty" doc:"Pass as after= for the next page; absent on the last page"`
	}
}

type historyOutput struct {
	Body struct {
		Events []wire.HistoryEntry `json:"events"`
		Next   uint64              `json:"next,omitempty" doc:"Pass as after= for the next page; absent on the last page"`
	}
}

func keyLocation(ws, id string) string { return "/v1/workspaces/" + ws + "/keys/" + id }

var keysTags = []string{"keys"}

func (a *API) registerKeys() {
	a.registerCreateKey()
	a.registerListKeys()
	a.registerGetKey()
	a.registerUpdateKey()
	a.registerPutAllowlist()
	a.registerRotateKey()
	a.registerRevokeKey()
	a.registerKeyHistory()
	a.registerKeyUsage()
}

func (a *API) registerCreateKey() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "create-key", Method: http.MethodPost, Path: "/v1/workspaces/{ws}/keys", Tags: keysTags, Security: bearer,
		Summary: "Create a REST API key", DefaultStatus: http.StatusCreated,
		Description: "Creates a key with endpoint permissions and an optional IP allowlist (empty: any address). The secret is in this response only.",
	}, func(ctx context.Context, in *struct {
		WS             string `path:"ws"`
		IdempotencyKey string `header:"Idempotency-Key" doc:"Retry-safe: the same key and body give the same response and no second change"`
		Body           struct {
			Name        string     `json:"name" doc:"1 to 255 bytes of visible UTF-8, stored in NFC; no bidi controls, zero-width or other invisible characters"`
			Permissions []string   `json:"permissions,omitempty" doc:"Permissions from the catalogue (GET /v1/permissions); keyreg.* ones only if the caller holds them"`
			Allowlist   []string   `json:"allowlist,omitempty" doc:"IPv4/IPv6 addresses and CIDR prefixes, at most 1000"`
			ExpiresAt   *time.Time `json:"expires_at,omitempty" doc:"When the key stops working; in the future"`
		}
	}) (*keyWithSecretOutput, error) {
		if err := a.writable(); err != nil {
			return nil, err
		}
		p, err := a.authorize(ctx, in.WS, PermKeysWrite)
		if err != nil {
			return nil, err
		}
		c := callerOf(ctx)
		res, err := a.d.Commands.CreateKey(ctx, commands.CreateKey{
			Workspace: in.WS, Name: in.Body.Name, Permissions: in.Body.Permissions, Allowlist: in.Body.Allowlist,
			ExpiresAt: in.Body.ExpiresAt, EventID: c.eventID, By: p.grantor(), Meta: c.meta(p),
		})
		return a.afterSecretWrite(ctx, "create_key", in.WS, res, err)
	})
}

func (a *API) registerListKeys() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "list-keys", Method: http.MethodGet, Path: "/v1/workspaces/{ws}/keys", Tags: keysTags, Security: bearer,
		Summary: "List a workspace's keys",
	}, func(ctx context.Context, in *struct {
		WS     string `path:"ws"`
		Status string `query:"status" doc:"Only keys with this status: active, revoked or expired"`
		AsOf   string `query:"as_of" doc:"List the keys as they were at this moment: an RFC 3339 time or a stream sequence"`
		PageParams
	}) (*keysOutput, error) {
		v, err := a.view(ctx, in.WS, PermKeysRead, in.AsOf)
		if err != nil {
			return nil, err
		}
		switch in.Status {
		case "", events.StatusActive, events.StatusRevoked, events.StatusExpired:
		default:
			return nil, invalid("status", in.Status, "status must be active, revoked or expired")
		}
		if err := keyAfter(in.After); err != nil {
			return nil, a.fail(ctx, err)
		}
		keys, err := v.Keys(ctx, events.Workspace(in.WS), projections.KeyFilter{Status: in.Status, At: v.at, After: in.After, Limit: in.limit() + 1})
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		return a.keysPage(keys, v, in.limit()), nil
	})
}

// keyGetInput is the input of GET .../keys/{id}.
type keyGetInput struct {
	KeyPathParams
	AsOf string `query:"as_of" doc:"The key as it was at this moment: an RFC 3339 time or a stream sequence; 404 if it did not exist yet"`
}

func (a *API) registerGetKey() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "get-key", Method: http.MethodGet, Path: "/v1/workspaces/{ws}/keys/{id}", Tags: keysTags, Security: bearer,
		Summary: "Show a key",
	}, func(ctx context.Context, in *keyGetInput) (*keyOutput, error) {
		v, err := a.view(ctx, in.WS, PermKeysRead, in.AsOf)
		if err != nil {
			return nil, err
		}
		return a.keyResponse(ctx, v, in.WS, in.ID)
	})
}

func (a *API) registerUpdateKey() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "update-key", Method: http.MethodPatch, Path: "/v1/workspaces/{ws}/keys/{id}", Tags: keysTags, Security: bearer,
		Summary:     "Update a key's name, permissions or expiry",
		Description: "Fields left out stay as they are; expires_at null clears the expiry. All changes are applied together or not at all.",
	}, func(ctx context.Context, in *struct {
		KeyPathParams
		IfMatch        string `header:"If-Match" doc:"The key's ETag; 412 if it changed since"`
		IdempotencyKey string `header:"Idempotency-Key"`
		Body           struct {
			Name        *string      `json:"name,omitempty"`
			Permissions *[]string    `json:"permissions,omitempty"`
			ExpiresAt   NullableTime `json:"expires_at,omitempty"`
		}
	}) (*keyWriteOutput, error) {
		p, c, version, err := a.beginWrite(ctx, in.WS, PermKeysWrite, in.IfMatch)
		if err != nil {
			return nil, err
		}
		cmd := commands.UpdateKey{Workspace: in.WS, KeyID: in.ID, Name: in.Body.Name, Permissions: in.Body.Permissions,
			ExpectedVersion: version, EventID: c.eventID, By: p.grantor(), Meta: c.meta(p)}
		if in.Body.ExpiresAt.Set {
			cmd.SetExpiry, cmd.ExpiresAt = true, in.Body.ExpiresAt.Time
		}
		res, err := a.d.Commands.UpdateKey(ctx, cmd)
		return a.afterKeyWrite(ctx, "update_key", in.WS, res, err)
	})
}

func (a *API) registerPutAllowlist() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "put-allowlist", Method: http.MethodPut, Path: "/v1/workspaces/{ws}/keys/{id}/allowlist", Tags: keysTags, Security: bearer,
		Summary: "Replace a key's IP allowlist", Description: "An empty list allows any address.",
	}, func(ctx context.Context, in *struct {
		KeyPathParams
		IfMatch        string `header:"If-Match"`
		IdempotencyKey string `header:"Idempotency-Key"`
		Body           struct {
			Allowlist []string `json:"allowlist" doc:"IPv4/IPv6 addresses and CIDR prefixes, at most 1000; [] allows any address"`
		}
	}) (*keyWriteOutput, error) {
		p, c, version, err := a.beginWrite(ctx, in.WS, PermKeysWrite, in.IfMatch)
		if err != nil {
			return nil, err
		}
		allow := in.Body.Allowlist
		if allow == nil {
			allow = []string{}
		}
		res, err := a.d.Commands.UpdateAllowlist(ctx, commands.UpdateAllowlist{Workspace: in.WS, KeyID: in.ID, Allowlist: allow,
			ExpectedVersion: version, EventID: c.eventID, Meta: c.meta(p)})
		return a.afterKeyWrite(ctx, "update_allowlist", in.WS, res, err)
	})
}

func (a *API) registerRotateKey() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "rotate-key", Method: http.MethodPost, Path: "/v1/workspaces/{ws}/keys/{id}/rotate", Tags: keysTags, Security: bearer,
		Summary:     "Rotate a key's secret",
		Description: "Issues a new secret, shown in this response only. The old one keeps working for grace_seconds (default 0).",
	}, func(ctx context.Context, in *struct {
		KeyPathParams
		IfMatch        string `header:"If-Match"`
		IdempotencyKey string `header:"Idempotency-Key"`
		Body           *struct {
			GraceSeconds int `json:"grace_seconds,omitempty" doc:"How long the old secret stays valid, 0 to 2592000 (30 days)"`
		}
	}) (*keyWithSecretOutput, error) {
		p, c, version, err := a.beginWrite(ctx, in.WS, PermKeysWrite, in.IfMatch)
		if err != nil {
			return nil, err
		}
		grace := 0
		if in.Body != nil {
			grace = in.Body.GraceSeconds
		}
		res, err := a.d.Commands.RotateKey(ctx, commands.RotateKey{Workspace: in.WS, KeyID: in.ID, GraceSeconds: grace,
			ExpectedVersion: version, EventID: c.eventID, Meta: c.meta(p)})
		return a.afterSecretWrite(ctx, "rotate_key", in.WS, res, err)
	})
}

func (a *API) registerRevokeKey() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "revoke-key", Method: http.MethodDelete, Path: "/v1/workspaces/{ws}/keys/{id}", Tags: keysTags, Security: bearer,
		Summary: "Revoke a key", Description: "The key stops working at once and for good; its history is kept.",
	}, func(ctx context.Context, in *struct {
		KeyPathParams
		IfMatch        string `header:"If-Match"`
		IdempotencyKey string `header:"Idempotency-Key"`
	}) (*keyWriteOutput, error) {
		p, c, version, err := a.beginWrite(ctx, in.WS, PermKeysWrite, in.IfMatch)
		if err != nil {
			return nil, err
		}
		res, err := a.d.Commands.RevokeKey(ctx, commands.RevokeKey{Workspace: in.WS, KeyID: in.ID,
			ExpectedVersion: version, EventID: c.eventID, Meta: c.meta(p)})
		return a.afterKeyWrite(ctx, "revoke_key", in.WS, res, err)
	})
}

func (a *API) registerKeyHistory() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "key-history", Method: http.MethodGet, Path: "/v1/workspaces/{ws}/keys/{id}/history", Tags: keysTags, Security: bearer,
		Summary: "A key's history", Description: "Every event of the key, oldest first, revoked keys included. Needs keyreg.audit.read or keyreg.keys.read.",
	}, func(ctx context.Context, in *struct {
		KeyPathParams
		After uint64 `query:"after" doc:"Only events after this stream sequence"`
		Limit int    `query:"limit" minimum:"1" maximum:"1000" default:"100"`
	}) (*historyOutput, error) {
		if _, err := a.authorize(ctx, in.WS, PermKeysRead, PermAuditRead); err != nil {
			return nil, err
		}
		if _, err := a.d.Views.Key(ctx, events.Workspace(in.WS), in.ID); err != nil {
			return nil, a.fail(ctx, err)
		}
		entries, err := a.d.Views.History(events.Workspace(in.WS), events.AggKey, in.ID, in.After, in.Limit+1)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		return a.history(ctx, entries, in.Limit)
	})
}

// keysPage is a page of at most limit keys as view v has them; keys holds limit+1 when
// there are more.
func (a *API) keysPage(keys []events.KeyState, v readView, limit int) *keysOutput {
	out := &keysOutput{}
	if len(keys) > limit {
		keys = keys[:limit]
		out.Body.Next = keys[limit-1].ID
	}
	out.Body.Keys = make([]wire.Key, 0, len(keys))
	for _, k := range keys {
		out.Body.Keys = append(out.Body.Keys, a.withUsage(keyOut(k, v.at), v))
	}
	return out
}

// beginWrite checks the server is writable and the caller may write (perm) in ws, and
// parses If-Match.
func (a *API) beginWrite(ctx context.Context, ws string, perm events.Permission, ifMatch string) (principal, caller, uint64, error) {
	if err := a.writable(); err != nil {
		return principal{}, caller{}, 0, err
	}
	p, err := a.authorize(ctx, ws, perm)
	if err != nil {
		return p, caller{}, 0, err
	}
	version, err := parseIfMatch(ifMatch)
	return p, callerOf(ctx), version, err
}

// afterWrite counts the command name and, when it succeeded, waits until the views have
// applied it.
func (a *API) afterWrite(ctx context.Context, name string, res commands.Result, err error) error {
	a.d.Metrics.command(name, err)
	if err != nil {
		return a.fail(ctx, err)
	}
	if err := a.waitApplied(ctx, res.Seq); err != nil {
		return a.fail(ctx, err)
	}
	return nil
}

// afterKeyWrite answers a command on key res.ID with the key as it is now (as it was
// after the command, for a retry answered from the log: see answerView). When the views
// have applied a later change of the key before the answer (on a cluster, often one made
// on another node), it answers with the key as the command left it, read from the log, so
// that no two changes are answered with the same version (ETag); if the log cannot be
// read now, with the key as it is now.
func (a *API) afterKeyWrite(ctx context.Context, name, ws string, res commands.Result, err error) (*keyWriteOutput, error) {
	if err := a.afterWrite(ctx, name, res, err); err != nil {
		return nil, err
	}
	v, err := a.answerView(ctx, res)
	if err != nil {
		return nil, err
	}
	k, err := a.keyResponse(ctx, v, ws, res.ID)
	if err != nil {
		return nil, err
	}
	if a.movedOn(res, k.Body.Version) {
		if v, err := a.commandView(ctx, res); err == nil {
			if then, err := a.keyResponse(ctx, v, ws, res.ID); err == nil && then.Body.Version == res.Version {
				k = then
			}
		}
	}
	return &keyWriteOutput{ETag: k.ETag, Location: k.Location, WriteHeaders: written(res), Body: k.Body}, nil
}

// movedOn reports whether the current views show the aggregate of a command that
// returned res at a later version (now) than the one the command left it at.
func (a *API) movedOn(res commands.Result, now uint64) bool {
	return !res.Duplicate && now > res.Version && a.d.Log != nil
}

// afterSecretWrite answers a command that made key res.ID a new secret with the key and
// the secret (none for a retry answered from the log: the secret is never stored).
func (a *API) afterSecretWrite(ctx context.Context, name, ws string, res commands.Result, err error) (*keyWithSecretOutput, error) {
	k, err := a.afterKeyWrite(ctx, name, ws, res, err)
	if err != nil {
		return nil, err
	}
	return &keyWithSecretOutput{ETag: k.ETag, Location: k.Location, WriteHeaders: k.WriteHeaders,
		Body: wire.KeyWithSecret{Key: k.Body, Secret: res.Secret}}, nil
}

// keyResponse answers key id of ws as view v has it; with an ETag when v is current.
func (a *API) keyResponse(ctx context.Context, v readView, ws, id string) (*keyOutput, error) {
	k, err := v.Key(ctx, events.Workspace(ws), id)
	if err != nil {
		return nil, a.fail(ctx, err)
	}
	out := &keyOutput{Location: keyLocation(ws, id), Body: a.withUsage(keyOut(k, v.at), v)}
	if v.current {
		out.ETag = etag(k.Version)
	}
	return out, nil
}

// history fetches the event bodies of index entries from the log; limit+1 entries were
// asked for, so a full page says there is more.
func (a *API) history(ctx context.Context, entries []projections.HistoryEntry, limit int) (*historyOutput, error) {
	out := &historyOutput{}
	out.Body.Events = []wire.HistoryEntry{}
	for i, e := range entries {
		if i == limit {
			out.Body.Next = entries[i-1].Seq
			break
		}
		r, err := a.d.Log.Get(ctx, e.Seq)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		out.Body.Events = append(out.Body.Events, wire.HistoryEntry{Sequence: r.Seq, Event: r.Data})
	}
	return out, nil
}
