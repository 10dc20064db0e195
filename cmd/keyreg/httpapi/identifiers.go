package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
)

// IdentifierPathParams are the path parameters of one identifier.
type IdentifierPathParams struct {
	WS string `path:"ws" doc:"Workspace id"`
	ID string `path:"id" doc:"Identifier id (ULID)"`
}

type identifierOutput struct {
	ETag     string `header:"ETag"`
	Location string `header:"Location"`
	Body     wire.Identifier
}

// identifierWriteOutput is the answer to a change of an identifier.
type identifierWriteOutput struct {
	ETag     string `header:"ETag"`
	Location string `header:"Location"`
	WriteHeaders
	Body wire.Identifier
}

type identifiersOutput struct {
	Body struct {
		Identifiers []wire.Identifier `json:"identifiers"`
		Next        string            `json:"next,omitempty" doc:"Pass as after= for the next page; absent on the last page"`
	}
}

// identifiersPage is a page of at most limit identifiers; list holds limit+1 when there
// are more.
func identifiersPage(list []events.IdentifierState, limit int) *identifiersOutput {
	out := &identifiersOutput{}
	if len(list) > limit {
		list = list[:limit]
		out.Body.Next = identifierNext(list[limit-1])
	}
	out.Body.Identifiers = make([]wire.Identifier, 0, len(list))
	for _, s := range list {
		out.Body.Identifiers = append(out.Body.Identifiers, identifierOut(s))
	}
	return out
}

func identifierLocation(ws, id string) string { return "/v1/workspaces/" + ws + "/identifiers/" + id }

var identifiersTags = []string{"identifiers"}

func (a *API) registerIdentifiers() {
	a.registerRegisterIdentifier()
	a.registerListIdentifiers()
	a.registerGetIdentifier()
	a.registerRenameIdentifier()
	a.registerRetireIdentifier()
}

func (a *API) registerRegisterIdentifier() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "register-identifier", Method: http.MethodPost, Path: "/v1/workspaces/{ws}/identifiers", Tags: identifiersTags, Security: bearer,
		Summary: "Register an identifier", DefaultStatus: http.StatusCreated,
		Description: "An app identifier (kind app, with a platform) or an additional API identifier. Names are unique per workspace and kind among active identifiers, ignoring case.",
	}, func(ctx context.Context, in *struct {
		WS             string `path:"ws"`
		IdempotencyKey string `header:"Idempotency-Key"`
		Body           struct {
			Kind     string `json:"kind" doc:"app, segment, campaign, canvas, content_card, template, subscription_group or send"`
			Name     string `json:"name"`
			Platform string `json:"platform,omitempty" doc:"For kind app: ios, android, web, ..."`
		}
	}) (*identifierWriteOutput, error) {
		if err := a.writable(); err != nil {
			return nil, err
		}
		p, err := a.authorize(ctx, in.WS, PermIdentifiersWrite)
		if err != nil {
			return nil, err
		}
		c := callerOf(ctx)
		res, err := a.d.Commands.RegisterIdentifier(ctx, commands.RegisterIdentifier{Workspace: in.WS, Kind: in.Body.Kind,
			Name: in.Body.Name, Platform: in.Body.Platform, EventID: c.eventID, Meta: c.meta(p)})
		return a.afterIdentifierWrite(ctx, "register_identifier", in.WS, res, err)
	})
}

func (a *API) registerListIdentifiers() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "list-identifiers", Method: http.MethodGet, Path: "/v1/workspaces/{ws}/identifiers", Tags: identifiersTags, Security: bearer,
		Summary: "List and search identifiers", Description: "Active identifiers, by kind and by name prefix (ignoring case), ordered by kind and name, in pages: pass the answer's next as after= for the next page.",
	}, func(ctx context.Context, in *struct {
		WS   string `path:"ws"`
		Kind string `query:"kind" doc:"Only this kind"`
		Q    string `query:"q" doc:"Name prefix, ignoring case"`
		AsOf string `query:"as_of" doc:"The identifiers active at this moment: an RFC 3339 time or a stream sequence"`
		PageParams
	}) (*identifiersOutput, error) {
		v, err := a.view(ctx, in.WS, PermIdentifiersRead, in.AsOf)
		if err != nil {
			return nil, err
		}
		var kind events.Kind
		if in.Kind != "" {
			if kind, err = events.ParseKind(in.Kind); err != nil {
				return nil, a.fail(ctx, err)
			}
		}
		after, err := identifierAfter(in.After)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		list, err := v.Identifiers(ctx, events.Workspace(in.WS), projections.IdentifierFilter{
			Kind: kind, NamePrefix: in.Q, After: after, Limit: in.limit() + 1})
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		return identifiersPage(list, in.limit()), nil
	})
}

