package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

// Subscribers manages the NATS credentials of subscribing services (the node that serves
// the API, with an embedded NATS server that listens for them).
type Subscribers interface {
	// AddSubscriber adds a subscriber and returns it with its new password once it can
	// connect. Errors: as commands.Handler.AddSubscriber.
	AddSubscriber(ctx context.Context, name string, maxConsumers int, meta events.Meta) (wire.NewSubscriber, error)
	// RemoveSubscriber removes a subscriber; it returns once the subscriber can no longer
	// connect. Errors: as commands.Handler.RemoveSubscriber.
	RemoveSubscriber(ctx context.Context, name string, meta events.Meta) error
	// Subscribers lists the current subscribers by name.
	Subscribers(ctx context.Context) []wire.Subscriber
}

var subscribersTags = []string{"subscribers"}

func (a *API) registerSubscribers() {
	a.registerAddSubscriber()
	a.registerListSubscribers()
	a.registerRemoveSubscriber()
}

// subscribersReady checks the caller is an admin and the server manages NATS subscribers.
func (a *API) subscribersReady(ctx context.Context) (principal, error) {
	if err := a.writable(); err != nil {
		return principal{}, err
	}
	p, err := a.requireAdmin(ctx)
	if err != nil {
		return p, err
	}
	if a.d.Subscribers == nil {
		return p, problem(http.StatusConflict, CodeNotSupported, "this server does not manage NATS subscribers: it has no embedded NATS listener (--nats-listen), or uses --nats-url")
	}
	return p, nil
}

func (a *API) registerAddSubscriber() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "add-subscriber", Method: http.MethodPost, Path: "/v1/subscribers", Tags: subscribersTags, Security: bearer,
		Summary: "Give a service NATS credentials of its own", DefaultStatus: http.StatusCreated,
		Description: "Adds a NATS user for a subscribing service, with a new random password shown once in the answer. " +
			"It may read the KEYREG stream, and use only the consumers named <name>-1 to <name>-<max_consumers>. " +
			"Recorded as a keyreg.subscriber.added.v1 event that holds only the password's bcrypt hash. Needs keyreg.admin.",
	}, func(ctx context.Context, in *struct {
		IdempotencyKey string `header:"Idempotency-Key"`
		Body           struct {
			Name         string `json:"name" doc:"1 to 32 lowercase letters, digits or '-', starting with a letter"`
			MaxConsumers int    `json:"max_consumers,omitempty" doc:"How many consumers it may have (default 10, at most 100)"`
		}
	}) (*struct {
		Location string `header:"Location"`
		Body     wire.NewSubscriber
	}, error) {
		p, err := a.subscribersReady(ctx)
		if err != nil {
			return nil, err
		}
		s, err := a.d.Subscribers.AddSubscriber(ctx, in.Body.Name, in.Body.MaxConsumers, callerOf(ctx).meta(p))
		a.d.Metrics.command("add_subscriber", err)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		return &struct {
			Location string `header:"Location"`
			Body     wire.NewSubscriber
		}{"/v1/subscribers/" + s.Name, s}, nil
	})
}

func (a *API) registerListSubscribers() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "list-subscribers", Method: http.MethodGet, Path: "/v1/subscribers", Tags: subscribersTags, Security: bearer,
		Summary: "List the subscribing services' NATS users", Description: "Needs keyreg.admin.",
	}, func(ctx context.Context, in *struct{}) (*struct {
		Body struct {
			Subscribers []wire.Subscriber `json:"subscribers"`
		}
	}, error) {
		if _, err := a.subscribersReady(ctx); err != nil {
			return nil, err
		}
		out := &struct {
			Body struct {
				Subscribers []wire.Subscriber `json:"subscribers"`
			}
		}{}
		out.Body.Subscribers = a.d.Subscribers.Subscribers(ctx)
		return out, nil
	})
}

func (a *API) registerRemoveSubscriber() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "remove-subscriber", Method: http.MethodDelete, Path: "/v1/subscribers/{name}", Tags: subscribersTags, Security: bearer,
		Summary: "Remove a service's NATS user", DefaultStatus: http.StatusNoContent,
		Description: "The subscriber can no longer connect and its open connections are closed (keyreg.subscriber.removed.v1). Needs keyreg.admin.",
	}, func(ctx context.Context, in *struct {
		Name string `path:"name"`
	}) (*struct{}, error) {
		p, err := a.subscribersReady(ctx)
		if err != nil {
			return nil, err
		}
		err = a.d.Subscribers.RemoveSubscriber(ctx, in.Name, callerOf(ctx).meta(p))
		a.d.Metrics.command("remove_subscriber", err)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		return nil, nil
	})
}
