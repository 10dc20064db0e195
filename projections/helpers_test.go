package projections

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keyreg/keyreg/events"
)

// t0 is the start of every test clock.
var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// testSecret returns a well-formed secret derived from name, the same on every run.
func testSecret(name string) string { return events.FormatSecret(sha256.Sum256([]byte(name))) }

// openMem opens a store on a fresh in-memory file system.
func openMem(t testing.TB) *Store {
	t.Helper()
	s, err := Open("db", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// writer appends events with fixed ids and times to a log, keeping each aggregate's
// prevhash chain.
type writer struct {
	log  events.Appender
	n    int               // events appended
	now  time.Time         // time of the last event appended
	last map[string]string // aggregate filter -> hash of its last event
}

func newWriter(log events.Appender) *writer {
	return &writer{log: log, last: map[string]string{}}
}

// event is one event to append. Time zero means one minute after the previous event (t0
// for the first).
type event struct {
	ws    events.Workspace
	agg   events.Aggregate
	id    string
	typ   events.Type
	data  []byte
	actor string
	at    time.Time
}

func (w *writer) append(ctx context.Context, evs ...event) ([]uint64, error) {
	msgs := make([]events.Message, len(evs))
	hashes := map[string]string{}
	for i, ev := range evs {
		w.n++
		at := ev.at
		if at.IsZero() {
			at = w.now.Add(time.Minute)
			if w.now.IsZero() {
				at = t0
			}
		}
		w.now = at
		filter := events.AggregateFilter(ev.ws, ev.agg, ev.id)
		prev, ok := hashes[filter]
		if !ok {
			prev = w.last[filter]
		}
		e := events.Event{
			SpecVersion:     events.SpecVersion,
			ID:              fmt.Sprintf("01J%023d", w.n),
			Source:          "keyreg/" + string(ev.ws),
			Type:            ev.typ,
			Subject:         string(ev.agg) + "/" + ev.id,
			Time:            at,
			DataContentType: events.DataContentType,
			Data:            ev.data,
			Actor:           ev.actor,
			ActorIP:         "192.0.2.1",
			PrevHash:        prev,
		}
		b, err := e.Encode()
		if err != nil {
			return nil, err
		}
		hashes[filter] = events.Hash(b)
		msgs[i] = events.Message{Subject: events.Subject(ev.ws, ev.agg, ev.id, ev.typ), ID: e.ID, Data: b}
	}
	seqs, err := w.log.Append(ctx, msgs)
	if err != nil {
		return nil, err
	}
	for f, h := range hashes {
		w.last[f] = h
	}
	return seqs, nil
}

// add appends one event with payload p and fails the test on error.
func (w *writer) add(t testing.TB, ws events.Workspace, agg events.Aggregate, id string, p events.Payload) uint64 {
	t.Helper()
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	seqs, err := w.append(context.Background(), event{ws: ws, agg: agg, id: id, typ: p.EventType(), data: data, actor: "01JROOT"})
	if err != nil {
		t.Fatal(err)
	}
	return seqs[0]
}

// allRecords reads every record of a log.
func allRecords(t testing.TB, log events.Reader) []events.Record {
	t.Helper()
	var out []events.Record
	if err := log.Read(context.Background(), ">", 1, func(r events.Record) error {
		out = append(out, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// dump returns every key and value of a store, one per line, as Each sees them.
func dump(t testing.TB, s *Store) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := s.Each(func(k, v []byte) error {
		fmt.Fprintf(&b, "%q %q\n", k, v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// scenario appends a workspace history that uses every event type: keys created, renamed,
// re-permissioned, re-allowlisted, rotated (twice, with and without grace), re-expired and
// revoked; identifiers claimed, registered, renamed (re-claimed), retired (released) and
// their names claimed again; then bulk keys and identifiers so that batches of 1000 span
// several aggregates. It returns the number of records.
func scenario(t testing.TB, w *writer, bulk int) {
	t.Helper()
	ws := events.Workspace("acme")
	exp := t0.Add(30 * 24 * time.Hour)
	w.add(t, ws, events.AggWorkspace, string(ws), &events.WorkspaceCreated{Name: "Acme"})
	w.add(t, "beta", events.AggWorkspace, "beta", &events.WorkspaceCreated{Name: "Beta"})
	w.add(t, ws, events.AggKey, "K1", &events.KeyCreated{
		Name: "ci", Permissions: []events.Permission{"users.track"},
		Allowlist:  []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		SecretHash: events.HashSecret(testSecret("k1a")), ExpiresAt: &exp,
	})
	w.add(t, ws, events.AggKey, "K2", &events.KeyCreated{Name: "deploy", SecretHash: events.HashSecret(testSecret("k2a"))})
	w.add(t, ws, events.AggKey, "K1", &events.KeyRenamed{Name: "ci-main", Previous: "ci"})
	w.add(t, ws, events.AggKey, "K1", &events.KeyPermissionsUpdated{Permissions: []events.Permission{"users.export", "users.track"}})
	w.add(t, ws, events.AggKey, "K1", &events.AllowlistUpdated{Allowlist: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("2001:db8::/32")}})
	w.add(t, ws, events.AggKey, "K1", &events.KeySecretRotated{
		SecretHash: events.HashSecret(testSecret("k1b")), PreviousHash: events.HashSecret(testSecret("k1a")),
		PreviousValidUntil: t0.Add(time.Hour),
	})
	w.add(t, ws, events.AggKey, "K1", &events.KeySecretRotated{
		SecretHash: events.HashSecret(testSecret("k1c")), PreviousHash: events.HashSecret(testSecret("k1b")),
		PreviousValidUntil: t0.Add(2 * time.Hour),
	})
	w.add(t, ws, events.AggKey, "K1", &events.KeyExpiryChanged{})
	w.add(t, ws, events.AggKey, "K2", &events.KeyRevoked{PreviousStatus: events.StatusActive})
	w.add(t, "beta", events.AggKey, "K3", &events.KeyCreated{Name: "beta", SecretHash: events.HashSecret(testSecret("k3a"))})

	ident := func(id string, kind events.Kind, name string) {
		w.add(t, ws, events.AggName, events.NameClaimID(kind, events.FoldName(name)), &events.NameClaimed{IdentifierID: id, Kind: kind, Name: name})
		w.add(t, ws, events.AggIdentifier, id, &events.IdentifierRegistered{Kind: kind, Name: name})
	}
	ident("I1", events.KindSegment, "Summer Sale")
	ident("I2", events.KindSegment, "Straße Kunden")
	ident("I3", events.KindCampaign, "Summer Sale")
	ident("I4", events.KindApp, "iOS App")
	w.add(t, ws, events.AggName, events.NameClaimID(events.KindSegment, events.FoldName("Winter Sale")), &events.NameClaimed{IdentifierID: "I1", Kind: events.KindSegment, Name: "Winter Sale"})
	w.add(t, ws, events.AggIdentifier, "I1", &events.IdentifierRenamed{Name: "Winter Sale", Previous: "Summer Sale"})
	w.add(t, ws, events.AggName, events.NameClaimID(events.KindSegment, events.FoldName("Summer Sale")), &events.NameReleased{IdentifierID: "I1", Kind: events.KindSegment, Name: "Summer Sale"})
	w.add(t, ws, events.AggIdentifier, "I3", &events.IdentifierRetired{Kind: events.KindCampaign, Name: "Summer Sale"})
	w.add(t, ws, events.AggName, events.NameClaimID(events.KindCampaign, events.FoldName("Summer Sale")), &events.NameReleased{IdentifierID: "I3", Kind: events.KindCampaign, Name: "Summer Sale"})
	ident("I5", events.KindCampaign, "SUMMER SALE")

	for i := range bulk {
		switch i % 4 {
		case 0:
			id := fmt.Sprintf("BK%05d", i)
			w.add(t, ws, events.AggKey, id, &events.KeyCreated{Name: id, Permissions: []events.Permission{"users.track"}, SecretHash: events.HashSecret(testSecret(id))})
		case 1:
			id := fmt.Sprintf("BK%05d", i-1)
			w.add(t, ws, events.AggKey, id, &events.KeySecretRotated{
				SecretHash: events.HashSecret(testSecret(id + "b")), PreviousHash: events.HashSecret(testSecret(id)),
				PreviousValidUntil: t0.Add(time.Hour),
			})
		case 2:
			id := fmt.Sprintf("BI%05d", i)
			name := fmt.Sprintf("Bulk %d", i)
			ident(id, events.KindTemplate, name)
		case 3:
			id := fmt.Sprintf("BK%05d", i-3)
			w.add(t, ws, events.AggKey, id, &events.KeyRenamed{Name: id + " renamed", Previous: id})
		}
	}
}
