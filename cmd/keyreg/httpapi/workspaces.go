package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
)

type workspaceOutput struct {
	ETag     string `header:"ETag"`
	Location string `header:"Location"`
	WriteHeaders
	Body wire.Workspace
}

type workspacesOutput struct {
	Body struct {
		Workspaces []wire.Workspace `json:"workspaces"`
		Next       string           `json:"next,omitempty" doc:"Pass as after= for the next page; absent on the last page"`
	}
}

var workspacesTags = []string{"workspaces"}

func (a *API) registerWorkspaces() {
	a.registerCreateWorkspace()
	a.registerListWorkspaces()
}

func (a *API) registerCreateWorkspace() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "create-workspace", Method: http.MethodPost, Path: "/v1/workspaces", Tags: workspacesTags, Security: bearer,
		Summary: "Create a workspace", Description: "Needs keyreg.admin.", DefaultStatus: http.StatusCreated,
	}, func(ctx context.Context, in *struct {
		IdempotencyKey string `header:"Idempotency-Key"`
		Body           struct {
			ID   string `json:"id" doc:"Slug [a-z0-9][a-z0-9-]{0,62}; a NATS subject token"`
			Name string `json:"name"`
		}
	}) (*workspaceOutput, error) {
		if err := a.writable(); err != nil {
			return nil, err
		}
		p, err := a.requireAdmin(ctx)
		if err != nil {
			return nil, err
		}
		c := callerOf(ctx)
		res, err := a.d.Commands.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: in.Body.ID, Name: in.Body.Name, EventID: c.eventID, Meta: c.meta(p)})
		a.d.Metrics.command("create_workspace", err)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		if err := a.waitApplied(ctx, res.Seq); err != nil {
			return nil, a.fail(ctx, err)
		}
		ws, err := a.answerWorkspace(ctx, events.Workspace(res.ID), res)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		return &workspaceOutput{ETag: etag(ws.Version), Location: "/v1/workspaces/" + string(ws.ID), WriteHeaders: written(res), Body: workspaceOut(ws)}, nil
	})
}

func (a *API) registerListWorkspaces() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "list-workspaces", Method: http.MethodGet, Path: "/v1/workspaces", Tags: workspacesTags, Security: bearer,
		Summary: "List workspaces", Description: "An admin key sees every workspace; any other key sees its own. Ordered by id, in pages: pass the answer's next as after= for the next page.",
	}, func(ctx context.Context, in *struct{ PageParams }) (*workspacesOutput, error) {
		p, err := a.authenticate(ctx)
		if err != nil {
			return nil, err
		}
		after, err := workspaceAfter(in.After)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		var list []events.WorkspaceState
		switch {
		case p.admin():
			list, err = a.d.Views.Workspaces(after, in.limit()+1)
		case p.Workspace > after:
			var own events.WorkspaceState
			own, err = a.d.Views.Workspace(ctx, p.Workspace)
			list = []events.WorkspaceState{own}
		}
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		out := &workspacesOutput{}
		if len(list) > in.limit() {
			list = list[:in.limit()]
			out.Body.Next = string(list[len(list)-1].ID)
		}
		out.Body.Workspaces = make([]wire.Workspace, 0, len(list))
		for _, ws := range list {
			out.Body.Workspaces = append(out.Body.Workspaces, workspaceOut(ws))
		}
		return out, nil
	})
}
