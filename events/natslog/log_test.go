package natslog_test

import (
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

// TestLogGroup runs the group commit suite on the JetStream log (atomic batches), and the
// Log suite on a GroupLog over it.
func TestLogGroup(t *testing.T) {
	newLog := func(t *testing.T) *natslog.Log { return eventstest.StartEmbedded(t, t.TempDir()).Log }
	storetest.RunGroup(t, func(t *testing.T) events.GroupedLog { return newLog(t) })
	t.Run("GroupLog", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) events.Log { return events.NewGroupLog(newLog(t)) })
	})
}
