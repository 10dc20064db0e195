package natslog_test

import (
	"context"
	"testing"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/events/natslog"
	"github.com/keyreg/keyreg/events/storetest"
)

// TestLog runs the suite every events.Log passes (MemLog's in package events) on the
// JetStream log of an embedded server.
func TestLog(t *testing.T) {
	storetest.Run(t, func(t *testing.T) events.Log { return eventstest.NewJetStreamLog(t) })
}

// TestLogGroup runs the group commit suite on the JetStream log, with groups in atomic
// batches from two messages on and as it runs by default (small groups one by one), and
// the Log suite on a GroupLog over it.
func TestLogGroup(t *testing.T) {
	newLog := func(t *testing.T, minBatch int) *natslog.Log {
		e := eventstest.StartEmbedded(t, t.TempDir())
		l, err := natslog.Open(context.Background(), e.Conn, natslog.Options{MinBatchMessages: minBatch})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	t.Run("AtomicFromTwo", func(t *testing.T) {
		storetest.RunGroup(t, func(t *testing.T) events.GroupedLog { return newLog(t, 2) })
	})
	t.Run("Default", func(t *testing.T) {
		storetest.RunGroup(t, func(t *testing.T) events.GroupedLog { return newLog(t, 0) })
	})
	t.Run("GroupLog", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) events.Log { return events.NewGroupLog(newLog(t, 2)) })
	})
}