// identifierGetInput is the input of GET .../identifiers/{id}.
type identifierGetInput struct {
	IdentifierPathParams
	AsOf string `query:"as_of" doc:"The identifier as it was at this moment: an RFC 3339 time or a stream sequence; 404 if it did not exist yet"`
}

func (a *API) registerGetIdentifier() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "get-identifier", Method: http.MethodGet, Path: "/v1/workspaces/{ws}/identifiers/{id}", Tags: identifiersTags, Security: bearer,
		Summary: "Show an identifier",
	}, func(ctx context.Context, in *identifierGetInput) (*identifierOutput, error) {
		v, err := a.view(ctx, in.WS, PermIdentifiersRead, in.AsOf)
		if err != nil {
			return nil, err
		}
		return a.identifierResponse(ctx, v, in.WS, in.ID)
	})
}

func (a *API) registerRenameIdentifier() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "rename-identifier", Method: http.MethodPatch, Path: "/v1/workspaces/{ws}/identifiers/{id}", Tags: identifiersTags, Security: bearer,
		Summary: "Rename an identifier",
	}, func(ctx context.Context, in *struct {
		IdentifierPathParams
		IfMatch        string `header:"If-Match"`
		IdempotencyKey string `header:"Idempotency-Key"`
		Body           struct {
			Name string `json:"name"`
		}
	}) (*identifierWriteOutput, error) {
		p, c, version, err := a.beginWrite(ctx, in.WS, PermIdentifiersWrite, in.IfMatch)
		if err != nil {
			return nil, err
		}
		res, err := a.d.Commands.RenameIdentifier(ctx, commands.RenameIdentifier{Workspace: in.WS, IdentifierID: in.ID, Name: in.Body.Name,
			ExpectedVersion: version, EventID: c.eventID, Meta: c.meta(p)})
		return a.afterIdentifierWrite(ctx, "rename_identifier", in.WS, res, err)
	})
}

func (a *API) registerRetireIdentifier() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "retire-identifier", Method: http.MethodDelete, Path: "/v1/workspaces/{ws}/identifiers/{id}", Tags: identifiersTags, Security: bearer,
		Summary: "Retire an identifier", Description: "Its name becomes free again; its history is kept.",
	}, func(ctx context.Context, in *struct {
		IdentifierPathParams
		IfMatch        string `header:"If-Match"`
		IdempotencyKey string `header:"Idempotency-Key"`
	}) (*identifierWriteOutput, error) {
		p, c, version, err := a.beginWrite(ctx, in.WS, PermIdentifiersWrite, in.IfMatch)
		if err != nil {
			return nil, err
		}
		res, err := a.d.Commands.RetireIdentifier(ctx, commands.RetireIdentifier{Workspace: in.WS, IdentifierID: in.ID,
			ExpectedVersion: version, EventID: c.eventID, Meta: c.meta(p)})
		return a.afterIdentifierWrite(ctx, "retire_identifier", in.WS, res, err)
	})
}

// afterIdentifierWrite answers a command on identifier res.ID with the identifier as it
// is now (as it was after the command, for a retry answered from the log: see
// answerView).
func (a *API) afterIdentifierWrite(ctx context.Context, name, ws string, res commands.Result, err error) (*identifierWriteOutput, error) {
	if err := a.afterWrite(ctx, name, res, err); err != nil {
		return nil, err
	}
	v, err := a.answerView(ctx, res)
	if err != nil {
		return nil, err
	}
	s, err := a.identifierResponse(ctx, v, ws, res.ID)
	if err != nil {
		return nil, err
	}
	if a.movedOn(res, s.Body.Version) { // as afterKeyWrite: as the command left it
		if v, err := a.commandView(ctx, res); err == nil {
			if then, err := a.identifierResponse(ctx, v, ws, res.ID); err == nil && then.Body.Version == res.Version {
				s = then
			}
		}
	}
	return &identifierWriteOutput{ETag: s.ETag, Location: s.Location, WriteHeaders: written(res), Body: s.Body}, nil
}

// identifierResponse answers identifier id of ws as view v has it; with an ETag when v
// is current.
func (a *API) identifierResponse(ctx context.Context, v readView, ws, id string) (*identifierOutput, error) {
	s, err := v.Identifier(ctx, events.Workspace(ws), id)
	if err != nil {
		return nil, a.fail(ctx, err)
	}
	out := &identifierOutput{Location: identifierLocation(ws, id), Body: identifierOut(s)}
	if v.current {
		out.ETag = etag(s.Version)
	}
	return out, nil
}
