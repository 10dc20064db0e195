package projections

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keyreg/keyreg/events"
)

// A rebuild into a new store (Options.NoSync on an empty directory) loads the append-only
// entries, whose keys only grow within their "lane" (the audit tree tlog/, and per
// workspace its history wshist/<ws>/, tree wtlog/<ws>/ and leaf indexes wtseq/<ws>/), as
// sorted tables that Pebble ingests whole, rather than through its memtable: no skiplist
// insert, no flush, and tables whose ranges do not overlap each other nor the memtable go
// straight to the bottom level. The other entries (states, per-aggregate history, the
// indexes) go through batches as usual.
//
// The lanes are held in memory until bulkFlushBytes of them are pending, and at Sync. Until
// then the DB does not hold them, so the batch reads the trees' frontiers and sizes from
// bulkLoad instead of the DB. The views are the same bytes either way (TestRebuildEqualsLive).
var bulkFlushBytes = 32 << 20 // a variable for tests

// bulkLoad is the state of a bulk rebuild, owned by the Apply that holds applyMu.
type bulkLoad struct {
	mu    sync.Mutex // Sync may flush while no Apply runs, without applyMu
	dir   string
	fs    vfs.FS
	opts  sstable.WriterOptions
	lanes map[string]*lane // by lane prefix
	bytes int
	files int // tables written so far, to name the next

	top frontier                        // the audit tree's frontier
	ws  map[events.Workspace]*wsTreeTxn // each workspace tree's size and frontier
}

// lane is the pending entries of one lane, in key order.
type lane struct {
	keys, values [][]byte
}

// bulkEntry is an entry a txn sends to a lane once its batch commits.
type bulkEntry struct {
	lane       string
	key, value []byte
}

func newBulkLoad(dir string, fs vfs.FS, po *pebble.Options, db *pebble.DB) *bulkLoad {
	o := po.Clone()
	o.EnsureDefaults()
	// Level 0's options: an ingested table may land on any level.
	return &bulkLoad{dir: dir, fs: fs, opts: o.MakeWriterOptions(0, db.TableFormat()),
		lanes: map[string]*lane{}, ws: map[events.Workspace]*wsTreeTxn{}}
}

// commit takes the entries and tree frontiers of a committed txn, and flushes when enough
// are pending.
func (b *bulkLoad) commit(t *txn, db *pebble.DB) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.top = t.tree.top
	for ws, wt := range t.tree.ws {
		b.ws[ws] = wt
	}
	for _, e := range t.bulk {
		l := b.lanes[e.lane]
		if l == nil {
			l = &lane{}
			b.lanes[e.lane] = l
		}
		l.keys = append(l.keys, e.key)
		l.values = append(l.values, e.value)
		b.bytes += len(e.key) + len(e.value)
	}
	if b.bytes < bulkFlushBytes {
		return nil
	}
	return b.flush(db)
}

// flushBulk has the DB ingest the pending lanes of a bulk rebuild.
func (s *Store) flushBulk() error {
	if s.bulk == nil {
		return nil
	}
	s.bulk.mu.Lock()
	defer s.bulk.mu.Unlock()
	return s.bulk.flush(s.db)
}

// put sets key to value in the batch or, in a bulk rebuild, sends it to lane (the
// prefix of key that its lane's keys share).
func (t *txn) put(lane string, key, value []byte) error {
	if t.s.bulk == nil {
		return t.b.Set(key, value, nil)
	}
	t.bulk = append(t.bulk, bulkEntry{lane: lane, key: key, value: bytes.Clone(value)})
	return nil
}

// flush (with mu held) writes the pending lanes as one table per kind of lane (the lanes of a kind in
// prefix order, so each table is sorted) and has the DB ingest them.
func (b *bulkLoad) flush(db *pebble.DB) error {
	if len(b.lanes) == 0 {
		return nil
	}
	byKind := map[string][]string{}
	for p := range b.lanes {
		kind := p[:strings.IndexByte(p, '/')+1]
		byKind[kind] = append(byKind[kind], p)
	}
	var paths []string
	for _, prefixes := range byKind {
		slices.Sort(prefixes)
		b.files++
		path := filepath.Join(b.dir, fmt.Sprintf("bulk-%06d.sst", b.files))
		f, err := b.fs.Create(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			return fmt.Errorf("bulk load: %w", err)
		}
		w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), b.opts)
		for _, p := range prefixes {
			l := b.lanes[p]
			for i, k := range l.keys {
				if err := w.Set(k, l.values[i]); err != nil {
					w.Close()
					return fmt.Errorf("bulk load %s: %w", k, err)
				}
			}
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("bulk load: %w", err)
		}
		paths = append(paths, path)
	}
	if err := db.Ingest(context.Background(), paths); err != nil {
		return fmt.Errorf("bulk load: ingest: %w", err)
	}
	for _, p := range paths {
		b.fs.Remove(p) // ingest links the table into the DB; this name may remain
	}
	b.lanes = map[string]*lane{}
	b.bytes = 0
	return nil
}

// clone returns a copy of f that the txn may change.
func (f frontier) clone() frontier {
	return frontier{idx: slices.Clone(f.idx), hash: slices.Clone(f.hash)}
}
