package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/replay"
)

// exportFile is an export split into its event lines and its trailer, to edit and join.
type exportFile struct {
	t      *testing.T
	events [][]byte
	tr     replay.ExportTrailer
}

func splitExport(t *testing.T, b []byte) *exportFile {
	t.Helper()
	lines := bytes.Split(bytes.TrimSuffix(bytes.Clone(b), []byte("\n")), []byte("\n"))
	f := &exportFile{t: t, events: lines[:len(lines)-1]}
	if err := json.Unmarshal(lines[len(lines)-1], &f.tr); err != nil {
		t.Fatal(err)
	}
	return f
}

// index returns the index of the last event line containing s.
func (f *exportFile) index(s string) int {
	f.t.Helper()
	for i := len(f.events) - 1; i >= 0; i-- {
		if bytes.Contains(f.events[i], []byte(s)) {
			return i
		}
	}
	f.t.Fatalf("no event line contains %q", s)
	return -1
}

// drop removes event line i and lowers the trailer's count to match.
func (f *exportFile) drop(i int) *exportFile {
	f.events = slices.Delete(f.events, i, i+1)
	f.tr.Events--
	return f
}

func (f *exportFile) bytes() []byte {
	tr, err := json.Marshal(f.tr)
	if err != nil {
		f.t.Fatal(err)
	}
	return append(bytes.Join(append(slices.Clone(f.events), tr), []byte("\n")), '\n')
}

func seqOf(t *testing.T, line []byte) uint64 {
	t.Helper()
	var l replay.ExportLine
	if err := json.Unmarshal(line, &l); err != nil {
		t.Fatal(err)
	}
	return l.Sequence
}

