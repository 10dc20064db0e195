package projections

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/keyindex"
)

func TestApplyErrors(t *testing.T) {
	base := events.NewMemLog()
	w := newWriter(base)
	w.add(t, "acme", events.AggWorkspace, "acme", &events.WorkspaceCreated{Name: "Acme"})
	w.add(t, "acme", events.AggKey, "K1", &events.KeyCreated{Name: "ci", SecretHash: events.HashSecret(testSecret("k1"))})
	good := allRecords(t, base)

	// record returns the next record after good, with a crafted envelope and subject.
	record := func(mod func(e *events.Event), subject string) events.Record {
		e := events.Event{
			SpecVersion: events.SpecVersion, ID: "01JBAD", Source: "keyreg/acme",
			Type: events.TypeKeyRenamed, Subject: "key/K1", Time: t0,
			DataContentType: events.DataContentType, Data: []byte(`{"name":"x","previous":"ci"}`),
		}
		if mod != nil {
			mod(&e)
		}
		b, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if subject == "" {
			subject = "keyreg.acme.key.K1.renamed"
		}
		return events.Record{Seq: uint64(len(good)) + 1, Subject: subject, MsgID: e.ID, Time: t0, Data: b}
	}
	gap := record(nil, "")
	gap.Seq++

	for _, tc := range []struct {
		name string
		rec  events.Record
		want string
		is   error
	}{
		{"ErrGap", gap, "sequence gap", ErrGap},
		{"KeyNotCreated", record(func(e *events.Event) { e.Subject = "key/K2" }, "keyreg.acme.key.K2.renamed"), "before key.created", nil},
		{"IdentifierNotRegistered", record(func(e *events.Event) {
			e.Type, e.Subject = events.TypeIdentifierRenamed, "identifier/I1"
		}, "keyreg.acme.identifier.I1.renamed"), "before identifier.registered", nil},
		{"SubjectMismatch", record(nil, "keyreg.acme.key.K9.renamed"), "does not match", nil},
		{"WorkspaceMismatch", record(func(e *events.Event) { e.Source = "keyreg/beta" }, ""), "does not match", nil},
		{"BadID", record(func(e *events.Event) { e.Subject = "key/K1/x" }, "keyreg.acme.key.K1/x.renamed"), "bad workspace or id", nil},
		{"UnknownType", record(func(e *events.Event) { e.Type = "keyreg.key.exploded.v1" }, ""), "unknown type", nil},
		{"WrongPayloadForAggregate", record(func(e *events.Event) { e.Type = events.TypeIdentifierRetired }, ""), "cannot apply", nil},
		{"UnknownAggregate", record(func(e *events.Event) { e.Subject = "gadget/K1" }, "keyreg.acme.gadget.K1.renamed"), "unknown aggregate", nil},
		{"NotJSON", events.Record{Seq: uint64(len(good)) + 1, Subject: "keyreg.acme.key.K1.renamed", Data: []byte("{")}, "decode event", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openMem(t)
			if err := s.Apply(good); err != nil {
				t.Fatal(err)
			}
			before := dump(t, s)
			// The bad record comes after a good one in the same batch: neither is written.
			extra := record(func(e *events.Event) { e.Type, e.Data = events.TypeKeyRenamed, []byte(`{"name":"y"}`) }, "")
			extra.Seq, tc.rec.Seq = tc.rec.Seq, tc.rec.Seq+1
			err := s.Apply([]events.Record{extra, tc.rec})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply: %v, want an error with %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("Apply: %v is not %v", err, tc.is)
			}
			if !bytes.Equal(dump(t, s), before) || s.Checkpoint() != uint64(len(good)) {
				t.Error("a failed Apply changed the views")
			}
			if r := s.Verify(testSecret("k1"), netip.Addr{}, "", t0); r.Code != keyindex.CodeValid {
				t.Errorf("Verify after failed Apply: %+v", r)
			}
		})
	}
}

func TestReadOnly(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 0)
	recs := allRecords(t, log)
	fs := vfs.NewMem()
	s, err := Open("db", Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(recs[:5]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Apply(recs); !errors.Is(err, events.ErrClosed) {
		t.Fatalf("Apply after Close: %v, want events.ErrClosed", err)
	}

	ro, err := Open("db", Options{FS: fs, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.Apply(recs); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Apply on read-only store: %v, want ErrReadOnly", err)
	}
	if ro.Checkpoint() != 5 {
		t.Errorf("checkpoint %d, want 5", ro.Checkpoint())
	}
	if _, err := ro.Workspace(context.Background(), "acme"); err != nil {
		t.Error(err)
	}
	if _, err := Open("missing", Options{FS: vfs.NewMem(), ReadOnly: true}); err == nil {
		t.Error("Open of a missing read-only store succeeded")
	}
}

// TestVerifyDuringApply runs Verify and queries while batches are applied (run with -race).
func TestVerifyDuringApply(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 400)
	recs := allRecords(t, log)
	s := openMem(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := s.Verify(testSecret("BK00000b"), netip.Addr{}, "users.track", t0)
				if r.Code != keyindex.CodeNotFound && r.Code != keyindex.CodeValid {
					t.Errorf("Verify: %+v", r)
					return
				}
				if _, err := s.Identifiers("acme", IdentifierFilter{NamePrefix: "bulk"}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := 0; i < len(recs); i += 10 {
		if err := s.Apply(recs[i:min(i+10, len(recs))]); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if r := s.Verify(testSecret("BK00000b"), netip.Addr{}, "users.track", t0); r.Code != keyindex.CodeValid {
		t.Errorf("Verify at the end: %+v", r)
	}
}

func TestVerifyDoesNotAllocate(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 0)
	s := openMem(t)
	if err := s.Apply(allRecords(t, log)); err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("::ffff:10.1.2.3")
	for _, tc := range []struct{ secret, perm, code string }{
		{testSecret("k1c"), "users.track", keyindex.CodeValid},
		{testSecret("k1c"), "users.delete", keyindex.CodePermissionDenied},
		{testSecret("k2a"), "", keyindex.CodeRevoked},
		{testSecret("k1a"), "", keyindex.CodeNotFound},
		{"kr_short", "", keyindex.CodeMalformed},
	} {
		t.Run(tc.code, func(t *testing.T) {
			var r keyindex.VerifyResult
			allocs := testing.AllocsPerRun(100, func() {
				r = s.Verify(tc.secret, ip, events.Permission(tc.perm), t0)
			})
			if r.Code != tc.code {
				t.Fatalf("code %s, want %s", r.Code, tc.code)
			}
			if allocs != 0 {
				t.Errorf("Verify allocates %v times per call", allocs)
			}
		})
	}
}
