package replay_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/replay"
)

// auditEnv is a log, views kept up to date by ApplyInto, and a sealer's key.
type auditEnv struct {
	t      testing.TB
	log    events.Log
	store  *projections.Store
	signer note.Signer
	vkey   string
	h      *commands.Handler
}

func newAuditEnv(t testing.TB, log events.Log) *auditEnv {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "keyreg-test")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := projections.Open(t.TempDir(), projections.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &auditEnv{t: t, log: log, store: s, signer: signer, vkey: vkey, h: &commands.Handler{Log: log, Checkpoints: s}}
}

// catchUp applies the log to the views.
func (e *auditEnv) catchUp() {
	e.t.Helper()
	if _, err := replay.ApplyInto(context.Background(), e.log, e.store, replay.Options{}); err != nil {
		e.t.Fatal(err)
	}
}

// seal signs the views' whole tree, appends the checkpoint and applies it, as the server's
// sealer does.
func (e *auditEnv) seal(ctx context.Context, atLeast uint64) (events.CheckpointState, error) {
	e.catchUp()
	size := uint64(e.store.TreeSize())
	if size < atLeast {
		return events.CheckpointState{}, fmt.Errorf("views at %d, need %d", size, atLeast)
	}
	root, err := e.store.TreeHash(int64(size))
	if err != nil {
		return events.CheckpointState{}, err
	}
	msg, err := note.Sign(&note.Note{Text: string(events.FormatCheckpoint(size, root))}, e.signer)
	if err != nil {
		return events.CheckpointState{}, err
	}
	if _, err := e.h.SealCheckpoint(ctx, commands.SealCheckpoint{TreeSize: size, RootHash: base64.StdEncoding.EncodeToString(root[:]), Note: string(msg)}); err != nil {
		return events.CheckpointState{}, err
	}
	e.catchUp()
	return e.store.SealedCheckpoint(ctx)
}

func (e *auditEnv) exporter() replay.Exporter {
	return replay.Exporter{Log: e.log, Store: e.store, Seal: e.seal, Attest: e.attest, PageSize: 7}
}

// attest signs an export statement, as the server's sealer does.
func (e *auditEnv) attest(text []byte) (string, error) {
	msg, err := note.Sign(&note.Note{Text: string(text)}, e.signer)
	return string(msg), err
}

func (e *auditEnv) export(q replay.ExportQuery) []byte {
	e.t.Helper()
	var buf bytes.Buffer
	if _, err := e.exporter().Export(context.Background(), &buf, q); err != nil {
		e.t.Fatal(err)
	}
	return buf.Bytes()
}