// TestVerifyCompleteness edits honest exports so that every count in the file still
// matches (the trailer's event count, the chains of what is left), and checks that each
// edit fails verification with a message naming its cause, and that the summary then
// says nothing is proven (Complete false). Honest exports of a workspace, a key and a
// type filter pass and say what they prove.
func TestVerifyCompleteness(t *testing.T) {
	log := eventstest.NewJetStreamLog(t)
	keyID := auditScenario(t, log)
	e := newAuditEnv(t, log)
	e.catchUp()
	keys := []string{e.vkey}
	ws := e.export(replay.ExportQuery{Workspace: "acme"})
	key := e.export(replay.ExportQuery{Workspace: "acme", Filter: projections.AuditFilter{KeyID: keyID}})
	other := e.export(replay.ExportQuery{Workspace: "globex"})
	typed := e.export(replay.ExportQuery{Workspace: "acme", Filter: projections.AuditFilter{Types: []events.Type{events.TypeKeyRevoked}}})
	if a, b := splitExport(t, ws).tr.Checkpoint.TreeSize, splitExport(t, other).tr.Checkpoint.TreeSize; a != b {
		t.Fatalf("the exports have checkpoints %d and %d; want one", a, b)
	}

	// Honest exports, and what they prove.
	honest := []struct {
		name     string
		b        []byte
		opts     replay.VerifyOptions
		complete bool
		proves   string
	}{
		{"Workspace", ws, replay.VerifyOptions{Keys: keys}, true, "complete: these are all 51 events of workspace acme up to stream sequence"},
		{"Key", key, replay.VerifyOptions{Keys: keys}, true, "complete: these are all 5 events of key " + keyID},
		{"Type", typed, replay.VerifyOptions{Keys: keys, AllowGaps: true}, false, "each matches the filter"},
	}
	for _, c := range honest {
		t.Run("Honest"+c.name, func(t *testing.T) {
			sum, err := replay.VerifyExport(bytes.NewReader(c.b), c.opts)
			if err != nil || sum.Complete != c.complete || !strings.Contains(sum.Proves, c.proves) {
				t.Fatalf("verify: %v; complete %v, proves %q; want complete %v, proves %q", err, sum.Complete, sum.Proves, c.complete, c.proves)
			}
			if !c.complete && !strings.Contains(sum.NotProven, "completeness of the filtered selection") {
				t.Fatalf("not proven: %q", sum.NotProven)
			}
			t.Logf("proves: %s; not proven: %s", sum.Proves, sum.NotProven)
		})
	}

	resignStatement := func(f *exportFile, edit func(*replay.ExportStatement)) *exportFile {
		t.Helper()
		n, err := note.Open([]byte(f.tr.Statement), note.VerifierList(mustVerifier(t, e.vkey)))
		if err != nil {
			t.Fatal(err)
		}
		st, err := replay.ParseStatement([]byte(n.Text))
		if err != nil {
			t.Fatal(err)
		}
		edit(&st)
		if f.tr.Statement, err = e.attest(st.FormatText()); err != nil {
			t.Fatal(err)
		}
		return f
	}
	cases := []struct {
		name   string
		tamper func() []byte
		opts   replay.VerifyOptions
		want   string
	}{
		{"LastEventOfAKeyRemoved", func() []byte {
			// The first revocation, "key 0"'s last event, in the middle of the export (the
			// last revocation is the watched key's, the export's last event).
			f := splitExport(t, ws)
			i := f.index(`"type":"keyreg.key.revoked.v1"`)
			i = slices.IndexFunc(f.events[:i], func(l []byte) bool {
				return bytes.Contains(l, []byte(`"type":"keyreg.key.revoked.v1"`)) && bytes.Contains(l, []byte(`"subject":"key/`))
			})
			if i < 0 || i == len(f.events)-1 {
				t.Fatal("no revocation in the middle of the export")
			}
			return f.drop(i).bytes()
		}, replay.VerifyOptions{Keys: keys}, "1 of the workspace's events are missing: the signed statement says workspace acme had 51 events"},
		{"LastEventOfTheExportRemoved", func() []byte {
			f := splitExport(t, ws)
			return f.drop(len(f.events) - 1).bytes()
		}, replay.VerifyOptions{Keys: keys}, "1 of the workspace's events are missing"},
		{"LastEventOfTheExportRemovedAllowGaps", func() []byte {
			f := splitExport(t, ws)
			return f.drop(len(f.events) - 1).bytes()
		}, replay.VerifyOptions{Keys: keys, AllowGaps: true}, "1 of the workspace's events are missing"},
		{"EventOfAnotherWorkspaceInserted", func() []byte {
			f, g := splitExport(t, ws), splitExport(t, other)
			ins := g.events[len(g.events)-1]
			i, _ := slices.BinarySearchFunc(f.events, seqOf(t, ins), func(l []byte, s uint64) int { return int(seqOf(t, l)) - int(s) })
			f.events = slices.Insert(f.events, i, ins)
			f.tr.Events++
			return f.bytes()
		}, replay.VerifyOptions{Keys: keys}, `is of workspace "globex", in an export of "acme"`},
		{"TwoEventsSwapped", func() []byte {
			f := splitExport(t, ws)
			n := len(f.events)
			f.events[n-1], f.events[n-2] = f.events[n-2], f.events[n-1]
			return f.bytes()
		}, replay.VerifyOptions{Keys: keys}, "events are out of order"},
		{"KeyExportMissingItsNewestEvent", func() []byte {
			f := splitExport(t, key)
			return f.drop(len(f.events) - 1).bytes()
		}, replay.VerifyOptions{Keys: keys}, "the key's newest events are missing: the signed statement says key " + keyID + "'s last event"},
		{"KeyExportMissingAMiddleEvent", func() []byte {
			f := splitExport(t, key)
			return f.drop(2).bytes()
		}, replay.VerifyOptions{Keys: keys, AllowGaps: true}, "is missing in between"},
		{"KeyExportMissingItsFirstEvent", func() []byte {
			f := splitExport(t, key)
			return f.drop(0).bytes()
		}, replay.VerifyOptions{Keys: keys}, "the earlier events of key/" + keyID + " are missing"},
		{"FilteredExportWithAnEventOutsideItsFilter", func() []byte {
			f, w := splitExport(t, typed), splitExport(t, ws)
			f.events = append([][]byte{w.events[0]}, f.events...)
			f.tr.Events++
			return f.bytes()
		}, replay.VerifyOptions{Keys: keys, AllowGaps: true}, "does not match the export's filter: not of the types keyreg.key.revoked.v1"},
		{"TrailerEventCountEdited", func() []byte {
			f := splitExport(t, ws)
			f.tr.Events++
			return f.bytes()
		}, replay.VerifyOptions{Keys: keys}, "it was cut or padded"},
		{"TrailerTreeSizeEdited", func() []byte {
			f := splitExport(t, ws)
			f.tr.Checkpoint.TreeSize--
			return f.bytes()
		}, replay.VerifyOptions{Keys: keys}, "the checkpoint states tree size"},
		{"TrailerRootEdited", func() []byte {
			f := splitExport(t, ws)
			f.tr.Checkpoint.RootHash = splitExport(t, typed).tr.Checkpoint.RootHash[:4] + "AAAA" + f.tr.Checkpoint.RootHash[8:]
			return f.bytes()
		}, replay.VerifyOptions{Keys: keys}, "the checkpoint states root hash"},
		{"StatementTextEdited", func() []byte {
			f := splitExport(t, ws)
			f.tr.Statement = strings.Replace(f.tr.Statement, "workspace acme 51 ", "workspace acme 50 ", 1)
			return f.bytes()
		}, replay.VerifyOptions{Keys: keys}, "the export statement's signature is invalid"},
		{"StatementSignatureEdited", func() []byte {
			f := splitExport(t, ws)
			i := strings.LastIndex(f.tr.Statement, "— keyreg-test ") + len("— keyreg-test ") + 10
			s := []byte(f.tr.Statement)
			s[i] ^= 1
			f.tr.Statement = string(s)
			return f.bytes()
		}, replay.VerifyOptions{Keys: keys}, "export statement"},
		{"StatementOfAnotherExport", func() []byte {
			f := splitExport(t, ws)
			f.tr.Statement = splitExport(t, key).tr.Statement
			return f.bytes()
		}, replay.VerifyOptions{Keys: keys}, "the trailer says filter null but the signed export statement says"},
		{"TrailerWorkspaceEdited", func() []byte {
			f := splitExport(t, other)
			f.tr.Workspace = "acme"
			return f.bytes()
		}, replay.VerifyOptions{Keys: keys}, `the trailer says workspace "acme" but the signed export statement says "globex"`},
		{"FilterRemovedFromTheTrailer", func() []byte {
			f := splitExport(t, typed)
			f.tr.Filter = nil
			return f.bytes()
		}, replay.VerifyOptions{Keys: keys, AllowGaps: true}, "but the signed export statement says {\"type\""},
		{"StatementWithAnotherWorkspaceRoot", func() []byte {
			f := resignStatement(splitExport(t, ws), func(st *replay.ExportStatement) { st.WorkspaceRoot[0] ^= 1 })
			return f.bytes()
		}, replay.VerifyOptions{Keys: keys}, "do not hash to the signed root of workspace acme's tree"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sum, err := replay.VerifyExport(bytes.NewReader(c.tamper()), c.opts)
			var ve *replay.VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, replay.ErrExportInvalid) {
				t.Fatalf("verify: %v (summary %+v); want a *VerifyError", err, sum)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("verify: %v; want it to say %q", err, c.want)
			}
			if sum.Complete || sum.Proves != "" {
				t.Fatalf("a failed verification reports complete %v, proves %q", sum.Complete, sum.Proves)
			}
			t.Logf("%v", err)
		})
	}

	// Without its statement an export still proves its events genuine, never complete.
	t.Run("StatementRemoved", func(t *testing.T) {
		f := splitExport(t, ws)
		f.tr.Statement = ""
		sum, err := replay.VerifyExport(bytes.NewReader(f.bytes()), replay.VerifyOptions{Keys: keys})
		if err != nil || sum.Complete || !strings.Contains(sum.NotProven, "no signed statement") {
			t.Fatalf("verify: %v; complete %v, not proven %q", err, sum.Complete, sum.NotProven)
		}
	})
}

