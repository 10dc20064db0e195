package cli

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/webhook"
)

// addWebhookFlags adds serve's webhook delivery flags.
func addWebhookFlags(f *pflag.FlagSet, c *server.WebhookConfig) {
	f.BoolVar(&c.AllowPrivate, "webhook-allow-private", false, "let webhooks reach loopback, private and link-local addresses (tests, private networks)")
	f.DurationVar(&c.RetryMin, "webhook-retry-min", webhook.DefaultRetryMin, "pause before a failed webhook delivery's first retry; each next pause is twice as long")
	f.DurationVar(&c.RetryMax, "webhook-retry-max", webhook.DefaultRetryMax, "the longest pause between two attempts of a webhook delivery")
	f.DurationVar(&c.RetryFor, "webhook-retry-for", webhook.DefaultRetryFor, "how long a failing webhook delivery is retried before it is given up")
	f.DurationVar(&c.Timeout, "webhook-timeout", webhook.DefaultTimeout, "how long one webhook delivery attempt may take")
}

// checkWebhookFlags refuses durations that are not positive.
func checkWebhookFlags(c server.WebhookConfig) error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--webhook-retry-min", c.RetryMin}, {"--webhook-retry-max", c.RetryMax}, {"--webhook-retry-for", c.RetryFor}, {"--webhook-timeout", c.Timeout}} {
		if d.v <= 0 {
			return usagef("%s %v: use a positive duration, e.g. 5s", d.name, d.v)
		}
	}
	if c.RetryMax < c.RetryMin {
		return usagef("--webhook-retry-max %s: less than --webhook-retry-min %s", c.RetryMax, c.RetryMin)
	}
	return nil
}