func mustRes(t testing.TB) func(commands.Result, error) commands.Result {
	return func(r commands.Result, err error) commands.Result {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
}

// TestAsOf reads a key and an identifier at moments of their history, by sequence and by
// time: before creation (not found), after creation, after an allowlist change, and after
// revocation (earlier moments show the key active).
func TestAsOf(t *testing.T) {
	log := eventstest.NewJetStreamLog(t)
	ctx := context.Background()
	h := &commands.Handler{Log: log}
	must := mustRes(t)
	must(h.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: "acme", Name: "Acme"}))
	other := must(h.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "other"}))
	time.Sleep(5 * time.Millisecond) // distinct stream times
	created := must(h.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "watched", Allowlist: []string{"192.0.2.0/24"}}))
	time.Sleep(5 * time.Millisecond)
	changed := must(h.UpdateAllowlist(ctx, commands.UpdateAllowlist{Workspace: "acme", KeyID: created.ID, Allowlist: []string{"198.51.100.7"}}))
	time.Sleep(5 * time.Millisecond)
	ident := must(h.RegisterIdentifier(ctx, commands.RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: "Summer"}))
	time.Sleep(5 * time.Millisecond)
	revoked := must(h.RevokeKey(ctx, commands.RevokeKey{Workspace: "acme", KeyID: created.ID}))
	time.Sleep(5 * time.Millisecond)
	renamed := must(h.RenameIdentifier(ctx, commands.RenameIdentifier{Workspace: "acme", IdentifierID: ident.ID, Name: "Winter"}))
	retired := must(h.RetireIdentifier(ctx, commands.RetireIdentifier{Workspace: "acme", IdentifierID: ident.ID}))

	timeOf := func(seq uint64) time.Time {
		r, err := log.Get(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		return r.Time
	}
	type want struct {
		found  bool
		status string
		allow  string
		keys   int // keys listed as of then
	}
	cases := []struct {
		name string
		seq  uint64
		want want
	}{
		{"BeforeCreation", created.Seq - 1, want{keys: 1}},
		{"AfterCreation", created.Seq, want{true, "active", "192.0.2.0/24", 2}},
		{"AfterAllowlistChange", changed.Seq, want{true, "active", "198.51.100.7/32", 2}},
		{"JustBeforeRevocation", revoked.Seq - 1, want{true, "active", "198.51.100.7/32", 2}},
		{"AfterRevocation", revoked.Seq, want{true, "revoked", "198.51.100.7/32", 2}},
	}
	for _, c := range cases {
		for _, by := range []string{"seq", "time"} {
			t.Run(c.name+"/"+by, func(t *testing.T) {
				cut := replay.Cut{Seq: c.seq}
				if by == "time" {
					cut = replay.Cut{Time: timeOf(c.seq)}
				}
				k, err := replay.KeyAsOf(ctx, log, "acme", created.ID, cut)
				if !c.want.found {
					if !errors.Is(err, events.ErrNotFound) {
						t.Fatalf("KeyAsOf before creation: %+v, %v; want ErrNotFound", k, err)
					}
				} else {
					if err != nil {
						t.Fatal(err)
					}
					if k.Status != c.want.status || len(k.Allowlist) != 1 || k.Allowlist[0].String() != c.want.allow {
						t.Fatalf("as of %s: status %s allowlist %v, want %s %s", cut, k.Status, k.Allowlist, c.want.status, c.want.allow)
					}
				}
				keys, err := replay.KeysAsOf(ctx, log, "acme", cut)
				if err != nil || len(keys) != c.want.keys || keys[0].ID > keys[len(keys)-1].ID {
					t.Fatalf("KeysAsOf: %d keys, %v; want %d", len(keys), err, c.want.keys)
				}
				if !slices.ContainsFunc(keys, func(k events.KeyState) bool { return k.ID == other.ID }) {
					t.Fatal("the other key is missing")
				}
			})
		}
	}
	// Identifiers: registered, renamed, retired.
	for _, c := range []struct {
		seq    uint64
		name   string
		listed string // listed by prefix search then
	}{{ident.Version - 1, "", ""}, {ident.Seq, "Summer", "Summer"}, {renamed.Seq, "Winter", "Winter"}, {retired.Seq, "Winter", ""}} {
		cut := replay.Cut{Seq: c.seq}
		s, err := replay.IdentifierAsOf(ctx, log, "acme", ident.ID, cut)
		if c.name == "" {
			if !errors.Is(err, events.ErrNotFound) {
				t.Fatalf("identifier before registration: %v", err)
			}
		} else if err != nil || s.Name != c.name {
			t.Fatalf("identifier as of %d: %+v, %v; want name %s", c.seq, s, err, c.name)
		}
		list, err := replay.IdentifiersAsOf(ctx, log, "acme", "segment", strings.ToLower(c.name), cut)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(list); (c.listed == "" && got != 0) || (c.listed != "" && (got != 1 || list[0].Name != c.listed)) {
			t.Fatalf("identifiers as of %d: %+v; want %q", c.seq, list, c.listed)
		}
	}
	if _, err := replay.ParseCut("as_of", "0"); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("ParseCut(0) = %v", err)
	}
	if c, err := replay.ParseCut("as_of", "2026-01-02T03:04:05+01:00"); err != nil || c.Time.Hour() != 2 {
		t.Errorf("ParseCut(time) = %v, %v", c, err)
	}
}

// auditScenario writes the replay scenario, then revokes the watched key.
func auditScenario(t testing.TB, log events.Log) (keyID string) {
	t.Helper()
	keyID, _, _ = scenario(t, log)
	h := &commands.Handler{Log: log}
	if _, err := h.RevokeKey(context.Background(), commands.RevokeKey{Workspace: "acme", KeyID: keyID,
		Meta: events.Meta{Actor: "01JAUDITOR00000000000000000", ActorIP: "203.0.113.9", Reason: "=cmd|' /C calc'!A0"}}); err != nil {
		t.Fatal(err)
	}
	return keyID
}

