package projections

import (
	"bytes"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keyreg/keyreg/events"
)

// TestBulkRebuildEqualsLive: a bulk rebuild (a new store with NoSync), in small batches
// and flushing its lanes every few hundred bytes (so that tables of one kind overlap and
// the trees' frontiers cross batches and flushes), gives the same bytes as applying live.
func TestBulkRebuildEqualsLive(t *testing.T) {
	defer func(n int) { bulkFlushBytes = n }(bulkFlushBytes)
	for _, flushAt := range []int{500, 1 << 30} {
		bulkFlushBytes = flushAt
		testBulkRebuild(t, flushAt < 1<<20)
	}
}

func testBulkRebuild(t *testing.T, flushes bool) {
	log := events.NewMemLog()
	w := newWriter(log)
	scenario(t, w, 0)
	scenario(t, w, 0) // twice: more leaves and workspaces events
	recs := allRecords(t, log)
	live := openMem(t)
	if err := live.Apply(recs); err != nil {
		t.Fatal(err)
	}
	bulk, err := Open("bulk", Options{FS: vfs.NewMem(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bulk.Close()
	if bulk.bulk == nil {
		t.Fatal("a new NoSync store is not in bulk mode")
	}
	for i := 0; i < len(recs); i += 3 {
		if err := bulk.Apply(recs[i:min(i+3, len(recs))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := bulk.Sync(); err != nil {
		t.Fatal(err)
	}
	if bulk.bulk.busy != nil || len(bulk.bulk.lanes) != 0 {
		t.Fatal("Sync returned before the lanes were ingested")
	}
	if flushes && bulk.bulk.files < 8 || !flushes && bulk.bulk.files > 4 {
		t.Fatalf("only %d tables ingested: the lanes did not flush along the way", bulk.bulk.files)
	}
	if w, g := dump(t, live), dump(t, bulk); !bytes.Equal(w, g) {
		t.Fatalf("bulk rebuild differs from live views:\n%s\n---\n%s", g, w)
	}
}
