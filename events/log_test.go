package events_test

import (
	"testing"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/storetest"
)

func TestMemLog(t *testing.T) {
	storetest.Run(t, func(t *testing.T) events.Log { return events.NewMemLog() })
}
