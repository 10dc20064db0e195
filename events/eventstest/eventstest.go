// Package eventstest starts real event logs for tests: an embedded NATS JetStream server
// with its store under t.TempDir(), torn down when the test ends.
package eventstest

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
)

// Embedded is a running embedded server with an in-process connection and the log on it.
type Embedded struct {
	Server *natsserver.Server
	Conn   *nats.Conn
	Log    *natslog.Log
	Dir    string
}

// StartEmbedded starts an embedded NATS server with JetStream (fsync before ack, as in
// production) under dir, connects in-process and opens the log. Cleanup is registered.
func StartEmbedded(t testing.TB, dir string) *Embedded {
	t.Helper()
	s, err := natsserver.Start(natsserver.Options{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := natsserver.ConnectInProcess(s)
	if err != nil {
		s.Shutdown()
		t.Fatal(err)
	}
	log, err := natslog.Open(context.Background(), nc, natslog.Options{})
	if err != nil {
		nc.Close()
		s.Shutdown()
		t.Fatal(err)
	}
	e := &Embedded{Server: s, Conn: nc, Log: log, Dir: dir}
	t.Cleanup(e.Stop)
	return e
}

// Stop closes the connection and shuts the server down; calling it twice is harmless.
func (e *Embedded) Stop() {
	e.Conn.Close()
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}

// NewJetStreamLog returns a JetStream log on a fresh embedded server.
func NewJetStreamLog(t testing.TB) events.Log {
	t.Helper()
	return StartEmbedded(t, t.TempDir()).Log
}
