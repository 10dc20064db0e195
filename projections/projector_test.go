package projections

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/projections/keyindex"
)

// logs are the event log implementations the projector is tested against.
var logs = []struct {
	name string
	open func(testing.TB) events.Log
}{
	{"MemLog", func(testing.TB) events.Log { return events.NewMemLog() }},
	{"JetStream", eventstest.NewJetStreamLog},
}

func TestProjector(t *testing.T) {
	for _, l := range logs {
		t.Run(l.name, func(t *testing.T) {
			log := l.open(t)
			w := newWriter(log)
			scenario(t, w, 120)
			recs := allRecords(t, log)
			want := openMem(t)
			if err := want.Apply(recs); err != nil {
				t.Fatal(err)
			}

			s := openMem(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := NewProjector(s, log)
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
			defer wcancel()
			if err := p.WaitFor(wctx, uint64(len(recs))); err != nil {
				t.Fatal(err)
			}
			checkSame(t, "projected", want, s)

			// Read-your-writes: once WaitFor returns for an append's sequence, queries and
			// Verify see it.
			secret := testSecret("live")
			seq := w.add(t, "acme", events.AggKey, "LIVE", &events.KeyCreated{
				Name: "live", Permissions: []events.Permission{"users.track"},
				SecretHash: events.HashSecret(secret),
			})
			if err := p.WaitFor(wctx, seq); err != nil {
				t.Fatal(err)
			}
			if p.Applied() < seq {
				t.Fatalf("Applied %d after WaitFor(%d)", p.Applied(), seq)
			}
			if k, err := s.Key(ctx, "acme", "LIVE"); err != nil || k.Version != seq {
				t.Fatalf("Key after WaitFor: %+v, %v", k, err)
			}
			if r := s.Verify(secret, netip.MustParseAddr("192.0.2.1"), "users.track", t0); r.Code != keyindex.CodeValid {
				t.Fatalf("Verify after WaitFor: %+v", r)
			}

			// Appends in one atomic batch, applied while the projector runs.
			var evs []event
			for _, id := range []string{"B1", "B2", "B3"} {
				evs = append(evs, event{ws: "acme", agg: events.AggKey, id: id, typ: events.TypeKeyCreated,
					data: []byte(`{"name":"` + id + `","permissions":[],"allowlist":[],"secret_hash":"` + events.HashSecret(testSecret(id)) + `"}`)})
			}
			seqs, err := w.append(ctx, evs...)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.WaitFor(wctx, seqs[len(seqs)-1]); err != nil {
				t.Fatal(err)
			}
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("Run: %v, want context.Canceled", err)
			}

			// A new projector on the same store resumes from the checkpoint.
			recs = allRecords(t, log)
			want2 := openMem(t)
			if err := want2.Apply(recs); err != nil {
				t.Fatal(err)
			}
			seq = w.add(t, "acme", events.AggKey, "B1", &events.KeyRevoked{PreviousStatus: "active"})
			if err := want2.Apply(allRecords(t, log)); err != nil {
				t.Fatal(err)
			}
			runProjector(t, s, log, seq)
			checkSame(t, "resumed", want2, s)
		})
	}
}

func TestProjectorAheadOfLog(t *testing.T) {
	for _, l := range logs {
		t.Run(l.name, func(t *testing.T) {
			old := events.NewMemLog()
			scenario(t, newWriter(old), 0)
			s := openMem(t)
			if err := s.Apply(allRecords(t, old)); err != nil {
				t.Fatal(err)
			}

			// The stream was recreated: it holds fewer records than the views applied.
			log := l.open(t)
			w := newWriter(log)
			for range 3 {
				w.add(t, "acme", events.AggWorkspace, "acme", &events.WorkspaceCreated{Name: "Acme"})
			}
			p := NewProjector(s, log)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // Run must return, not follow
			defer cancel()
			err := p.Run(ctx)
			if !errors.Is(err, ErrAheadOfLog) {
				t.Fatalf("Run: %v, want ErrAheadOfLog", err)
			}
			for _, want := range []string{"recreated", "older backup", "keyreg replay"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			// Waiters learn why rather than timing out.
			if err := p.WaitFor(ctx, s.Checkpoint()+1); !errors.Is(err, ErrAheadOfLog) {
				t.Errorf("WaitFor: %v, want ErrAheadOfLog", err)
			}
		})
	}
}

func TestProjectorStopsOnBadRecord(t *testing.T) {
	log := events.NewMemLog()
	w := newWriter(log)
	w.add(t, "acme", events.AggWorkspace, "acme", &events.WorkspaceCreated{Name: "Acme"})
	w.add(t, "acme", events.AggKey, "GHOST", &events.KeyRenamed{Name: "x"})
	s := openMem(t)
	p := NewProjector(s, log)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // Run must return, not follow
	defer cancel()
	err := p.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "seq 2") {
		t.Fatalf("Run: %v, want an error naming seq 2", err)
	}
	// The follower may hand over record 1 alone or together with record 2: either way the
	// batch holding the bad record is not written, so the checkpoint stays before it and
	// the views hold exactly what the checkpoint says.
	cp := s.Checkpoint()
	if cp > 1 {
		t.Fatalf("checkpoint %d: the failed batch must not be written", cp)
	}
	_, err = s.Workspace(ctx, "acme")
	if cp == 0 && !errors.Is(err, events.ErrNotFound) || cp == 1 && err != nil {
		t.Errorf("checkpoint %d but workspace acme: %v: views and checkpoint disagree", cp, err)
	}
	if err := p.WaitFor(ctx, 2); err == nil || !strings.Contains(err.Error(), "projector stopped") {
		t.Errorf("WaitFor: %v", err)
	}
}

func TestWaitForTimeout(t *testing.T) {
	log := events.NewMemLog()
	newWriter(log).add(t, "acme", events.AggWorkspace, "acme", &events.WorkspaceCreated{Name: "Acme"})
	s := openMem(t)
	p := NewProjector(s, log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	if err := p.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer wcancel()
	if err := p.WaitFor(wctx, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFor(2): %v, want DeadlineExceeded", err)
	}
}