// exportLines splits a JSON Lines export into its event lines and its trailer.
func exportLines(t testing.TB, b []byte) ([]replay.ExportLine, replay.ExportTrailer) {
	t.Helper()
	lines := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	var out []replay.ExportLine
	for _, l := range lines[:len(lines)-1] {
		var e replay.ExportLine
		if err := json.Unmarshal(l, &e); err != nil {
			t.Fatalf("line %s: %v", l, err)
		}
		out = append(out, e)
	}
	var tr replay.ExportTrailer
	if err := json.Unmarshal(lines[len(lines)-1], &tr); err != nil || tr.Checkpoint == nil {
		t.Fatalf("last line %s: %v", lines[len(lines)-1], err)
	}
	return out, tr
}

// TestExportJSONL exports a workspace and checks every line: the events are the stored
// bytes, in order, each with a proof to the sealed checkpoint, which covers them all.
func TestExportJSONL(t *testing.T) {
	log := eventstest.NewJetStreamLog(t)
	ctx := context.Background()
	keyID := auditScenario(t, log)
	e := newAuditEnv(t, log)
	e.catchUp()

	all, err := e.store.Audit("acme", projections.AuditFilter{}, 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	b := e.export(replay.ExportQuery{Workspace: "acme"})
	lines, tr := exportLines(t, b)
	if len(lines) != len(all) || tr.Events != len(all) || tr.Workspace != "acme" || tr.Filter != nil {
		t.Fatalf("%d lines, trailer %+v; want %d events", len(lines), tr, len(all))
	}
	cp := tr.Checkpoint
	root, _ := events.ParseTreeHash(cp.RootHash)
	if cp.TreeSize < all[len(all)-1].Seq {
		t.Fatalf("checkpoint of %d leaves does not cover sequence %d", cp.TreeSize, all[len(all)-1].Seq)
	}
	for i, l := range lines {
		r, err := log.Get(ctx, all[i].Seq)
		if err != nil {
			t.Fatal(err)
		}
		if l.Sequence != r.Seq || l.LeafIndex != int64(r.Seq)-1 || !bytes.Equal(l.Event, r.Data) {
			t.Fatalf("line %d: sequence %d leaf %d event %s; want %d and the stored bytes %s", i, l.Sequence, l.LeafIndex, l.Event, r.Seq, r.Data)
		}
		proof := make(tlog.RecordProof, len(l.Proof))
		for j, s := range l.Proof {
			proof[j], _ = events.ParseTreeHash(s)
		}
		if err := tlog.CheckRecord(proof, int64(cp.TreeSize), root, l.LeafIndex, tlog.RecordHash(l.Event)); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
	}
	sum, err := replay.VerifyExport(bytes.NewReader(b), replay.VerifyOptions{Keys: []string{e.vkey}})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Events != len(all) || sum.TreeSize != cp.TreeSize || !sum.Complete || sum.Signer == "" || sum.Aggregates < 20 {
		t.Fatalf("summary %+v", sum)
	}
	t.Logf("summary: %+v", sum)

	// A second export reuses the checkpoint: it still covers everything.
	last := e.store.Checkpoint()
	b2 := e.export(replay.ExportQuery{Workspace: "acme", Filter: projections.AuditFilter{KeyID: keyID}})
	if e.store.Checkpoint() != last {
		t.Fatal("an export sealed again though the latest checkpoint covered it")
	}
	lines2, tr2 := exportLines(t, b2)
	if len(lines2) != 5 || tr2.Filter == nil || tr2.Filter.Key != keyID || tr2.Checkpoint.TreeSize != cp.TreeSize {
		t.Fatalf("key export: %d lines, trailer %+v", len(lines2), tr2)
	}
	if _, err := replay.VerifyExport(bytes.NewReader(b2), replay.VerifyOptions{Keys: []string{e.vkey}}); err != nil {
		t.Fatal(err)
	}

	// Without a sealer, an export stops at the latest checkpoint.
	h := &commands.Handler{Log: log}
	if _, err := h.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "after the checkpoint"}); err != nil {
		t.Fatal(err)
	}
	e.catchUp()
	var buf bytes.Buffer
	stats, err := replay.Exporter{Log: log, Store: e.store}.Export(ctx, &buf, replay.ExportQuery{Workspace: "acme"})
	if err != nil || stats.Events != len(all) || stats.Checkpoint.TreeSize != cp.TreeSize {
		t.Fatalf("export without sealer: %+v, %v; want the %d events of the checkpoint", stats, err, len(all))
	}
	// ... and with none sealed it cannot export JSON Lines.
	fresh := newAuditEnv(t, log)
	fresh.store.Close()
	empty, err := projections.Open(t.TempDir(), projections.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	if _, err := replay.ApplyInto(ctx, log, empty, replay.Options{UntilSeq: cp.TreeSize}); err != nil {
		t.Fatal(err)
	}
	if _, err := (replay.Exporter{Log: log, Store: empty}).Export(ctx, &buf, replay.ExportQuery{Workspace: "acme"}); !errors.Is(err, replay.ErrNoCheckpoint) {
		t.Fatalf("export with no checkpoint: %v, want ErrNoCheckpoint", err)
	}
}

