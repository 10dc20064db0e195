package commands

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
)

// logImpl is an events.Log implementation the integration tests run against, with the
// Handler's state reader on it (nil: LogState).
type logImpl struct {
	name  string
	new   func(t testing.TB) events.Log
	state func(t testing.TB, log events.Log) StateReader
}

func logImpls() []logImpl {
	return []logImpl{
		{"MemLog", func(testing.TB) events.Log { return events.NewMemLog() }, nil},
		{"JetStream", eventstest.NewJetStreamLog, nil},
		// Group commit: concurrent commands share atomic batches.
		{"JetStreamGroup", func(t testing.TB) events.Log {
			return events.NewGroupLog(eventstest.StartEmbedded(t, t.TempDir()).Log)
		}, nil},
		// Group commit, state read from views (Pebble) that a projector keeps applying
		// and that lag behind the log.
		{"JetStreamGroupViews", func(t testing.TB) events.Log {
			return events.NewGroupLog(eventstest.StartEmbedded(t, t.TempDir()).Log)
		}, func(t testing.TB, log events.Log) StateReader {
			_, st := startViews(t, log)
			return st
		}},
	}
}

// newHandler returns a Handler on a fresh log of impl.
func (impl logImpl) newHandler(t testing.TB) *Handler {
	h := &Handler{Log: impl.new(t)}
	if impl.state != nil {
		h.State = impl.state(t, h.Log)
	}
	return h
}

// forEachLog runs fn as a subtest against a fresh log of each implementation, with a
// Handler on it.
func forEachLog(t *testing.T, fn func(t *testing.T, h *Handler)) {
	t.Helper()
	for _, impl := range logImpls() {
		t.Run(impl.name, func(t *testing.T) {
			if impl.name != "MemLog" && testing.Short() {
				t.Skip("short: no JetStream")
			}
			fn(t, impl.newHandler(t))
		})
	}
}

// newLog returns a fresh in-memory log.
func newLog(t testing.TB) events.Log {
	t.Helper()
	return events.NewMemLog()
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustWorkspace(t testing.TB, h *Handler, ws string) {
	t.Helper()
	if _, err := h.CreateWorkspace(testCtx(t), CreateWorkspace{Workspace: ws, Name: "Workspace " + ws}); err != nil {
		t.Fatal(err)
	}
}

func mustKey(t testing.TB, h *Handler, ws string) Result {
	t.Helper()
	res, err := h.CreateKey(testCtx(t), CreateKey{
		Workspace:   ws,
		Name:        "Backend",
		Permissions: []string{"users.track", "campaigns.list"},
		Allowlist:   []string{"10.0.0.0/8"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func mustIdentifier(t testing.TB, h *Handler, ws, kind, name string) Result {
	t.Helper()
	res, err := h.RegisterIdentifier(testCtx(t), RegisterIdentifier{Workspace: ws, Kind: kind, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func lastSeq(t testing.TB, l events.Reader) uint64 {
	t.Helper()
	seq, err := l.LastSeq(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// records returns every record of the log matching filter, decoded.
func records(t testing.TB, l events.Reader, filter string) []events.Decoded {
	t.Helper()
	var out []events.Decoded
	err := l.Read(testCtx(t), filter, 1, func(r events.Record) error {
		d, err := events.DecodeRecord(r)
		out = append(out, d)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func keyState(t testing.TB, h *Handler, ws, id string) events.KeyState {
	t.Helper()
	k, err := LogState{Log: h.Log}.Key(testCtx(t), events.Workspace(ws), id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func identifierState(t testing.TB, h *Handler, ws, id string) events.IdentifierState {
	t.Helper()
	s, err := LogState{Log: h.Log}.Identifier(testCtx(t), events.Workspace(ws), id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want %v", err, target)
	}
}
