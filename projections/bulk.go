package projections

import (
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
// The lanes are held in memory, packed in one buffer each (no pointer per entry for the
// GC to scan), until bulkFlushBytes of them are pending. Their tables are then written and
// ingested by a goroutine in the background while the rebuild goes on (one flush at a
// time: the next waits for it, and reports its error), so that only the last part is left
// for Sync. Until then the DB does not hold them, so the batch reads the trees' frontiers
// and sizes from bulkLoad instead of the DB. The views are the same bytes either way
// (TestRebuildEqualsLive, TestBulkRebuildEqualsLive).
var bulkFlushBytes = 4 << 20 // a variable for tests

// bulkLoad is the state of a bulk rebuild, owned by the Apply that holds applyMu.
type bulkLoad struct {
	mu    sync.Mutex // Sync may flush while no Apply runs, without applyMu
	dir   string
	fs    vfs.FS
	opts  sstable.WriterOptions
	lanes map[string]*lane // by lane prefix
	bytes int
	files int            // tables written so far, to name the next
	busy  chan error     // the flush running in the background, if any: its result
	sizes map[string]int // each lane's bytes at the last flush, to size its next buffer
	stage bulkEntries    // the txns' entries, buffers reused from one txn to the next (applyMu)

	top frontier                        // the audit tree's frontier
	ws  map[events.Workspace]*wsTreeTxn // each workspace tree's size and frontier
}

// lane is the pending entries of one lane, in key order: their keys and values back to
// back in buf, entry i's key ending at ends[2i] and its value at ends[2i+1].
type lane struct {
	buf  []byte
	ends []int
}

func (l *lane) add(key, value []byte) {
	l.buf = append(l.buf, key...)
	l.ends = append(l.ends, len(l.buf))
	l.buf = append(l.buf, value...)
	l.ends = append(l.ends, len(l.buf))
}

// bulkEntries are the entries a txn sends to the lanes once its batch commits: entry i
// goes to lane names[i], its key and value packed in l as a lane packs them.
type bulkEntries struct {
	names []string
	l     lane
}

func newBulkLoad(dir string, fs vfs.FS, po *pebble.Options, db *pebble.DB) *bulkLoad {
	o := po.Clone()
	o.EnsureDefaults()
	// Level 0's options: an ingested table may land on any level.
	return &bulkLoad{dir: dir, fs: fs, opts: o.MakeWriterOptions(0, db.TableFormat()),
		lanes: map[string]*lane{}, sizes: map[string]int{}, ws: map[events.Workspace]*wsTreeTxn{}}
}

// commit takes the entries and tree frontiers of a committed txn, and starts a flush when
// enough are pending.
func (b *bulkLoad) commit(t *txn, db *pebble.DB) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.top = t.tree.top
	for ws, wt := range t.tree.ws {
		b.ws[ws] = wt
	}
	var l *lane
	name := ""
	start := 0
	for i, n := range t.bulk.names {
		if l == nil || n != name {
			if l = b.lanes[n]; l == nil {
				l = &lane{}
				if size := b.sizes[n]; size > 0 {
					l.buf = make([]byte, 0, size+size/8)
				}
				b.lanes[n] = l
			}
			name = n
		}
		k, v := t.bulk.l.ends[2*i], t.bulk.l.ends[2*i+1]
		l.add(t.bulk.l.buf[start:k], t.bulk.l.buf[k:v])
		b.bytes += v - start
		start = v
	}
	b.stage = bulkEntries{names: t.bulk.names[:0], l: lane{buf: t.bulk.l.buf[:0], ends: t.bulk.l.ends[:0]}}
	t.bulk = bulkEntries{}
	if b.bytes < bulkFlushBytes {
		return nil
	}
	return b.flush(db, false)
}

// flushBulk has the DB ingest the pending lanes of a bulk rebuild, and waits for it.
func (s *Store) flushBulk() error {
	if s.bulk == nil {
		return nil
	}
	s.bulk.mu.Lock()
	defer s.bulk.mu.Unlock()
	return s.bulk.flush(s.db, true)
}

// put sets key to value in the batch or, in a bulk rebuild, sends it to lane (the
// prefix of key that its lane's keys share).
func (t *txn) put(lane string, key, value []byte) error {
	if t.s.bulk == nil {
		return t.b.Set(key, value, nil)
	}
	t.bulk.names = append(t.bulk.names, lane)
	t.bulk.l.add(key, value)
	return nil
}

// wait (with mu held) waits for the flush in the background, if any, and returns its error.
func (b *bulkLoad) wait() error {
	if b.busy == nil {
		return nil
	}
	err := <-b.busy
	b.busy = nil
	return err
}

// flush (with mu held) waits for the previous flush, then writes the pending lanes as one
// table per kind of lane (the lanes of a kind in prefix order, so each table is sorted)
// and has the DB ingest them: in the background, or before it returns when sync.
func (b *bulkLoad) flush(db *pebble.DB, sync bool) error {
	if err := b.wait(); err != nil {
		return err
	}
	if len(b.lanes) == 0 {
		return nil
	}
	byKind := map[string][]string{}
	for p := range b.lanes {
		kind := p[:strings.IndexByte(p, '/')+1]
		byKind[kind] = append(byKind[kind], p)
	}
	tables := make([]bulkTable, 0, len(byKind))
	for _, prefixes := range byKind {
		slices.Sort(prefixes)
		b.files++
		t := bulkTable{path: filepath.Join(b.dir, fmt.Sprintf("bulk-%06d.sst", b.files))}
		for _, p := range prefixes {
			t.lanes = append(t.lanes, b.lanes[p])
			b.sizes[p] = len(b.lanes[p].buf)
		}
		tables = append(tables, t)
	}
	b.lanes = map[string]*lane{}
	b.bytes = 0
	if sync {
		return b.ingest(db, tables)
	}
	b.busy = make(chan error, 1)
	go func() { b.busy <- b.ingest(db, tables) }()
	return nil
}

// bulkTable is a table to write: the entries of its lanes, in order.
type bulkTable struct {
	path  string
	lanes []*lane
}

// ingest writes tables and has the DB ingest them. It reads only b's fields that do not
// change (dir, fs, opts), so that it can run beside the next batches.
func (b *bulkLoad) ingest(db *pebble.DB, tables []bulkTable) error {
	paths := make([]string, 0, len(tables))
	for _, t := range tables {
		f, err := b.fs.Create(t.path, vfs.WriteCategoryUnspecified)
		if err != nil {
			return fmt.Errorf("bulk load: %w", err)
		}
		w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), b.opts)
		for _, l := range t.lanes {
			start := 0
			for i := 0; i < len(l.ends); i += 2 {
				k, v := l.ends[i], l.ends[i+1]
				if err := w.Set(l.buf[start:k], l.buf[k:v]); err != nil {
					w.Close()
					return fmt.Errorf("bulk load %s: %w", l.buf[start:k], err)
				}
				start = v
			}
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("bulk load: %w", err)
		}
		paths = append(paths, t.path)
	}
	if err := db.Ingest(context.Background(), paths); err != nil {
		return fmt.Errorf("bulk load: ingest: %w", err)
	}
	for _, p := range paths {
		b.fs.Remove(p) // ingest links the table into the DB; this name may remain
	}
	return nil
}

// clone returns a copy of f that the txn may change.
func (f frontier) clone() frontier {
	return frontier{idx: slices.Clone(f.idx), hash: slices.Clone(f.hash)}
}