// TestExportCSV checks the rows of a key's export: one per change, with before and after.
func TestExportCSV(t *testing.T) {
	log := eventstest.NewJetStreamLog(t)
	keyID := auditScenario(t, log)
	e := newAuditEnv(t, log)
	e.catchUp()
	b := e.export(replay.ExportQuery{Workspace: "acme", Filter: projections.AuditFilter{KeyID: keyID}, Format: replay.FormatCSV})
	rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rows[0], replay.CSVHeader) {
		t.Fatalf("header %v", rows[0])
	}
	want := [][]string{ // aggregate, change, before, after, actor, actor_ip, reason
		{"key/" + keyID, "created", "", `{"allowlist":[],"expires_at":null,"name":"watched","permissions":[],"secret_sha256":"*"}`, "", "", ""},
		{"key/" + keyID, "allowlist_updated", `{"allowlist":[]}`, `{"allowlist":["192.0.2.0/24"]}`, "", "", ""},
		{"key/" + keyID, "allowlist_updated", `{"allowlist":["192.0.2.0/24"]}`, `{"allowlist":["198.51.100.7/32","2001:db8::/32"]}`, "", "", ""},
		{"key/" + keyID, "allowlist_updated", `{"allowlist":["198.51.100.7/32","2001:db8::/32"]}`, `{"allowlist":[]}`, "", "", ""},
		{"key/" + keyID, "revoked", `{"status":"active"}`, `{"status":"revoked"}`, "01JAUDITOR00000000000000000", "203.0.113.9", "'=cmd|' /C calc'!A0"},
	}
	if len(rows) != len(want)+1 {
		t.Fatalf("%d rows, want %d:\n%s", len(rows), len(want)+1, b)
	}
	var prevSeq uint64
	for i, w := range want {
		r := rows[i+1]
		col := func(name string) string { return r[slices.Index(replay.CSVHeader, name)] }
		after := col("after")
		if strings.HasSuffix(w[3], `"*"}`) { // the secret hash prefix differs each run
			after = after[:strings.LastIndex(after, `:"`)+1] + `"*"}`
		}
		got := []string{col("aggregate"), col("change"), col("before"), after, col("actor"), col("actor_ip"), col("reason")}
		if !slices.Equal(got, w) {
			t.Errorf("row %d:\n got %q\nwant %q", i+1, got, w)
		}
		if _, err := time.Parse(time.RFC3339Nano, col("time")); err != nil || col("event_id") == "" {
			t.Errorf("row %d: time %q event id %q", i+1, col("time"), col("event_id"))
		}
		// The rows are in stream order, and each sequence is its event's in the log.
		seq, err := strconv.ParseUint(col("sequence"), 10, 64)
		if err != nil || seq <= prevSeq {
			t.Errorf("row %d: sequence %q after %d, want a larger number", i+1, col("sequence"), prevSeq)
			continue
		}
		prevSeq = seq
		rec, err := log.Get(context.Background(), seq)
		if err != nil {
			t.Fatalf("row %d: event %d: %v", i+1, seq, err)
		}
		if ev, err := events.Decode(rec.Data); err != nil || ev.ID != col("event_id") {
			t.Errorf("row %d: event %d of the log is %s (%v), not %s", i+1, seq, ev.ID, err, col("event_id"))
		}
	}
}

