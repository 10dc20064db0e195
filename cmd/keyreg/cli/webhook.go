package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

func newWebhookCmd(g *globals) *cobra.Command {
	cmd := newGroupCmd("webhook", "Send a workspace's events to HTTP endpoints (Standard Webhooks)",
		`A webhook receives the workspace's events from its registration on: each event is POSTed
as its CloudEvent (the JSON of keyreg watch --json and the NATS stream) with the headers
webhook-id (the event id), webhook-timestamp and webhook-signature ("v1," and the base64
HMAC-SHA256 of "id.timestamp.body" under the secret), as the Standard Webhooks
specification says. Deliveries are at least once, in order, retried with exponential
backoff for up to 24 hours. The signing secret (whsec_...) is shown once, when the webhook
is added. URLs on loopback, private or link-local addresses are refused unless the server
runs with --webhook-allow-private.

The workspace is -w/--workspace, else $KEYREG_WORKSPACE. Needs keyreg.webhooks.write to
add and remove, keyreg.webhooks.read to list and show.`,
		`  keyreg webhook add -w acme https://hooks.example.com/keyreg --type 'keyreg.key.*'
  keyreg webhook list -w acme
  keyreg webhook show -w acme 01JDX3...
  keyreg webhook remove -w acme 01JDX3...`)
	ws := addWorkspaceFlag(cmd)
	cmd.AddCommand(newWebhookAddCmd(g, ws), newWebhookListCmd(g, ws), newWebhookShowCmd(g, ws), newWebhookRemoveCmd(g, ws))
	return cmd
}

func newWebhookAddCmd(g *globals, ws *string) *cobra.Command {
	var types []string
	cmd := &cobra.Command{
		Use:   "add URL [--type TYPE ...]",
		Short: "Register a webhook and print its signing secret, once",
		Long: `Registers URL for the workspace's events of the given types: event types
(keyreg.key.revoked.v1) or prefixes of them ending in .* (keyreg.key.*); without --type,
every event. The signing secret is printed once and never again: give it to the receiver.`,
		Example: `  keyreg webhook add -w acme https://hooks.example.com/keyreg --type 'keyreg.key.*'
  keyreg webhook add -w acme https://hooks.example.com/keyreg --json | jq -r .secret`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().StringSliceVar(&types, "type", nil, "an event type or a prefix ending in .* (repeatable; none: every event)")
	w := addWriteFlags(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		wsID, err := g.workspace(*ws)
		if err != nil {
			return err
		}
		h, err := g.client().AddWebhook(cmd.Context(), wsID, args[0], types, w.o)
		if err != nil {
			return err
		}
		if g.json {
			return g.printJSON(h)
		}
		fmt.Fprintf(g.stdout, "Added webhook %s.\n", h.Webhook.ID)
		fmt.Fprintf(g.stdout, "  url:     %s\n", h.Webhook.URL)
		fmt.Fprintf(g.stdout, "  types:   %s\n", webhookTypes(h.Webhook.Types))
		fmt.Fprintf(g.stdout, "  secret:  %s   (shown this once)\n", h.Secret)
		return nil
	}
	return cmd
}

func webhookTypes(types []string) string {
	if len(types) == 0 {
		return "all events"
	}
	return strings.Join(types, ",")
}

func newWebhookListCmd(g *globals, ws *string) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List a workspace's webhooks",
		Example: "  keyreg webhook list -w acme\n  keyreg webhook list -w acme --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			wsID, err := g.workspace(*ws)
			if err != nil {
				return err
			}
			hooks, err := g.client().ListWebhooks(cmd.Context(), wsID)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"webhooks": hooks})
			}
			t := newTable(g.stdout, "ID", "URL", "TYPES", "CREATED", "CREATED BY")
			for _, h := range hooks {
				t.row(h.ID, h.URL, webhookTypes(h.Types), fmtTime(h.CreatedAt), h.CreatedBy)
			}
			return t.flush()
		},
	}
}

func newWebhookShowCmd(g *globals, ws *string) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:     "show ID",
		Short:   "Show a webhook and its recent delivery attempts",
		Example: "  keyreg webhook show -w acme 01JDX3...\n  keyreg webhook show -w acme 01JDX3... --json",
		Args:    cobra.ExactArgs(1),
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "the most delivery attempts to show (1 to 64)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		wsID, err := g.workspace(*ws)
		if err != nil {
			return err
		}
		if limit < 1 || limit > 64 {
			return usagef("--limit %d: use 1 to 64", limit)
		}
		h, err := g.client().GetWebhook(cmd.Context(), wsID, args[0])
		if err != nil {
			return err
		}
		ds, err := g.client().WebhookDeliveries(cmd.Context(), wsID, args[0], limit)
		if err != nil {
			return err
		}
		if g.json {
			return g.printJSON(map[string]any{"webhook": h, "deliveries": ds})
		}
		fmt.Fprintf(g.stdout, "Webhook %s\n  url:      %s\n  types:    %s\n  created:  %s by %s\n\n", h.ID, h.URL, webhookTypes(h.Types), fmtTime(h.CreatedAt), h.CreatedBy)
		return printDeliveries(g, ds)
	}
	return cmd
}

func printDeliveries(g *globals, ds []wire.WebhookDelivery) error {
	t := newTable(g.stdout, "AT", "EVENT", "TYPE", "ATTEMPT", "OUTCOME", "STATUS", "NEXT RETRY", "ERROR")
	for _, d := range ds {
		status := "-"
		if d.StatusCode != 0 {
			status = strconv.Itoa(d.StatusCode)
		}
		t.row(fmtTime(d.At), d.EventID, d.Type, strconv.Itoa(d.Attempt), d.Outcome, status, fmtTimePtr(d.NextRetry, "-"), d.Error)
	}
	return t.flush()
}

func newWebhookRemoveCmd(g *globals, ws *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "remove ID",
		Short:   "Remove a webhook: its deliveries stop, its secret is deleted",
		Example: `  keyreg webhook remove -w acme 01JDX3... --reason "endpoint retired"`,
		Args:    cobra.ExactArgs(1),
	}
	w := addWriteFlags(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		wsID, err := g.workspace(*ws)
		if err != nil {
			return err
		}
		if err := g.client().RemoveWebhook(cmd.Context(), wsID, args[0], w.o); err != nil {
			return err
		}
		if g.json {
			return g.printJSON(map[string]any{"removed": args[0]})
		}
		fmt.Fprintf(g.stdout, "Removed webhook %s.\n", args[0])
		return nil
	}
	return cmd
}
