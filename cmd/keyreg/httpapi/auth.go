package httpapi

import (
	"context"
	"net/http"
	"slices"
	"strconv"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/keyindex"
)

// Registry permissions. keyreg.admin holds in every workspace; the others only in the
// workspace of the key that holds them.
const (
	PermAdmin            events.Permission = "keyreg.admin"
	PermKeysRead         events.Permission = "keyreg.keys.read"
	PermKeysWrite        events.Permission = "keyreg.keys.write"
	PermIdentifiersRead  events.Permission = "keyreg.identifiers.read"
	PermIdentifiersWrite events.Permission = "keyreg.identifiers.write"
	PermAuditRead        events.Permission = "keyreg.audit.read"
	PermEventsRead       events.Permission = "keyreg.events.read"
	PermVerify           events.Permission = "keyreg.verify"
)

// principal is the registry key a request authenticated with.
type principal struct {
	KeyID       string
	Workspace   events.Workspace
	Permissions []events.Permission
}

func (p principal) admin() bool {
	return p.Workspace == events.SystemWorkspace && slices.Contains(p.Permissions, PermAdmin)
}

// authenticate checks the bearer secret against the views, from the caller's address.
func (a *API) authenticate(ctx context.Context) (principal, error) {
	c := callerOf(ctx)
	var r keyindex.VerifyResult
	switch {
	case c.token != "":
		r = a.d.Views.Verify(c.token, c.ip, "", a.d.Now())
	case c.digest != nil:
		r = a.d.Views.VerifyDigest(c.digest, c.ip, "", a.d.Now())
	default:
		return principal{}, unauthorized("missing bearer token: send Authorization: Bearer <secret>")
	}
	switch r.Code {
	case keyindex.CodeValid:
		return principal{KeyID: r.KeyID, Workspace: r.Workspace, Permissions: r.Permissions}, nil
	case keyindex.CodeIPNotAllowed:
		return principal{}, problem(http.StatusForbidden, CodeIPNotAllowed, "this key may not be used from "+c.ip.String())
	case keyindex.CodeRevoked:
		return principal{}, unauthorized("the bearer key is revoked")
	case keyindex.CodeExpired:
		return principal{}, unauthorized("the bearer key has expired")
	case keyindex.CodeMalformed:
		return principal{}, unauthorized("the bearer token is not a keyreg secret (kr_...)")
	}
	return principal{}, unauthorized("the bearer key is not known")
}

func unauthorized(detail string) *Problem {
	p := problem(http.StatusUnauthorized, CodeUnauthorized, detail)
	p.headers = http.Header{"Www-Authenticate": {`Bearer realm="keyreg"`}}
	return p
}

// authorize authenticates the caller and checks it holds perm, or one of the alternatives,
// in workspace ws. A key of another workspace gets 404, as if ws did not exist, so it
// learns nothing about it; an admin key gets 404 for a workspace that does not exist.
func (a *API) authorize(ctx context.Context, ws string, perm events.Permission, alternatives ...events.Permission) (principal, error) {
	p, err := a.authenticate(ctx)
	if err != nil {
		return p, err
	}
	if p.admin() {
		// An admin may act in every workspace, but only in one that exists.
		if err := a.requireWorkspace(ctx, events.Workspace(ws)); err != nil {
			return p, a.fail(ctx, err)
		}
		return p, nil
	}
	if string(p.Workspace) != ws {
		return p, problem(http.StatusNotFound, CodeNotFound, "workspace "+strconv.Quote(ws)+" not found")
	}
	if slices.Contains(p.Permissions, perm) || slices.ContainsFunc(alternatives, func(alt events.Permission) bool {
		return slices.Contains(p.Permissions, alt)
	}) {
		return p, nil
	}
	return p, problem(http.StatusForbidden, CodeForbidden, "this key lacks the permission "+string(perm))
}

// requireAdmin authenticates the caller and checks it holds keyreg.admin.
func (a *API) requireAdmin(ctx context.Context) (principal, error) {
	p, err := a.authenticate(ctx)
	if err != nil {
		return p, err
	}
	if !p.admin() {
		return p, problem(http.StatusForbidden, CodeForbidden, "this needs a key with keyreg.admin in workspace system")
	}
	return p, nil
}

func uitoa(v uint64) string { return strconv.FormatUint(v, 10) }

func parseUint(s string) (uint64, error) { return strconv.ParseUint(s, 10, 64) }
