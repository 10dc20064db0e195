package httpapi

import (
	"context"
	"net/http"
	"slices"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
)

// Webhooks registers webhooks and shows them and their deliveries (the node's webhook
// manager and commands). Lookups of a webhook that does not exist, or was removed, answer
// an error wrapping events.ErrNotFound.
type Webhooks interface {
	// RegisterWebhook checks the URL's addresses, makes the webhook's secret and registers
	// it (c.EventID is the webhook's id). Errors: as commands.Handler.RegisterWebhook.
	RegisterWebhook(ctx context.Context, c commands.RegisterWebhook) (wire.NewWebhook, commands.Result, error)
	// RemoveWebhook removes a webhook. Errors: as commands.Handler.RemoveWebhook.
	RemoveWebhook(ctx context.Context, c commands.RemoveWebhook) (commands.Result, error)
	// Webhooks lists the active webhooks of ws.
	Webhooks(ctx context.Context, ws events.Workspace) ([]wire.Webhook, error)
	// Webhook returns active webhook id of ws.
	Webhook(ctx context.Context, ws events.Workspace, id string) (wire.Webhook, error)
	// Deliveries returns the recorded delivery attempts of webhook id of ws, newest first.
	Deliveries(ctx context.Context, ws events.Workspace, id string, limit int) ([]wire.WebhookDelivery, error)
}

var webhooksTags = []string{"webhooks"}

// WebhookPathParams are the path parameters of one webhook.
type WebhookPathParams struct {
	WS string `path:"ws" doc:"Workspace id"`
	ID string `path:"id" doc:"Webhook id (ULID)"`
}

type webhookOutput struct {
	Location string `header:"Location"`
	Body     wire.Webhook
}

func webhookLocation(ws, id string) string { return "/v1/workspaces/" + ws + "/webhooks/" + id }

func (a *API) registerWebhooks() {
	a.registerAddWebhook()
	a.registerListWebhooks()
	a.registerGetWebhook()
	a.registerRemoveWebhook()
	a.registerWebhookDeliveries()
}

// webhooksReady checks the server delivers webhooks.
func (a *API) webhooksReady() error {
	if a.d.Webhooks == nil {
		return problem(http.StatusConflict, CodeNotSupported, "this server does not deliver webhooks (a read-only server)")
	}
	return nil
}

func (a *API) registerAddWebhook() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "add-webhook", Method: http.MethodPost, Path: "/v1/workspaces/{ws}/webhooks", Tags: webhooksTags, Security: bearer,
		Summary: "Register a webhook", DefaultStatus: http.StatusCreated,
		Description: "Registers an endpoint that receives the workspace's events from the next one on, each POSTed as its CloudEvent and " +
			"signed as Standard Webhooks says (headers webhook-id, webhook-timestamp, webhook-signature), at least once, in order, " +
			"retried with exponential backoff for up to 24 hours. The signing secret is in this response only. URLs on loopback, " +
			"private or link-local addresses are refused unless the server runs with --webhook-allow-private. " +
			"Recorded as a keyreg.webhook.registered.v1 event (without the secret). Needs keyreg.webhooks.write.",
	}, func(ctx context.Context, in *struct {
		WS             string `path:"ws"`
		IdempotencyKey string `header:"Idempotency-Key" doc:"Retry-safe: the same key and body give the same webhook and secret"`
		Body           struct {
			URL   string   `json:"url" doc:"http:// or https:// URL, without user name, password or fragment"`
			Types []string `json:"types,omitempty" doc:"Event types (keyreg.key.revoked.v1), or prefixes of them ending in .* (keyreg.key.*); absent or empty: every event of the workspace"`
		}
	}) (*struct {
		Location string `header:"Location"`
		WriteHeaders
		Body wire.NewWebhook
	}, error) {
		if err := a.writable(); err != nil {
			return nil, err
		}
		if err := a.webhooksReady(); err != nil {
			return nil, err
		}
		p, err := a.authorize(ctx, in.WS, events.PermWebhooksWrite)
		if err != nil {
			return nil, err
		}
		// A webhook receives the workspace's events: registering one reads them, so it
		// needs what reading them needs (else keyreg.webhooks.write alone would read all).
		if !p.admin() && !slices.Contains(p.Permissions, events.PermEventsRead) {
			return nil, problem(http.StatusForbidden, CodeForbidden, "registering a webhook needs "+string(events.PermEventsRead)+
				" as well as "+string(events.PermWebhooksWrite)+": a webhook receives the workspace's events")
		}
		c := callerOf(ctx)
		id := c.eventID
		if id == "" {
			id = events.NewID()
		}
		hook, res, err := a.d.Webhooks.RegisterWebhook(ctx, commands.RegisterWebhook{
			Workspace: in.WS, URL: in.Body.URL, Types: in.Body.Types, EventID: id, Meta: c.meta(p)})
		if err := a.afterWrite(ctx, "register_webhook", res, err); err != nil {
			return nil, err
		}
		return &struct {
			Location string `header:"Location"`
			WriteHeaders
			Body wire.NewWebhook
		}{webhookLocation(in.WS, hook.Webhook.ID), written(res), hook}, nil
	})
}

