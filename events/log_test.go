package events_test

import (
	"testing"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/events/storetest"
)

func TestMemLog(t *testing.T) {
	storetest.Run(t, func(t *testing.T) events.Log { return events.NewMemLog() })
}

func TestJetStreamLog(t *testing.T) {
	storetest.Run(t, func(t *testing.T) events.Log { return eventstest.NewJetStreamLog(t) })
}
