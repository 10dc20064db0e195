package replay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/projections/projectionstest"
	"github.com/keyreg/keyreg/replay"
)

// scenario writes a mixed history through the commands: workspaces, keys with every kind
// of change, identifiers registered, renamed and retired. It returns the id of a key whose
// allowlist changed three times and the sequence after each of those changes.
func scenario(t testing.TB, log events.Log) (keyID string, allowSeqs []uint64, allowlists [][]string) {
	t.Helper()
	ctx := context.Background()
	h := &commands.Handler{Log: log}
	must := func(r commands.Result, err error) commands.Result {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, ws := range []string{"acme", "globex"} {
		must(h.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: ws, Name: ws}))
		for i := range 5 {
			k := must(h.CreateKey(ctx, commands.CreateKey{Workspace: ws, Name: fmt.Sprintf("key %d", i),
				Permissions: []string{"users.track"}, Allowlist: []string{fmt.Sprintf("10.%d.0.0/16", i)}}))
			must(h.RenameKey(ctx, commands.RenameKey{Workspace: ws, KeyID: k.ID, Name: fmt.Sprintf("renamed %d", i)}))
			must(h.UpdatePermissions(ctx, commands.UpdatePermissions{Workspace: ws, KeyID: k.ID, Permissions: []string{"users.track", "messages.send"}}))
			must(h.RotateKey(ctx, commands.RotateKey{Workspace: ws, KeyID: k.ID, GraceSeconds: 3600}))
			if i%2 == 0 {
				must(h.RevokeKey(ctx, commands.RevokeKey{Workspace: ws, KeyID: k.ID}))
			}
			id := must(h.RegisterIdentifier(ctx, commands.RegisterIdentifier{Workspace: ws, Kind: "segment", Name: fmt.Sprintf("Segment %d", i)}))
			if i%2 == 1 {
				must(h.RenameIdentifier(ctx, commands.RenameIdentifier{Workspace: ws, IdentifierID: id.ID, Name: fmt.Sprintf("Segment %d bis", i)}))
				must(h.RetireIdentifier(ctx, commands.RetireIdentifier{Workspace: ws, IdentifierID: id.ID}))
			}
		}
	}
	k := must(h.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "watched"}))
	for _, allow := range [][]string{{"192.0.2.0/24"}, {"198.51.100.7", "2001:db8::/32"}, {}} {
		r := must(h.UpdateAllowlist(ctx, commands.UpdateAllowlist{Workspace: "acme", KeyID: k.ID, Allowlist: allow}))
		allowSeqs = append(allowSeqs, r.Seq)
		allowlists = append(allowlists, allow)
	}
	must(h.RegisterIdentifier(ctx, commands.RegisterIdentifier{Workspace: "acme", Kind: "app", Name: "iOS", Platform: "ios"}))
	return k.ID, allowSeqs, allowlists
}

