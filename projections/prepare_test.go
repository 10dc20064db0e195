package projections

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keyreg/keyreg/events"
)

// prepareAll decodes and prepares recs as a rebuild's workers do.
func prepareAll(t *testing.T, recs []events.Record) ([]events.Decoded, []Prepared) {
	t.Helper()
	ds := make([]events.Decoded, len(recs))
	ps := make([]Prepared, len(recs))
	for i, r := range recs {
		d, err := events.DecodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		if ps[i], err = Prepare(d); err != nil {
			t.Fatal(err)
		}
		ds[i] = d
	}
	return ds, ps
}

// TestApplyPreparedEqualsApply: records prepared ahead (history entries, leaf hashes,
// subject checks) give the same views as Apply, into a live store and a bulk rebuild.
func TestApplyPreparedEqualsApply(t *testing.T) {
	log := events.NewMemLog()
	w := newWriter(log)
	scenario(t, w, 0)
	scenario(t, w, 0)
	recs := allRecords(t, log)
	live := openMem(t)
	if err := live.Apply(recs); err != nil {
		t.Fatal(err)
	}
	ds, ps := prepareAll(t, recs)
	prepared := openMem(t)
	bulk, err := Open("bulk", Options{FS: vfs.NewMem(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bulk.Close()
	for _, s := range []*Store{prepared, bulk} {
		for i := 0; i < len(ds); i += 7 {
			j := min(i+7, len(ds))
			if err := s.ApplyPrepared(ds[i:j], ps[i:j]); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		if w, g := dump(t, live), dump(t, s); !bytes.Equal(w, g) {
			t.Fatalf("prepared apply differs from Apply:\n%s\n---\n%s", g, w)
		}
	}
}

// TestApplyPreparedChecksSubject: a record whose subject does not match its event fails
// ApplyPrepared as it fails Apply, and nothing of the batch is written.
func TestApplyPreparedChecksSubject(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 0)
	recs := allRecords(t, log)
	s := openMem(t)
	if err := s.Apply(recs[:len(recs)-2]); err != nil {
		t.Fatal(err)
	}
	before := dump(t, s)
	bad := recs[len(recs)-2:]
	bad[1].Subject = "keyreg.acme.key.K9.renamed"
	ds, ps := prepareAll(t, bad)
	err := s.ApplyPrepared(ds, ps)
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("ApplyPrepared: %v, want an error with %q", err, "does not match")
	}
	if !bytes.Equal(dump(t, s), before) {
		t.Error("a failed ApplyPrepared changed the views")
	}
}
