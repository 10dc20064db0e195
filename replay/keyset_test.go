package replay_test

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/replay"
)

// TestParseKeySet reads key set files: bare keys, bounds, comments; bad lines are named.
func TestParseKeySet(t *testing.T) {
	_, k1, _ := note.GenerateKey(rand.Reader, "keyreg")
	_, k2, _ := note.GenerateKey(rand.Reader, "keyreg")
	got, err := replay.ParseKeySet("# keys\n" + k1 + " retired=9\n\n  " + k2 + "\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []replay.TrustedKey{{VerifierKey: k1, RetiredSeq: 9}, {VerifierKey: k2}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("ParseKeySet = %+v, want %+v", got, want)
	}
	if s := got[0].String(); s != k1+" retired=9" {
		t.Fatalf("String = %q", s)
	}
	for name, c := range map[string]struct{ in, want string }{
		"Empty":        {"# nothing\n\n", "no verifier key"},
		"NotAKey":      {k1 + "\nkeyreg+zz\n", "line 2"},
		"UnknownBound": {k1 + " until=4\n", "want retired=N"},
		"ZeroBound":    {k1 + " retired=0\n", "line 1: \"retired=0\""},
		"TwoBounds":    {k1 + " retired=4 retired=5\n", "at most retired=N"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := replay.ParseKeySet(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ParseKeySet(%q) = %v, want an error with %q", c.in, err, c.want)
			}
		})
	}
}

// TestVerifyKeyBounds: a retired key verifies checkpoints of trees before its retirement
// only, and the failure names the key and why.
func TestVerifyKeyBounds(t *testing.T) {
	log := eventstest.NewJetStreamLog(t)
	auditScenario(t, log)
	e := newAuditEnv(t, log)
	e.catchUp()
	export := e.export(replay.ExportQuery{Workspace: "acme"})
	_, tr := exportLines(t, export)
	size := tr.Checkpoint.TreeSize
	parts := strings.SplitN(e.vkey, "+", 3)
	name := parts[0] + "+" + parts[1] // how verify names the key: keyreg-test+<hash>
	for _, c := range []struct {
		name  string
		key   replay.TrustedKey
		wants string // "" when it verifies
	}{
		{"Bare", replay.TrustedKey{VerifierKey: e.vkey}, ""},
		{"RetiredAfterTheTree", replay.TrustedKey{VerifierKey: e.vkey, RetiredSeq: size + 1}, ""},
		{"RetiredInTheTree", replay.TrustedKey{VerifierKey: e.vkey, RetiredSeq: size}, name + " was retired at stream sequence"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := replay.VerifyExport(bytes.NewReader(export), replay.VerifyOptions{KeySet: []replay.TrustedKey{c.key}})
			switch {
			case c.wants == "" && err != nil:
				t.Fatalf("verify with %s: %v", c.key, err)
			case c.wants != "" && (err == nil || !strings.Contains(err.Error(), c.wants)):
				t.Fatalf("verify with %s: %v; want a failure with %q", c.key, err, c.wants)
			}
		})
	}
}
