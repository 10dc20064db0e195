package server

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/commands/expiry"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog"
)

// ExpiryConfig says when keys' expiry notices are appended (see commands/expiry).
type ExpiryConfig struct {
	// Warnings are the thresholds before a key's expiry at which keyreg.key.expiring.v1
	// is appended, as --expiry-warnings takes them ("30d,7d,1d"); "" means
	// expiry.DefaultWarnings, "off" none (keyreg.key.expired.v1 is still appended).
	Warnings string
	// ScanInterval is how often the keys are looked through (0: expiry.DefaultInterval;
	// negative: never, no notices at all).
	ScanInterval time.Duration
}

// ParseExpiryWarnings parses --expiry-warnings: "" is the default list, "off" none.
func ParseExpiryWarnings(s string) ([]expiry.Threshold, error) {
	switch s {
	case "":
		s = expiry.DefaultWarnings
	case "off":
		return nil, nil
	}
	t, err := expiry.ParseWarnings(s)
	if err != nil {
		return nil, fmt.Errorf("--expiry-warnings %q: %v", s, err)
	}
	return t, nil
}

// openExpiry makes the expiry scanner and its lease (a lease of its own in the bucket of
// the sealer's, so that one node of a cluster appends the notices).
func (n *Node) openExpiry(ctx context.Context) error {
	if n.cfg.Expiry.ScanInterval < 0 {
		return nil
	}
	thresholds, err := ParseExpiryWarnings(n.cfg.Expiry.Warnings)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	host, _ := os.Hostname()
	var lease *natslog.KVLease
	err = retryStart(ctx, n.cfg, "the expiry scanner's lease bucket", func(ctx context.Context) (err error) {
		lease, err = natslog.OpenKVLease(ctx, n.stream.Log.JetStream(), expiry.LeaseKey, host+"/"+events.NewID(), expiry.DefaultLeaseTTL, n.cfg.replicas())
		return err
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	keys := func(fn func(*events.KeyState) bool) error {
		_, err := n.Store().EachKey(fn)
		return err
	}
	n.expiry = expiry.New(thresholds, n.cfg.Expiry.ScanInterval, keys, n.Commands, lease, n.cfg.Logger, nil)
	return nil
}

// openLeakReports loads the public keys of --leak-report-keys, if given.
func (n *Node) openLeakReports() error {
	if n.cfg.LeakReportKeysFile == "" {
		return nil
	}
	keys, err := httpapi.LoadLeakReportKeys(n.cfg.LeakReportKeysFile)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	n.leakKeys = keys
	return nil
}
