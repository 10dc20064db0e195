package eventstest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
)

// Fill appends n valid events to log, fast, in atomic batches of 500: workspace ws, then
// keys, each created and then given nine allowlist updates. It is for benchmarks and
// tests that need a long stream.
func Fill(t testing.TB, log events.Log, ws events.Workspace, n int) {
	t.Helper()
	FillLarge(t, log, ws, n, 1)
}

// FillLarge is Fill with allowlists of `entries` addresses (1 to events.MaxAllowlist): each
// allowlist update then holds 2×entries of them, about 40 bytes each in the event.
func FillLarge(t testing.TB, log events.Log, ws events.Workspace, n, entries int) {
	t.Helper()
	ctx := context.Background()
	var msgs []events.Message
	flush := func() {
		if len(msgs) > 0 {
			if _, err := log.Append(ctx, msgs); err != nil {
				t.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	add := func(agg events.Aggregate, id string, p events.Payload, prev string) string {
		e, err := events.NewEvent(ws, agg, id, p, events.Meta{Actor: "fill"}, prev, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		data, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, events.Message{Subject: events.Subject(ws, agg, id, e.Type), ID: e.ID, Data: data})
		if len(msgs) == 500 {
			flush()
		}
		return events.Hash(data)
	}
	add(events.AggWorkspace, string(ws), events.WorkspaceCreated{Name: string(ws)}, "")
	for i := 1; i < n; {
		id := events.NewID()
		nets := []string{fmt.Sprintf("10.%d.%d.0/24", i%256, (i/256)%256)}
		for j := 1; j < entries; j++ {
			nets = append(nets, fmt.Sprintf("172.16.%d.%d/32", j/256, j%256))
		}
		allow, err := events.ParseAllowlist(nets)
		if err != nil {
			t.Fatal(err)
		}
		prev := add(events.AggKey, id, events.KeyCreated{Name: "k", Permissions: []events.Permission{"users.track"},
			Allowlist: allow, SecretHash: events.HashSecret(fmt.Sprint(i))}, "")
		i++
		for j := 0; j < 9 && i < n; j++ {
			prev = add(events.AggKey, id, events.AllowlistUpdated{Allowlist: allow, Previous: allow}, prev)
			i++
		}
	}
	flush()
}
