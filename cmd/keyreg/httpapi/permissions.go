package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
)

type permissionsOutput struct {
	Body wire.PermissionList
}

type permissionOutput struct {
	ETag     string `header:"ETag"`
	Location string `header:"Location"`
	WriteHeaders
	Body wire.Permission
}

func permissionOut(p events.PermissionInfo) wire.Permission {
	return wire.Permission{Name: string(p.Name), Description: p.Description, Group: p.Group, Workspace: string(p.Workspace)}
}

// grantor is the caller as the grantor of permissions (see commands.Grantor).
func (p principal) grantor() *commands.Grantor {
	return &commands.Grantor{Admin: p.admin(), Permissions: p.Permissions}
}

var permissionsTags = []string{"permissions"}

func (a *API) registerPermissions() {
	a.registerListPermissions()
	a.registerDefinePermission()
}

func (a *API) registerListPermissions() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "list-permissions", Method: http.MethodGet, Path: "/v1/permissions", Tags: permissionsTags, Security: bearer,
		Summary: "List the permissions keys may be granted",
		Description: "The platform's REST endpoint permissions and the registry's keyreg.* permissions; with workspace=WS also that " +
			"workspace's own. Any key may list the built-in ones; a workspace's own need a key of that workspace or keyreg.admin.",
	}, func(ctx context.Context, in *struct {
		Workspace string `query:"workspace" doc:"Also list this workspace's own permissions"`
	}) (*permissionsOutput, error) {
		p, err := a.authenticate(ctx)
		if err != nil {
			return nil, err
		}
		out := &permissionsOutput{}
		cat := events.Catalogue()
		out.Body.Permissions = make([]wire.Permission, 0, len(cat))
		for _, c := range cat {
			out.Body.Permissions = append(out.Body.Permissions, permissionOut(c))
		}
		if in.Workspace == "" {
			return out, nil
		}
		if !p.admin() && string(p.Workspace) != in.Workspace {
			return nil, problem(http.StatusNotFound, CodeNotFound, "workspace "+strconv.Quote(in.Workspace)+" not found")
		}
		ws, err := a.d.Views.Workspace(ctx, events.Workspace(in.Workspace))
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		for _, c := range ws.Permissions {
			out.Body.Permissions = append(out.Body.Permissions, permissionOut(c))
		}
		return out, nil
	})
}

func (a *API) registerDefinePermission() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "define-permission", Method: http.MethodPost, Path: "/v1/workspaces/{ws}/permissions", Tags: permissionsTags, Security: bearer,
		Summary: "Define a permission of the workspace's own", DefaultStatus: http.StatusCreated,
		Description: "Adds a permission the built-in catalogue lacks, for the workspace's keys to be granted. Needs keyreg.keys.write. " +
			"The name is dotted lower case like users.track, neither built in nor keyreg.*. Defining it again with the same " +
			"description changes nothing; permissions are never removed.",
	}, func(ctx context.Context, in *struct {
		WS             string `path:"ws"`
		IdempotencyKey string `header:"Idempotency-Key"`
		Body           struct {
			Name        string `json:"name" doc:"Dotted lower case, e.g. reports.weekly"`
			Description string `json:"description" doc:"What it allows; 1 to 255 bytes of visible UTF-8"`
		}
	}) (*permissionOutput, error) {
		if err := a.writable(); err != nil {
			return nil, err
		}
		p, err := a.authorize(ctx, in.WS, PermKeysWrite)
		if err != nil {
			return nil, err
		}
		c := callerOf(ctx)
		res, err := a.d.Commands.DefinePermission(ctx, commands.DefinePermission{Workspace: in.WS, Name: in.Body.Name,
			Description: in.Body.Description, EventID: c.eventID, Meta: c.meta(p)})
		a.d.Metrics.command("define_permission", err)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		if err := a.waitApplied(ctx, res.Seq); err != nil {
			return nil, a.fail(ctx, err)
		}
		ws, err := a.answerWorkspace(ctx, events.Workspace(in.WS), res)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		for _, d := range ws.Permissions {
			if string(d.Name) == in.Body.Name {
				return &permissionOutput{ETag: etag(ws.Version), Location: "/v1/permissions?workspace=" + in.WS,
					WriteHeaders: written(res), Body: permissionOut(d)}, nil
			}
		}
		return nil, a.fail(ctx, events.ErrNotFound)
	})
}