func mustVerifier(t *testing.T, vkey string) note.Verifier {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// FuzzVerifyExport feeds VerifyExport edits of a real small export (seeded with the
// export itself, its lines and a few cuts): it must never panic, and whenever it reports
// an export complete, the export's events must be exactly the honest export's.
func FuzzVerifyExport(f *testing.F) {
	log := eventstest.NewJetStreamLog(f)
	ctx := context.Background()
	h := &commands.Handler{Log: log}
	mustRes(f)(h.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: "acme", Name: "Acme"}))
	k := mustRes(f)(h.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "k", Allowlist: []string{"192.0.2.0/24"}}))
	mustRes(f)(h.RevokeKey(ctx, commands.RevokeKey{Workspace: "acme", KeyID: k.ID}))
	e := newAuditEnv(f, log)
	e.catchUp()
	honest := e.export(replay.ExportQuery{Workspace: "acme"})
	want := eventsOf(honest)
	f.Add(honest)
	lines := bytes.SplitAfter(honest, []byte("\n"))
	for i := range lines {
		f.Add(bytes.Join(slices.Delete(slices.Clone(lines), i, i+1), nil))
		f.Add(lines[i])
	}
	f.Add(e.export(replay.ExportQuery{Workspace: "acme", Filter: projections.AuditFilter{KeyID: k.ID}}))
	f.Add([]byte("{}\n"))
	keys := []string{e.vkey}
	f.Fuzz(func(t *testing.T, b []byte) {
		sum, err := replay.VerifyExport(bytes.NewReader(b), replay.VerifyOptions{Keys: keys})
		if err != nil && (sum.Complete || sum.Proves != "") {
			t.Fatalf("failed (%v) but complete %v, proves %q", err, sum.Complete, sum.Proves)
		}
		if err == nil && sum.Complete && sum.Filter == nil && !slices.Equal(eventsOf(b), want) {
			t.Fatalf("an export whose events differ from the honest one verified complete:\n%s", b)
		}
	})
}

// eventsOf returns "<sequence> <event>" of each event line of an export, ignoring blank
// and unparsable lines.
func eventsOf(b []byte) []string {
	var out []string
	for _, l := range bytes.Split(b, []byte("\n")) {
		var e replay.ExportLine
		if json.Unmarshal(l, &e) == nil && e.Event != nil {
			out = append(out, fmt.Sprint(e.Sequence, " ", string(e.Event)))
		}
	}
	return out
}
