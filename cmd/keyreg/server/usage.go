package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/cmd/keyreg/usage"
	"github.com/keyreg/keyreg/events"
)

// UsageNodeFile holds, in the data dir, the name under which the node writes the keys'
// use to the usage bucket (usage.Bucket), made at its first start: the node adds to its
// own entries across restarts.
const UsageNodeFile = "usage-node"

// usagePublishTimeout bounds how long a write of the usage bucket waits for its answer.
const usagePublishTimeout = 30 * time.Second

// openUsage makes (or opens) the usage bucket, with the stream's replicas, and the node's
// tracker, which verify then records into.
func (n *Node) openUsage(ctx context.Context) error {
	node, err := usageNodeName(n.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	// Its own JetStream context: a flush's writes that get no answer are dropped after a
	// while rather than kept pending.
	js, err := jetstream.New(n.stream.conn, jetstream.WithPublishAsyncTimeout(usagePublishTimeout))
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	err = retryStart(ctx, n.cfg, "the usage bucket", func(ctx context.Context) (err error) {
		n.usage, err = usage.Open(ctx, js, usage.Options{
			Node: node, Interval: n.cfg.UsageFlushInterval, Replicas: n.cfg.replicas(), Logger: n.cfg.Logger})
		return err
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// usageNodeName reads DATA/UsageNodeFile, or makes it with a new name.
func usageNodeName(dataDir string) (string, error) {
	file := filepath.Join(dataDir, UsageNodeFile)
	b, err := os.ReadFile(file)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	name := events.NewID()
	if err := os.WriteFile(file, []byte(name+"\n"), 0o600); err != nil {
		return "", err
	}
	return name, nil
}
