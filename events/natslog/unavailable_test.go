package natslog_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/events/natslog"
)

// TestUnavailable: while no server serves the stream (here: it was deleted), reads and
// appends fail with an error wrapping events.ErrUnavailable, reads after asking again a
// few times; a read that finds the stream back meanwhile (as a replicated stream just
// created, whose replicas answer a moment later) succeeds.
func TestUnavailable(t *testing.T) {
	e := eventstest.StartEmbedded(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := e.Log.JetStream()
	if err := js.DeleteStream(ctx, events.StreamName); err != nil {
		t.Fatal(err)
	}
	err := e.Log.Read(ctx, ">", 1, func(events.Record) error { return nil })
	if !errors.Is(err, events.ErrUnavailable) {
		t.Fatalf("read without the stream: %v, want events.ErrUnavailable", err)
	}
	_, err = e.Log.Append(ctx, []events.Message{{Subject: "keyreg.a.key.K.created", ID: events.NewID(), Data: []byte("{}")}})
	if !errors.Is(err, events.ErrUnavailable) {
		t.Fatalf("append without the stream: %v, want events.ErrUnavailable", err)
	}

	created := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond) // the read below is asking by then
		_, err := js.CreateStream(ctx, natslog.StreamConfig(1))
		created <- err
	}()
	n := 0
	if err := e.Log.Read(ctx, ">", 1, func(events.Record) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("read while the stream comes back: %d records, %v", n, err)
	}
	if err := <-created; err != nil {
		t.Fatal(err)
	}
}
