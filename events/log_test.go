package events_test

import (
	"testing"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/storetest"
)

func TestMemLog(t *testing.T) {
	storetest.Run(t, func(t *testing.T) events.Log { return events.NewMemLog() })
}

// TestMemLogGroup runs the group commit suite on MemLog, and the Log suite on a GroupLog
// over it.
func TestMemLogGroup(t *testing.T) {
	storetest.RunGroup(t, func(t *testing.T) events.GroupedLog { return events.NewMemLog() })
	t.Run("GroupLog", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) events.Log { return events.NewGroupLog(events.NewMemLog()) })
	})
}