// tamper changes an honest export: each case must fail verification, naming its cause.
func TestVerifyTampering(t *testing.T) {
	log := eventstest.NewJetStreamLog(t)
	auditScenario(t, log)
	e := newAuditEnv(t, log)
	e.catchUp()
	honest := e.export(replay.ExportQuery{Workspace: "acme"})
	keys := []string{e.vkey}
	if _, err := replay.VerifyExport(bytes.NewReader(honest), replay.VerifyOptions{Keys: keys}); err != nil {
		t.Fatalf("honest export: %v", err)
	}
	split := func() [][]byte {
		return bytes.Split(bytes.TrimSuffix(bytes.Clone(honest), []byte("\n")), []byte("\n"))
	}
	join := func(lines [][]byte) []byte { return append(bytes.Join(lines, []byte("\n")), '\n') }
	// The index of a line in the middle of a key's chain: an allowlist update.
	mid := slices.IndexFunc(split(), func(l []byte) bool { return bytes.Contains(l, []byte("allowlist_updated")) })

	otherSkey, _, _ := note.GenerateKey(rand.Reader, "keyreg-test") // same name, other key
	otherSigner, _ := note.NewSigner(otherSkey)
	resign := func(lines [][]byte, size uint64) {
		var tr replay.ExportTrailer
		json.Unmarshal(lines[len(lines)-1], &tr)
		root, _ := events.ParseTreeHash(tr.Checkpoint.RootHash)
		msg, _ := note.Sign(&note.Note{Text: string(events.FormatCheckpoint(size, root))}, otherSigner)
		tr.Checkpoint.Note, tr.Checkpoint.TreeSize = string(msg), size
		lines[len(lines)-1], _ = json.Marshal(tr)
	}
	editTrailer := func(lines [][]byte, edit func(*replay.ExportTrailer)) {
		var tr replay.ExportTrailer
		json.Unmarshal(lines[len(lines)-1], &tr)
		edit(&tr)
		lines[len(lines)-1], _ = json.Marshal(tr)
	}
	cases := []struct {
		name   string
		tamper func() []byte
		want   string
	}{
		{"OneByteOfAnEvent", func() []byte {
			l := split()
			i := bytes.Index(l[mid], []byte(`"allowlist":["`))
			l[mid][i+len(`"allowlist":["`)]++ // 192.0.2.0/24 -> 292.0.2.0/24, or the like
			return join(l)
		}, "the inclusion proof does not lead to the checkpoint's root: the event was changed"},
		{"OneEventDropped", func() []byte {
			l := split()
			return join(slices.Delete(l, mid, mid+1))
		}, "is missing in between"},
		{"FirstEventOfAKeyDropped", func() []byte {
			l := split()
			i := slices.IndexFunc(l, func(l []byte) bool { return bytes.Contains(l, []byte("keyreg.key.created.v1")) })
			return join(slices.Delete(l, i, i+1))
		}, "the earlier events of key/"},
		{"TwoEventsSwapped", func() []byte {
			l := split()
			l[0], l[1] = l[1], l[0]
			return join(l)
		}, "events are out of order"},
		{"SignedWithAnotherKey", func() []byte {
			l := split()
			var tr replay.ExportTrailer
			json.Unmarshal(l[len(l)-1], &tr)
			resign(l, tr.Checkpoint.TreeSize)
			return join(l)
		}, "not signed by a trusted key"},
		{"TreeSizeAltered", func() []byte {
			l := split()
			editTrailer(l, func(tr *replay.ExportTrailer) { tr.Checkpoint.TreeSize-- })
			return join(l)
		}, "states tree size"},
		{"TreeSizeAlteredInTheNote", func() []byte {
			l := split()
			editTrailer(l, func(tr *replay.ExportTrailer) {
				tr.Checkpoint.TreeSize--
				text, sigs, _ := strings.Cut(tr.Checkpoint.Note, "\n\n")
				lines := strings.Split(text, "\n")
				lines[1] = fmt.Sprint(tr.Checkpoint.TreeSize)
				tr.Checkpoint.Note = strings.Join(lines, "\n") + "\n\n" + sigs
			})
			return join(l)
		}, "signature is invalid"},
		{"CheckpointLineMissing", func() []byte {
			l := split()
			return join(l[:len(l)-1])
		}, "the export was cut short"},
		{"EventCountAltered", func() []byte {
			l := split()
			editTrailer(l, func(tr *replay.ExportTrailer) { tr.Events++ })
			return join(l)
		}, "it was cut or padded"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sum, err := replay.VerifyExport(bytes.NewReader(c.tamper()), replay.VerifyOptions{Keys: keys})
			var ve *replay.VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, replay.ErrExportInvalid) {
				t.Fatalf("verify: %v (summary %+v); want a *VerifyError", err, sum)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("verify: %v; want it to say %q", err, c.want)
			}
			t.Logf("%v", err)
		})
	}
	// The honest export read from a pipe (no seeking) and from a file.
	pr, pw := ioPipe()
	go func() { pw.Write(honest); pw.Close() }()
	if _, err := replay.VerifyExport(pr, replay.VerifyOptions{Keys: keys}); err != nil {
		t.Fatalf("from a pipe: %v", err)
	}
	path := filepath.Join(t.TempDir(), "export.jsonl")
	os.WriteFile(path, honest, 0o600)
	f, _ := os.Open(path)
	defer f.Close()
	if _, err := replay.VerifyExport(f, replay.VerifyOptions{Keys: keys}); err != nil {
		t.Fatalf("from a file: %v", err)
	}
}

