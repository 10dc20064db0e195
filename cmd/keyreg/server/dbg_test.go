package server_test

import (
	"context"
	"testing"
	"time"
)

func TestDbgTime(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	k := f.createKey(map[string]any{"name": "watched"})
	now := time.Now().UTC()
	r, _ := n.Log.Get(context.Background(), k.Key.Version)
	t.Logf("now %s record %s (%s) created_at %s", now.Format(time.RFC3339Nano), r.Time.Format(time.RFC3339Nano), r.Time.Location(), k.Key.CreatedAt)
}