func dump(t *testing.T, s *projections.Store) []string {
	t.Helper()
	var out []string
	if err := s.Each(func(k, v []byte) error {
		out = append(out, string(k)+"="+string(v))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func open(t *testing.T, dir string) *projections.Store {
	t.Helper()
	s, err := projections.Open(dir, projections.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestRebuildEqualsLive is the golden rule: views applied live, one event at a time by a
// running projector, are byte-identical to views rebuilt by replay.
func TestRebuildEqualsLive(t *testing.T) {
	log := eventstest.NewJetStreamLog(t)
	live := open(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := projections.NewProjector(live, log)
	go p.Run(ctx)
	scenario(t, log)
	last, _ := log.LastSeq(ctx)
	if err := p.WaitFor(ctx, last); err != nil {
		t.Fatal(err)
	}

	// Also apply every record on its own, in a third store.
	single := open(t, t.TempDir())
	if err := log.Read(ctx, ">", 1, func(r events.Record) error { return single.Apply([]events.Record{r}) }); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "rebuilt")
	stats, err := replay.Rebuild(ctx, log, dir, replay.Options{BatchSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Applied != last || stats.Checkpoint != last {
		t.Fatalf("rebuild applied %d up to %d, want %d", stats.Applied, stats.Checkpoint, last)
	}
	rebuilt := open(t, dir)
	want := dump(t, live)
	if len(want) < 100 {
		t.Fatalf("live views hold only %d entries", len(want))
	}
	if got := dump(t, rebuilt); !slices.Equal(got, want) {
		t.Fatalf("rebuilt views differ from live views (%d vs %d entries)", len(got), len(want))
	}
	if got := dump(t, single); !slices.Equal(got, want) {
		t.Fatalf("views applied one record at a time differ from live views")
	}
	diffs, err := replay.Diff(live, rebuilt, 0)
	if err != nil || len(diffs) != 0 {
		t.Fatalf("Diff(live, rebuilt) = %v, %v; want none", diffs, err)
	}
	diffs, err = replay.Verify(ctx, log, live, t.TempDir(), 0)
	if err != nil || len(diffs) != 0 {
		t.Fatalf("Verify = %v, %v; want no difference", diffs, err)
	}
}

// TestPointInTime rebuilds up to each of three allowlist changes of one key, by sequence
// and by time, and finds the allowlist as it was then.
func TestPointInTime(t *testing.T) {
	log := eventstest.NewJetStreamLog(t)
	ctx := context.Background()
	keyID, seqs, lists := scenario(t, log)
	for i, seq := range seqs {
		for _, by := range []string{"seq", "time"} {
			t.Run(fmt.Sprintf("change%d/%s", i+1, by), func(t *testing.T) {
				opts := replay.Options{UntilSeq: seq}
				if by == "time" {
					r, err := log.Get(ctx, seq)
					if err != nil {
						t.Fatal(err)
					}
					opts = replay.Options{UntilTime: r.Time}
				}
				dir := filepath.Join(t.TempDir(), "pit")
				stats, err := replay.Rebuild(ctx, log, dir, opts)
				if err != nil {
					t.Fatal(err)
				}
				if stats.Checkpoint != seq && by == "seq" {
					t.Fatalf("rebuilt up to %d, want %d", stats.Checkpoint, seq)
				}
				s := open(t, dir)
				k, err := s.Key(ctx, "acme", keyID)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := events.ParseAllowlist(lists[i])
				if !slices.Equal(k.Allowlist, want) || k.Version != seq || k.Version > stats.Checkpoint {
					t.Fatalf("at %d the allowlist is %v (version %d), want %v", seq, k.Allowlist, k.Version, want)
				}
			})
		}
	}
	// Before the key existed: not found.
	first, _ := log.Get(ctx, seqs[0])
	created := first.Seq - 1
	for created > 0 {
		r, _ := log.Get(ctx, created)
		if d, _ := events.DecodeRecord(r); d.Event.Subject == "key/"+keyID && d.Event.Type == events.TypeKeyCreated {
			break
		}
		created--
	}
	dir := filepath.Join(t.TempDir(), "before")
	if _, err := replay.Rebuild(ctx, log, dir, replay.Options{UntilSeq: created - 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := open(t, dir).Key(ctx, "acme", keyID); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("key before its creation: %v, want ErrNotFound", err)
	}
}

// TestDiffFindsPlantedDifference changes one value and removes one key in a rebuilt store
// behind its back: Diff reports exactly those two.
func TestDiffFindsPlantedDifference(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, log)
	ctx := context.Background()
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	for _, dir := range []string{a, b} {
		if _, err := replay.Rebuild(ctx, log, dir, replay.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	db, err := pebble.Open(b, &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	it, _ := db.NewIter(&pebble.IterOptions{LowerBound: []byte("key/"), UpperBound: []byte("key0")})
	it.First()
	changed := string(it.Key())
	it.Next()
	removed := string(it.Key())
	it.Next()
	planted := bytes.Clone(it.Value()) // another key's state: a value that decodes
	it.Close()
	db.Set([]byte(changed), planted, pebble.Sync)
	db.Delete([]byte(removed), pebble.Sync)
	db.Close()

	sa, sb := open(t, a), open(t, b)
	diffs, err := replay.Diff(sa, sb, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 2 || diffs[0].Key != changed || !bytes.Equal(diffs[0].Right, planted) ||
		diffs[1].Key != removed || diffs[1].Right != nil || diffs[1].Left == nil {
		t.Fatalf("diffs = %v, want %s changed and %s missing", diffs, changed, removed)
	}
	if d, _ := replay.Diff(sa, sb, 1); len(d) != 1 {
		t.Fatalf("Diff with max 1 returned %d", len(d))
	}
}

// TestGenerations: a rebuild builds beside the serving generation and swaps atomically; a
// crash before the swap leaves the old one serving and the half-built one is removed.
func TestGenerations(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, log)
	ctx := context.Background()
	gens := replay.Generations{Root: filepath.Join(t.TempDir(), "projections")}
	if cur, err := gens.Current(); err != nil || cur != "" {
		t.Fatalf("Current of nothing = %q, %v", cur, err)
	}
	g1, _, err := replay.RebuildGeneration(ctx, log, gens, replay.Options{UntilSeq: 10})
	if err != nil {
		t.Fatal(err)
	}
	if cur, _ := gens.Current(); cur != g1 {
		t.Fatalf("Current = %q, want %q", cur, g1)
	}
	// A crash mid-rebuild: a new generation half built, never swapped in.
	half, err := gens.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := replay.Rebuild(ctx, log, gens.Dir(half), replay.Options{UntilSeq: 20}); err != nil {
		t.Fatal(err)
	}
	if cur, _ := gens.Current(); cur != g1 {
		t.Fatalf("after an unfinished rebuild Current = %q, want %q", cur, g1)
	}
	if err := gens.RemoveStale(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(gens.Dir(half)); !os.IsNotExist(err) {
		t.Fatalf("half-built generation %s still there: %v", half, err)
	}
	s := open(t, gens.Dir(g1))
	if s.Checkpoint() != 10 {
		t.Fatalf("serving generation at %d, want 10", s.Checkpoint())
	}
	s.Close()
	g3, stats, err := replay.RebuildGeneration(ctx, log, gens, replay.Options{})
	if err != nil {
		t.Fatal(err)
	}
	last, _ := log.LastSeq(ctx)
	if cur, _ := gens.Current(); cur != g3 || g3 <= g1 || stats.Checkpoint != last {
		t.Fatalf("after a full rebuild Current = %q (was %q), checkpoint %d of %d", cur, g1, stats.Checkpoint, last)
	}
	if _, err := os.Stat(gens.Dir(g1)); !os.IsNotExist(err) {
		t.Fatalf("old generation %s kept after the swap", g1)
	}
	if err := os.WriteFile(filepath.Join(gens.Root, "CURRENT"), []byte("../etc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := gens.Current(); err == nil {
		t.Fatal("a CURRENT naming no generation was accepted")
	}
}

func TestRebuildRefusesNonEmptyDir(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, log)
	dir := t.TempDir()
	ctx := context.Background()
	if _, err := replay.Rebuild(ctx, log, dir, replay.Options{UntilSeq: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.Rebuild(ctx, log, dir, replay.Options{}); err == nil {
		t.Fatal("rebuild into a directory holding views succeeded")
	}
}

// TestMigrateFormat1: views of format 1 (JSON values) are refused with ErrFormat, and a
// rebuild into a new generation, what `keyreg replay` runs, migrates them: the new
// generation serves, equals a fresh rebuild, and the old one is gone.
func TestMigrateFormat1(t *testing.T) {
	log := eventstest.NewJetStreamLog(t)
	keyID, _, _ := scenario(t, log)
	ctx := context.Background()
	gens := replay.Generations{Root: t.TempDir()}
	old, _, err := replay.RebuildGeneration(ctx, log, gens, replay.Options{})
	if err != nil {
		t.Fatal(err)
	}
	projectionstest.ToFormat1(t, gens.Dir(old))
	if _, err := projections.Open(gens.Dir(old), projections.Options{}); !errors.Is(err, projections.ErrFormat) ||
		!strings.Contains(err.Error(), "format 1") || !strings.Contains(err.Error(), "keyreg replay") {
		t.Fatalf("opening format-1 views: %v, want ErrFormat naming format 1 and keyreg replay", err)
	}

	gen, stats, err := replay.RebuildGeneration(ctx, log, gens, replay.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if cur, _ := gens.Current(); cur != gen || gen == old || stats.Applied == 0 {
		t.Fatalf("after the migration generation %s serves (built %s, old %s, %d applied)", cur, gen, old, stats.Applied)
	}
	if _, err := os.Stat(gens.Dir(old)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the format-1 generation is still there: %v", err)
	}
	migrated := open(t, gens.Dir(gen))
	fresh := filepath.Join(t.TempDir(), "fresh")
	if _, err := replay.Rebuild(ctx, log, fresh, replay.Options{}); err != nil {
		t.Fatal(err)
	}
	if got, want := dump(t, migrated), dump(t, open(t, fresh)); !slices.Equal(got, want) {
		t.Fatal("the migrated views differ from a fresh rebuild")
	}
	if k, err := migrated.Key(ctx, "acme", keyID); err != nil || k.ID != keyID || len(k.Allowlist) != 0 {
		t.Fatalf("Key on the migrated views = %+v, %v", k, err)
	}
}
