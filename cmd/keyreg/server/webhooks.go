package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/webhook"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
)

// WebhookConfig configures webhook deliveries (Config.Webhooks).
type WebhookConfig struct {
	// AllowPrivate lets webhooks reach loopback, private and link-local addresses.
	AllowPrivate bool
	// RetryMin, RetryMax and RetryFor are the retry schedule: the first retry after
	// RetryMin, each next one twice as late, at most RetryMax apart, for RetryFor; Timeout
	// bounds each attempt (0: webhook.DefaultRetryMin, DefaultRetryMax, DefaultRetryFor,
	// DefaultTimeout).
	RetryMin, RetryMax, RetryFor, Timeout time.Duration
}

// openWebhooks opens the webhook manager: its buckets, replicated like the stream.
func (n *Node) openWebhooks(ctx context.Context) error {
	wc := n.cfg.Webhooks
	cfg := webhook.Config{JS: n.stream.Log.JetStream(), Log: n.stream.Log, Replicas: n.cfg.replicas(),
		Guard:    webhook.Guard{AllowPrivate: wc.AllowPrivate},
		RetryMin: wc.RetryMin, RetryMax: wc.RetryMax, RetryFor: wc.RetryFor, Timeout: wc.Timeout, Logger: n.cfg.Logger,
		Metrics: n.metrics.Registry()}
	err := retryStart(ctx, n.cfg, "the webhook buckets", func(ctx context.Context) (err error) {
		n.hooks, err = webhook.Open(ctx, cfg)
		return err
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// nodeWebhooks serves httpapi.Webhooks with a node's commands, log and webhook manager.
// Reads fold the workspace's webhook events from the log, so every node answers alike.
type nodeWebhooks struct{ n *Node }

// RegisterWebhook implements httpapi.Webhooks: it checks the URL's addresses, stores the
// secret under the webhook's id, then appends the registration.
func (w nodeWebhooks) RegisterWebhook(ctx context.Context, c commands.RegisterWebhook) (wire.NewWebhook, commands.Result, error) {
	// Everything the command checks is checked before a secret is made; the host's
	// addresses (a DNS lookup) last.
	if _, err := events.ParseWorkspace(c.Workspace); err != nil {
		return wire.NewWebhook{}, commands.Result{}, err
	}
	if _, err := events.ParseWebhookURL(c.URL); err != nil {
		return wire.NewWebhook{}, commands.Result{}, err
	}
	if _, err := events.ParseWebhookTypes(c.Types); err != nil {
		return wire.NewWebhook{}, commands.Result{}, err
	}
	if err := w.n.hooks.Guard().CheckURL(ctx, c.URL); err != nil {
		return wire.NewWebhook{}, commands.Result{}, err
	}
	secret, err := w.n.hooks.Secret(ctx, c.EventID)
	if err != nil {
		return wire.NewWebhook{}, commands.Result{}, err
	}
	res, err := w.n.Commands.RegisterWebhook(ctx, c)
	if err != nil {
		w.dropSecret(ctx, c, err)
		return wire.NewWebhook{}, res, err
	}
	st, err := commands.LogState{Log: w.n.Log}.Webhook(ctx, events.Workspace(c.Workspace), res.ID)
	if err != nil {
		return wire.NewWebhook{}, res, err
	}
	return wire.NewWebhook{Webhook: webhookOut(st), Secret: secret}, res, nil
}

// dropSecret deletes the secret made for a registration that was refused for good (a
// limit, a workspace that does not exist, an event id used by another command) and left
// no webhook. After any other failure (the outcome unknown) the secret stays: the
// registration may yet be stored, or be retried with the same Idempotency-Key.
func (w nodeWebhooks) dropSecret(ctx context.Context, c commands.RegisterWebhook, err error) {
	if !errors.Is(err, commands.ErrQuotaExceeded) && !errors.Is(err, events.ErrNotFound) &&
		!errors.Is(err, events.ErrInvalid) && !errors.Is(err, commands.ErrAlreadyExists) {
		return
	}
	st, rerr := commands.LogState{Log: w.n.Log}.Webhook(ctx, events.Workspace(c.Workspace), c.EventID)
	if rerr == nil && !st.Exists() {
		w.n.hooks.DropSecret(ctx, c.EventID)
	}
}

// RemoveWebhook implements httpapi.Webhooks. Every node's manager stops its deliveries and
// deletes its consumer, secret and delivery records when it sees the removal.
func (w nodeWebhooks) RemoveWebhook(ctx context.Context, c commands.RemoveWebhook) (commands.Result, error) {
	return w.n.Commands.RemoveWebhook(ctx, c)
}

// Webhooks implements httpapi.Webhooks.
func (w nodeWebhooks) Webhooks(ctx context.Context, ws events.Workspace) ([]wire.Webhook, error) {
	hooks, _, err := commands.LogState{Log: w.n.Log}.Webhooks(ctx, ws)
	if err != nil {
		return nil, err
	}
	out := []wire.Webhook{}
	for _, h := range hooks {
		if h.Active {
			out = append(out, webhookOut(h))
		}
	}
	return out, nil
}

// Webhook implements httpapi.Webhooks.
func (w nodeWebhooks) Webhook(ctx context.Context, ws events.Workspace, id string) (wire.Webhook, error) {
	st, err := commands.LogState{Log: w.n.Log}.Webhook(ctx, ws, id)
	if err != nil {
		return wire.Webhook{}, err
	}
	if !st.Active {
		return wire.Webhook{}, events.NotFound("webhook", id, ws)
	}
	return webhookOut(st), nil
}

// Deliveries implements httpapi.Webhooks.
func (w nodeWebhooks) Deliveries(ctx context.Context, ws events.Workspace, id string, limit int) ([]wire.WebhookDelivery, error) {
	if _, err := w.Webhook(ctx, ws, id); err != nil {
		return nil, err
	}
	return w.n.hooks.Deliveries(ctx, id, limit)
}

func webhookOut(st events.WebhookState) wire.Webhook {
	return wire.Webhook{ID: st.ID, Workspace: string(st.Workspace), URL: st.URL, Types: st.Types, Active: st.Active,
		CreatedAt: st.CreatedAt, CreatedBy: st.CreatedBy, Version: st.Version}
}
