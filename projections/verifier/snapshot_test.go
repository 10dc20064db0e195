package verifier_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/projections/keyindex"
	"github.com/keyreg/keyreg/projections/verifier"
)

// snapshot writes a snapshot of keyreg's views built from e's stream, as keyreg serve does,
// and returns the sequence it holds.
func (e *env) snapshot() uint64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	store, err := projections.Open(e.t.TempDir(), projections.Options{NoSync: true})
	if err != nil {
		e.t.Fatal(err)
	}
	defer store.Close()
	var recs []events.Record
	if err := e.log.Read(ctx, ">", 1, func(r events.Record) error { recs = append(recs, r); return nil }); err != nil {
		e.t.Fatal(err)
	}
	if err := store.Apply(recs); err != nil {
		e.t.Fatal(err)
	}
	js, err := jetstream.New(e.conn)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := verifier.EnsureSnapshotStream(ctx, js, 1); err != nil {
		e.t.Fatal(err)
	}
	info, err := verifier.WriteSnapshot(ctx, js, "", store.EachKey)
	if err != nil {
		e.t.Fatal(err)
	}
	if info.Seq != store.Checkpoint() {
		e.t.Fatalf("snapshot %+v, want seq %d", info, store.Checkpoint())
	}
	return info.Seq
}

// errorLog collects what a verifier reports to OnError.
type errorLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errorLog) add(err error) { l.mu.Lock(); l.errs = append(l.errs, err); l.mu.Unlock() }

func (l *errorLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Join(l.errs...).Error()
}