func (a *API) registerListWebhooks() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "list-webhooks", Method: http.MethodGet, Path: "/v1/workspaces/{ws}/webhooks", Tags: webhooksTags, Security: bearer,
		Summary: "List a workspace's webhooks", Description: "Needs keyreg.webhooks.read or keyreg.webhooks.write.",
	}, func(ctx context.Context, in *struct {
		WS string `path:"ws"`
	}) (*struct {
		Body struct {
			Webhooks []wire.Webhook `json:"webhooks"`
		}
	}, error) {
		if err := a.webhooksReady(); err != nil {
			return nil, err
		}
		if _, err := a.authorize(ctx, in.WS, events.PermWebhooksRead, events.PermWebhooksWrite); err != nil {
			return nil, err
		}
		hooks, err := a.d.Webhooks.Webhooks(ctx, events.Workspace(in.WS))
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		out := &struct {
			Body struct {
				Webhooks []wire.Webhook `json:"webhooks"`
			}
		}{}
		out.Body.Webhooks = hooks
		return out, nil
	})
}

func (a *API) registerGetWebhook() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "get-webhook", Method: http.MethodGet, Path: "/v1/workspaces/{ws}/webhooks/{id}", Tags: webhooksTags, Security: bearer,
		Summary: "Show a webhook", Description: "Needs keyreg.webhooks.read or keyreg.webhooks.write.",
	}, func(ctx context.Context, in *WebhookPathParams) (*webhookOutput, error) {
		if err := a.webhooksReady(); err != nil {
			return nil, err
		}
		if _, err := a.authorize(ctx, in.WS, events.PermWebhooksRead, events.PermWebhooksWrite); err != nil {
			return nil, err
		}
		if _, err := events.ParseID("id", in.ID); err != nil {
			return nil, a.fail(ctx, err)
		}
		h, err := a.d.Webhooks.Webhook(ctx, events.Workspace(in.WS), in.ID)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		return &webhookOutput{Location: webhookLocation(in.WS, in.ID), Body: h}, nil
	})
}

func (a *API) registerRemoveWebhook() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "remove-webhook", Method: http.MethodDelete, Path: "/v1/workspaces/{ws}/webhooks/{id}", Tags: webhooksTags, Security: bearer,
		Summary: "Remove a webhook", DefaultStatus: http.StatusNoContent,
		Description: "Stops its deliveries and deletes its secret and delivery records (keyreg.webhook.removed.v1). Needs keyreg.webhooks.write.",
	}, func(ctx context.Context, in *struct {
		WebhookPathParams
		IdempotencyKey string `header:"Idempotency-Key"`
	}) (*struct{ WriteHeaders }, error) {
		if err := a.writable(); err != nil {
			return nil, err
		}
		if err := a.webhooksReady(); err != nil {
			return nil, err
		}
		p, err := a.authorize(ctx, in.WS, events.PermWebhooksWrite)
		if err != nil {
			return nil, err
		}
		c := callerOf(ctx)
		res, err := a.d.Webhooks.RemoveWebhook(ctx, commands.RemoveWebhook{Workspace: in.WS, ID: in.ID, EventID: c.eventID, Meta: c.meta(p)})
		if err := a.afterWrite(ctx, "remove_webhook", res, err); err != nil {
			return nil, err
		}
		return &struct{ WriteHeaders }{written(res)}, nil
	})
}

func (a *API) registerWebhookDeliveries() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "list-webhook-deliveries", Method: http.MethodGet, Path: "/v1/workspaces/{ws}/webhooks/{id}/deliveries", Tags: webhooksTags, Security: bearer,
		Summary: "Show a webhook's recent delivery attempts",
		Description: "Newest first: each attempt's event, status code or error, and the next retry. The last 64 attempts per webhook " +
			"are kept, for 7 days. Needs keyreg.webhooks.read or keyreg.webhooks.write.",
	}, func(ctx context.Context, in *struct {
		WebhookPathParams
		Limit int `query:"limit" minimum:"1" maximum:"64" default:"64" doc:"The most attempts to show"`
	}) (*struct {
		Body struct {
			Deliveries []wire.WebhookDelivery `json:"deliveries"`
		}
	}, error) {
		if err := a.webhooksReady(); err != nil {
			return nil, err
		}
		if _, err := a.authorize(ctx, in.WS, events.PermWebhooksRead, events.PermWebhooksWrite); err != nil {
			return nil, err
		}
		if _, err := events.ParseID("id", in.ID); err != nil {
			return nil, a.fail(ctx, err)
		}
		ds, err := a.d.Webhooks.Deliveries(ctx, events.Workspace(in.WS), in.ID, in.Limit)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		out := &struct {
			Body struct {
				Deliveries []wire.WebhookDelivery `json:"deliveries"`
			}
		}{}
		out.Body.Deliveries = ds
		return out, nil
	})
}
