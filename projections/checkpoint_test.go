package projections

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/keyreg/keyreg/events"
)

// TestCheckpointTo copies a live LazySync store between two batches: the copy opens on its
// own, at the checkpoint CheckpointTo returned, with exactly the entries the store had
// then, and the store goes on applying.
func TestCheckpointTo(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 50)
	recs := allRecords(t, log)
	half := len(recs) / 2
	s, err := Open(filepath.Join(t.TempDir(), "db"), Options{LazySync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Apply(recs[:half]); err != nil {
		t.Fatal(err)
	}
	want := dump(t, s)
	dir := filepath.Join(t.TempDir(), "copy")
	cp, err := s.CheckpointTo(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cp != uint64(half) {
		t.Fatalf("CheckpointTo returned %d, want %d", cp, half)
	}
	if err := s.Apply(recs[half:]); err != nil {
		t.Fatal(err)
	}
	c, err := Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Checkpoint() != cp || c.Recovered() {
		t.Fatalf("the copy is at %d (recovered %v), want %d", c.Checkpoint(), c.Recovered(), cp)
	}
	if got := dump(t, c); !bytes.Equal(got, want) {
		t.Fatalf("the copy holds %d bytes of entries, the store had %d", len(got), len(want))
	}
	if s.Checkpoint() != uint64(len(recs)) {
		t.Fatalf("the store is at %d after the copy, want %d", s.Checkpoint(), len(recs))
	}
	if _, err := s.CheckpointTo(dir); err == nil {
		t.Fatal("CheckpointTo into an existing directory succeeded")
	}
}