// sameIndex fails unless a and b dump alike.
func sameIndex(t *testing.T, what string, a, b *verifier.Verifier) {
	t.Helper()
	da, err := a.Dump()
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Dump()
	if err != nil {
		t.Fatal(err)
	}
	if da != db {
		t.Fatalf("%s: the verifier from the snapshot holds\n%s\nthe one from sequence 1\n%s", what, db, da)
	}
	// Dump shows what verify reads; the whole states (names, creators, times) must match too.
	for line := range strings.Lines(da) {
		var k events.KeyState
		if err := json.Unmarshal([]byte(line[strings.Index(line, "{"):]), &k); err != nil {
			t.Fatal(err)
		}
		ka, _ := a.Key(k.Workspace, k.ID)
		kb, ok := b.Key(k.Workspace, k.ID)
		if ja, jb := mustJSON(t, ka), mustJSON(t, kb); !ok || ja != jb || ka.Name == "" {
			t.Fatalf("%s: key %s/%s: the verifier from the snapshot holds\n%s\nthe one from sequence 1\n%s", what, k.Workspace, k.ID, jb, ja)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestVerifierFromSnapshot: a verifier started from the snapshot keyreg writes holds
// exactly what one that read the stream from its first event holds (every key, rotated
// and revoked ones too), starts after the snapshot's sequence, and follows the changes
// made after the snapshot (on keys in it and new keys) to the same answers; with the
// credentials of a confined subscriber too.
func TestVerifierFromSnapshot(t *testing.T) {
	e := startEnv(t, t.TempDir())
	e.add("acme", events.AggWorkspace, "acme", &events.WorkspaceCreated{Name: "Acme"})
	e.createKey("K1", "10.0.0.0/8")
	e.createKey("K2")
	e.createKey("K3")
	e.add("acme", events.AggKey, "K2", &events.KeySecretRotated{
		SecretHash: events.HashSecret(secret("K2b")), PreviousHash: events.HashSecret(secret("K2")), PreviousValidUntil: time.Now().Add(time.Hour),
	})
	e.add("acme", events.AggKey, "K3", &events.KeyRevoked{PreviousStatus: events.StatusActive})
	e.add("acme", events.AggIdentifier, "I1", &events.IdentifierRegistered{Kind: events.KindSegment, Name: "Lapsed"})
	snap := e.snapshot()
	// After the snapshot: a change to a key in it, a new key.
	e.add("acme", events.AggKey, "K1", &events.AllowlistUpdated{Allowlist: prefixes("192.0.2.0/24"), Previous: prefixes("10.0.0.0/8")})
	last := e.createKey("K4")

	full := start(t, e.subscriber(), verifier.Options{MaxLag: time.Minute, NoSnapshot: true})
	var errs errorLog
	fromSnap := start(t, e.subscriber(), verifier.Options{MaxLag: time.Minute, OnError: errs.add})
	confined := start(t, e.confined("billing", "pw-billing"), verifier.Options{MaxLag: time.Minute, ConsumerName: "billing-1", OnError: errs.add})
	if full.StartedFrom() != 0 || fromSnap.StartedFrom() != snap || confined.StartedFrom() != snap {
		t.Fatalf("started from %d, %d and %d; want 0, %d and %d (errors: %v)", full.StartedFrom(), fromSnap.StartedFrom(), confined.StartedFrom(), snap, snap, &errs)
	}
	for _, v := range []*verifier.Verifier{full, fromSnap, confined} {
		if v.Applied() != last || v.Keys() != 4 {
			t.Fatalf("applied %d (want %d), %d keys", v.Applied(), last, v.Keys())
		}
	}
	sameIndex(t, "at start", full, fromSnap)
	sameIndex(t, "at start, confined", full, confined)
	expect(t, fromSnap, "K1", outside, "users.track", keyindex.CodeValid)
	expect(t, fromSnap, "K2b", inside, "", keyindex.CodeValid)
	expect(t, fromSnap, "K2", inside, "", keyindex.CodeValid)
	expect(t, fromSnap, "K3", inside, "", keyindex.CodeRevoked)
	expect(t, fromSnap, "K4", inside, "users.track", keyindex.CodeValid)

	// Changes while they follow.
	e.add("acme", events.AggKey, "K4", &events.KeyRevoked{PreviousStatus: events.StatusActive})
	seq := e.createKey("K5")
	for _, v := range []*verifier.Verifier{full, fromSnap, confined} {
		waitFor(t, v, seq)
	}
	sameIndex(t, "after changes", full, fromSnap)
	sameIndex(t, "after changes, confined", full, confined)
	expect(t, fromSnap, "K4", inside, "", keyindex.CodeRevoked)
	expect(t, fromSnap, "K5", inside, "", keyindex.CodeValid)
}

// TestVerifierSnapshotFallback: a verifier reads the stream from its first event, and
// answers as one that did, when there is no snapshot, when the latest one is corrupt, of
// another format, or of another stream.
func TestVerifierSnapshotFallback(t *testing.T) {
	e := startEnv(t, t.TempDir())
	e.add("acme", events.AggWorkspace, "acme", &events.WorkspaceCreated{Name: "Acme"})
	e.createKey("K1")
	last := e.createKey("K2")
	check := func(what, wantErr string) {
		t.Helper()
		var errs errorLog
		v := start(t, e.subscriber(), verifier.Options{MaxLag: time.Minute, OnError: errs.add})
		if v.StartedFrom() != 0 || v.Applied() != last || v.Keys() != 2 {
			t.Fatalf("%s: started from %d, applied %d (want %d), %d keys", what, v.StartedFrom(), v.Applied(), last, v.Keys())
		}
		if got := errs.String(); !strings.Contains(got, "snapshot not used") || !strings.Contains(got, wantErr) {
			t.Fatalf("%s: reported %q, want %q", what, got, wantErr)
		}
		expect(t, v, "K1", inside, "", keyindex.CodeValid)
	}
	check("no snapshot", "stream not found")

	e.snapshot()
	js, err := jetstream.New(e.conn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, verifier.SnapshotStream)
	if err != nil {
		t.Fatal(err)
	}
	head, err := s.GetLastMsgForSubject(ctx, verifier.SnapshotHeadSubject)
	if err != nil {
		t.Fatal(err)
	}
	republish := func(from, to string) {
		t.Helper()
		if !strings.Contains(string(head.Data), from) {
			t.Fatalf("head %s has no %s", head.Data, from)
		}
		if _, err := js.Publish(ctx, verifier.SnapshotHeadSubject, []byte(strings.Replace(string(head.Data), from, to, 1))); err != nil {
			t.Fatal(err)
		}
	}
	republish(`"sha256":"`, `"sha256":"00`)
	check("corrupt", "corrupt")
	republish(`"format":1`, `"format":99`)
	check("other format", "format 99")
	republish(`"stream_created":"2`, `"stream_created":"1`)
	check("other stream", "not this one")
}

// TestSnapshotPermissions: subscribers may read the snapshots (their stream's info and
// direct gets) and nothing else of them: publishing a snapshot head or chunk, or purging
// or deleting the stream, is refused.
func TestSnapshotPermissions(t *testing.T) {
	e := startEnv(t, t.TempDir())
	e.add("acme", events.AggWorkspace, "acme", &events.WorkspaceCreated{Name: "Acme"})
	e.createKey("K1")
	e.snapshot()
	for _, user := range []struct{ name, password, inbox string }{{"svc", "pw", ""}, {"billing", "pw-billing", events.InboxPrefix("billing")}} {
		violations := make(chan error, 16)
		opts := []nats.Option{nats.UserInfo(user.name, user.password), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			violations <- err
		})}
		if user.inbox != "" {
			opts = append(opts, nats.CustomInboxPrefix(user.inbox))
		}
		nc := e.connect(opts...)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := js.Stream(ctx, verifier.SnapshotStream)
		if err != nil {
			t.Fatalf("%s: stream info: %v", user.name, err)
		}
		if _, err := s.GetLastMsgForSubject(ctx, verifier.SnapshotHeadSubject); err != nil {
			t.Fatalf("%s: read the head: %v", user.name, err)
		}
		cancel()
		for _, subject := range []string{verifier.SnapshotHeadSubject, verifier.SnapshotChunkSubject,
			"$JS.API.STREAM.PURGE." + verifier.SnapshotStream, "$JS.API.STREAM.DELETE." + verifier.SnapshotStream,
			"$JS.API.STREAM.MSG.DELETE." + verifier.SnapshotStream} {
			if err := nc.Publish(subject, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-violations:
				if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), subject) {
					t.Fatalf("%s: publish %s: %v", user.name, subject, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: publish %s was not refused", user.name, subject)
			}
		}
	}
	if natsserver.SnapshotStream != verifier.SnapshotStream || !strings.HasPrefix(verifier.SnapshotHeadSubject, strings.TrimSuffix(natsserver.SnapshotSubjects, ">")) ||
		!strings.HasPrefix(verifier.SnapshotChunkSubject, strings.TrimSuffix(natsserver.SnapshotSubjects, ">")) {
		t.Fatal("natsserver's snapshot names differ from the verifier's")
	}
}