// TestVerifyFilteredExport: an export filtered by type leaves gaps in the chains, which
// verify reports unless told they are expected; proofs are checked either way.
func TestVerifyFilteredExport(t *testing.T) {
	log := eventstest.NewJetStreamLog(t)
	auditScenario(t, log)
	e := newAuditEnv(t, log)
	e.catchUp()
	b := e.export(replay.ExportQuery{Workspace: "acme", Filter: projections.AuditFilter{Types: []events.Type{events.TypeKeyCreated, events.TypeKeyRevoked}}})
	keys := []string{e.vkey}
	if _, err := replay.VerifyExport(bytes.NewReader(b), replay.VerifyOptions{Keys: keys}); err == nil || !strings.Contains(err.Error(), "missing in between") {
		t.Fatalf("filtered export without AllowGaps: %v", err)
	}
	sum, err := replay.VerifyExport(bytes.NewReader(b), replay.VerifyOptions{Keys: keys, AllowGaps: true})
	if err != nil || sum.ChainBreaks == 0 || sum.Complete || len(sum.Filter.Types) != 2 {
		t.Fatalf("filtered export with AllowGaps: %+v, %v", sum, err)
	}
}

// TestLaterCheckpointExtendsEarlier seals two checkpoints with events between them and
// checks, from the signed notes alone plus a consistency proof, that the later tree
// extends the earlier one: the tree only grew.
func TestLaterCheckpointExtendsEarlier(t *testing.T) {
	log := eventstest.NewJetStreamLog(t)
	ctx := context.Background()
	scenario(t, log)
	e := newAuditEnv(t, log)
	first, err := e.seal(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	h := &commands.Handler{Log: log}
	for i := range 5 {
		mustRes(t)(h.CreateKey(ctx, commands.CreateKey{Workspace: "globex", Name: fmt.Sprint("later ", i)}))
	}
	second, err := e.seal(ctx, first.TreeSize+1)
	if err != nil {
		t.Fatal(err)
	}
	verifier, _ := note.NewVerifier(e.vkey)
	open := func(c events.CheckpointState) (int64, tlog.Hash) {
		n, err := note.Open([]byte(c.Note), note.VerifierList(verifier))
		if err != nil {
			t.Fatal(err)
		}
		size, root, err := events.ParseCheckpoint([]byte(n.Text))
		if err != nil {
			t.Fatal(err)
		}
		return int64(size), root
	}
	n1, r1 := open(first)
	n2, r2 := open(second)
	p, err := e.store.ProveTree(n2, n1)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckTree(p, n2, r2, n1, r1); err != nil {
		t.Fatalf("checkpoint %d does not extend checkpoint %d: %v", n2, n1, err)
	}
	// A rewritten history would not: a tree over other records of the same size.
	forged := r1
	forged[0] ^= 1
	if err := tlog.CheckTree(p, n2, r2, n1, forged); err == nil {
		t.Fatal("a different earlier root checked")
	}
	// Sealing no more than the latest appends nothing.
	res, err := e.h.SealCheckpoint(ctx, commands.SealCheckpoint{TreeSize: first.TreeSize, RootHash: first.RootHash, Note: first.Note})
	if err != nil || res.Seq != second.Version {
		t.Fatalf("re-sealing an older size: %+v, %v; want no-op at %d", res, err, second.Version)
	}
}

func ioPipe() (*os.File, *os.File) {
	r, w, err := os.Pipe()
	if err != nil {
		panic(err)
	}
	return r, w
}
