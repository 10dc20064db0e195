package natslog_test

import (
	"testing"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/events/storetest"
)

// TestLog runs the suite every events.Log passes (MemLog's in package events) on the
// JetStream log of an embedded server.
func TestLog(t *testing.T) {
	storetest.Run(t, func(t *testing.T) events.Log { return eventstest.NewJetStreamLog(t) })
}
