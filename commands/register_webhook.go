package commands

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyreg/keyreg/events"
)

// MaxWebhooksPerWorkspace bounds the active webhooks of a workspace: each has a durable
// consumer on the stream and a delivery worker on the node that delivers it.
const MaxWebhooksPerWorkspace = 20

// RegisterWebhook registers a webhook (see events.WebhookRegistered). Its signing secret is
// made and kept by the caller, outside the log, under the webhook's id, which the caller
// therefore chooses: EventID.
type RegisterWebhook struct {
	Workspace string
	URL       string   // events.ParseWebhookURL; the caller checks the address it names
	Types     []string // events.ParseWebhookTypes; empty: every event of the workspace
	EventID   string   // required ULID: the event's id and the webhook's id
	Meta      events.Meta
}

type registerWebhook struct {
	ws    events.Workspace
	id    string
	url   string
	types []string
}

func (c RegisterWebhook) validate() (registerWebhook, error) {
	ws, err := events.ParseWorkspace(c.Workspace)
	if err != nil {
		return registerWebhook{}, err
	}
	u, err := events.ParseWebhookURL(c.URL)
	if err != nil {
		return registerWebhook{}, err
	}
	types, err := events.ParseWebhookTypes(c.Types)
	if err != nil {
		return registerWebhook{}, err
	}
	if c.EventID == "" {
		return registerWebhook{}, events.Invalid("event_id", "", "is required: it is the webhook's id")
	}
	if err := parseEventID(c.EventID); err != nil {
		return registerWebhook{}, err
	}
	return registerWebhook{ws: ws, id: c.EventID, url: u.String(), types: types}, nil
}

func (c registerWebhook) decide(ws events.WorkspaceState, hooks []events.WebhookState, last uint64) ([]change, error) {
	if !ws.Exists() {
		return nil, events.NotFound("workspace", string(c.ws), "")
	}
	active := 0
	for _, h := range hooks {
		if h.ID == c.id {
			return nil, alreadyExists("webhook %s", c.id)
		}
		if h.Active {
			active++
		}
	}
	if active >= MaxWebhooksPerWorkspace {
		return nil, fmt.Errorf("%w: workspace %q has %d active webhooks, the most allowed; remove one first", ErrQuotaExceeded, c.ws, MaxWebhooksPerWorkspace)
	}
	// The expectation covers every webhook of the workspace, so that concurrent
	// registrations cannot pass the limit together.
	return []change{{ws: c.ws, agg: events.AggWebhook, id: c.id, expect: last,
		expectFilter: events.WorkspaceWebhooksFilter(c.ws),
		payload:      events.WebhookRegistered{URL: c.url, Types: c.types}}}, nil
}

// RegisterWebhook registers a webhook. The Result's ID is cmd.EventID; running the command
// again with it returns the earlier Result with Duplicate set.
//
// Errors: *events.ValidationError (fields workspace, url, types, event_id);
// events.ErrNotFound when the workspace does not exist; ErrQuotaExceeded when the workspace
// has MaxWebhooksPerWorkspace active webhooks (wrapping ErrQuotaExceeded); ErrAlreadyExists when EventID was used by
// another command.
func (h *Handler) RegisterWebhook(ctx context.Context, cmd RegisterWebhook) (Result, error) {
	c, err := cmd.validate()
	if err != nil {
		return Result{}, fmt.Errorf("register webhook: %w", err)
	}
	home := target{c.ws, events.AggWebhook, c.id}
	res, err := h.execute(ctx, home, cmd.EventID, cmd.Meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
		ws, err := h.workspace(ctx, c.ws)
		if err != nil {
			return nil, Result{}, err
		}
		hooks, last, err := LogState{Log: h.Log}.Webhooks(ctx, c.ws)
		if err != nil {
			return nil, Result{}, err
		}
		changes, err := c.decide(ws, hooks, last)
		return changes, Result{ID: c.id}, err
	})
	if err != nil {
		return Result{}, fmt.Errorf("register webhook: %w", err)
	}
	return res, nil
}

// RemoveWebhook removes a webhook (see events.WebhookRemoved).
type RemoveWebhook struct {
	Workspace string
	ID        string
	EventID   string // optional ULID; see Handler
	Meta      events.Meta
}

// RemoveWebhook removes webhook cmd.ID of cmd.Workspace. The Result's ID is the webhook's.
//
// Errors: *events.ValidationError (fields workspace, webhook_id, event_id);
// events.ErrNotFound when there is no such webhook, or it was removed already.
func (h *Handler) RemoveWebhook(ctx context.Context, cmd RemoveWebhook) (Result, error) {
	ws, err := events.ParseWorkspace(cmd.Workspace)
	if err != nil {
		return Result{}, fmt.Errorf("remove webhook: %w", err)
	}
	id, err := events.ParseID("webhook_id", cmd.ID)
	if err != nil {
		return Result{}, fmt.Errorf("remove webhook: %w", err)
	}
	if err := parseEventID(cmd.EventID); err != nil {
		return Result{}, fmt.Errorf("remove webhook: %w", err)
	}
	home := target{ws, events.AggWebhook, id}
	res, err := h.execute(ctx, home, cmd.EventID, cmd.Meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
		st, err := LogState{Log: h.Log}.Webhook(ctx, ws, id)
		if err != nil {
			return nil, Result{}, err
		}
		if !st.Active {
			return nil, Result{}, events.NotFound("webhook", id, ws)
		}
		return []change{{ws: ws, agg: events.AggWebhook, id: id, expect: st.Version, prevHash: st.LastHash,
			payload: events.WebhookRemoved{URL: st.URL}}}, Result{ID: id}, nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("remove webhook: %w", err)
	}
	return res, nil
}

// Webhook folds webhook id of ws from the log (its zero state when it was never
// registered).
func (s LogState) Webhook(ctx context.Context, ws events.Workspace, id string) (events.WebhookState, error) {
	var st events.WebhookState
	err := s.fold(ctx, ws, events.AggWebhook, id, st.Apply)
	return st, err
}

// Webhooks folds every webhook of ws from the log, removed ones included, by id, and
// returns the stream sequence of the last webhook event of ws (0: none).
func (s LogState) Webhooks(ctx context.Context, ws events.Workspace) ([]events.WebhookState, uint64, error) {
	byID := map[string]*events.WebhookState{}
	var last uint64
	err := s.Log.Read(ctx, events.WorkspaceWebhooksFilter(ws), 1, func(r events.Record) error {
		d, err := events.DecodeRecord(r)
		if err != nil {
			return err
		}
		_, id := d.Event.Aggregate()
		st := byID[id]
		if st == nil {
			st = &events.WebhookState{}
			byID[id] = st
		}
		last = r.Seq
		return st.Apply(r.Seq, r.Data, d.Event, d.Payload)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("read webhooks of %s: %w", ws, err)
	}
	out := make([]events.WebhookState, 0, len(byID))
	for _, st := range byID {
		out = append(out, *st)
	}
	slices.SortFunc(out, func(a, b events.WebhookState) int { return strings.Compare(a.ID, b.ID) })
	return out, last, nil
}
