package projections

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keyreg/keyreg/projections/keyindex"
)

// Sentinel errors, checked with errors.Is. A view with no entry for the requested id
// answers an error wrapping events.ErrNotFound.
var (
	// ErrAheadOfLog means the views have applied records the log does not have: the stream
	// was recreated or restored from an older backup, and the views must be rebuilt.
	ErrAheadOfLog = errors.New("projections: checkpoint ahead of log")
	// ErrGap means a batch skipped a stream sequence.
	ErrGap = errors.New("projections: sequence gap")
	// ErrReadOnly is returned by Apply on a store opened read-only.
	ErrReadOnly = errors.New("projections: read-only")
)

// Options configure Open.
type Options struct {
	// FS is the file system of the Pebble DB; nil means the disk. Tests may use
	// vfs.NewMem().
	FS vfs.FS
	// NoSync is for bulk rebuilds into a fresh directory: batches skip the write-ahead log
	// and go to larger memtables, and Sync (or Close) flushes them to disk at the end. A
	// crash before that loses the unflushed batches, never part of one; rebuilds are
	// thrown away on a crash anyway.
	NoSync bool
	// LazySync is for a live store whose log is durable on its own (the JetStream stream
	// fsyncs every change before it is acknowledged): batches go to the write-ahead log but
	// are not fsynced, so a change costs one fsync, the stream's. A crash of the machine
	// (or a kill before Pebble wrote its buffer) may lose the latest batches, never part of
	// one; the checkpoint goes back with them, and a Projector applies them again from the
	// log. What a crash can take is bounded by Pebble: it fsyncs each WAL when the memtable
	// rotates (every 4 MiB of batches), and Sync and Close fsync the rest. Since the lost
	// batches may hold changes already answered, such a store marks its directory while it
	// is open (see Recovered). NoSync wins over it.
	LazySync bool
	// ReadOnly opens an existing store for queries only; Apply fails with ErrReadOnly.
	ReadOnly bool
}

// Store is the Pebble DB of the views, with their checkpoint and the in-memory index that
// Verify reads. Its methods are safe for concurrent use; Apply calls are serialized. After
// Close, Apply returns events.ErrClosed and no other method may be called.
type Store struct {
	db      *pebble.DB
	opts    Options
	applyMu sync.Mutex
	cp      atomic.Uint64
	verify  keyindex.Index
	stats   applyStats
	bulk    *bulkLoad // set for a rebuild into a new store: see bulk.go
	fs      vfs.FS
	dir     string
	// marked: the directory holds the lazy-sync marker; recovered: it did at Open and the
	// log has not been applied again since (see Recovered).
	marked    bool
	recovered atomic.Bool

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when the checkpoint advances
	closed  bool
	readers sync.WaitGroup // EachKey calls under way: Close waits for them
}

// Open opens (creating it unless ReadOnly) the store in dir, reads its checkpoint and loads
// the index that Verify uses.
func Open(dir string, opts Options) (*Store, error) {
	po := &pebble.Options{FS: opts.FS, ReadOnly: opts.ReadOnly, Logger: quietLogger{}}
	if opts.NoSync {
		po.DisableWAL = true
		po.MemTableSize = 64 << 20
		po.MemTableStopWritesThreshold = 4
	}
	if po.FS == nil {
		po.FS = vfs.Default
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("open projections %s: %w", dir, err)
	}
	s := &Store{db: db, opts: opts, fs: po.FS, dir: dir, changed: make(chan struct{})}
	fresh, err := s.checkFormat(dir)
	if err != nil {
		db.Close()
		return nil, err
	}
	if fresh && opts.NoSync {
		s.bulk = newBulkLoad(dir, po.FS, po, db)
	}
	err = s.mark()
	if err == nil {
		err = s.load()
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open projections %s: %w", dir, err)
	}
	return s, nil
}

// checkFormat marks a new, empty store with FormatVersion (fresh is then true) and refuses
// one of another format: views written before the binary values (format 1: no mark, JSON
// values) or by a newer keyreg.
func (s *Store) checkFormat(dir string) (fresh bool, err error) {
	v, closer, gerr := s.db.Get([]byte(keyFormat))
	switch {
	case gerr == nil:
		f, perr := strconv.Atoi(string(v))
		closer.Close()
		if perr != nil {
			return false, fmt.Errorf("open projections %s: bad %s %q", dir, keyFormat, v)
		}
		if f != FormatVersion {
			return false, formatErr(dir, f)
		}
		return false, nil
	case !errors.Is(gerr, pebble.ErrNotFound):
		return false, fmt.Errorf("open projections %s: read %s: %w", dir, keyFormat, gerr)
	}
	empty := true
	if err := s.scan(nil, nil, func(key, value []byte) error {
		empty = false
		return errStop
	}); err != nil && !errors.Is(err, errStop) {
		return false, fmt.Errorf("open projections %s: %w", dir, err)
	}
	switch {
	case !empty:
		return false, formatErr(dir, 1)
	case s.opts.ReadOnly:
		return false, nil
	}
	wo := pebble.Sync
	if s.opts.NoSync {
		wo = pebble.NoSync
	}
	if err := s.db.Set([]byte(keyFormat), strconv.AppendInt(nil, FormatVersion, 10), wo); err != nil {
		return false, fmt.Errorf("open projections %s: mark format: %w", dir, err)
	}
	return true, nil
}

func formatErr(dir string, found int) error {
	return fmt.Errorf("%w: the views in %s are in format %d, and this keyreg reads format %d: "+
		"rebuild them from the stream with `keyreg replay` (the stream itself is unchanged)", ErrFormat, dir, found, FormatVersion)
}

// lazyMarker is the file that a store opened with LazySync keeps in its directory until
// it is closed cleanly; found at Open, it means the last one crashed.
const lazyMarker = "KEYREG-LAZY-SYNC-OPEN"

// mark notes whether dir holds the lazy-sync marker (the last store opened there crashed)
// and, for a LazySync store, creates it, durably, before any batch.
func (s *Store) mark() error {
	fs, dir := s.fs, s.dir
	name := fs.PathJoin(dir, lazyMarker)
	_, err := fs.Stat(name)
	switch {
	case err == nil:
		s.marked = true
		s.recovered.Store(true)
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("lazy-sync marker: %w", err)
	}
	if s.marked || !s.opts.LazySync || s.opts.NoSync || s.opts.ReadOnly {
		return nil
	}
	f, err := fs.Create(name, vfs.WriteCategoryUnspecified)
	if err == nil {
		err = errors.Join(f.Sync(), f.Close())
	}
	if err == nil {
		err = syncDir(fs, dir)
	}
	if err != nil {
		return fmt.Errorf("lazy-sync marker: %w", err)
	}
	s.marked = true
	return nil
}

// unmark removes the lazy-sync marker, once every batch is durable and none is missing.
func (s *Store) unmark() error {
	if !s.marked || s.opts.ReadOnly || s.recovered.Load() {
		return nil
	}
	fs, dir := s.fs, s.dir
	if err := fs.Remove(fs.PathJoin(dir, lazyMarker)); err != nil {
		return fmt.Errorf("lazy-sync marker: %w", err)
	}
	s.marked = false
	if err := syncDir(fs, dir); err != nil {
		return fmt.Errorf("lazy-sync marker: %w", err)
	}
	return nil
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// Recovered reports whether the store may lack batches that it had committed: it was
// opened after a store with LazySync crashed in its directory, and a Projector has not yet
// applied the log up to where the log ended when that Projector started. Changes in the
// lost batches may already have been answered (read-your-writes waited for them), so
// whoever serves reads must let the Projector catch up first. A clean Close keeps the mark
// until then.
func (s *Store) Recovered() bool { return s.recovered.Load() }

// caughtUp clears Recovered once the checkpoint has reached seq, a log sequence at or
// beyond everything the crashed store had applied.
func (s *Store) caughtUp(seq uint64) {
	if s.recovered.Load() && s.cp.Load() >= seq {
		s.recovered.Store(false)
	}
}

func (s *Store) load() error {
	v, closer, err := s.db.Get([]byte(keyCheckpoint))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read checkpoint: %w", err)
	default:
		cp, perr := strconv.ParseUint(string(v), 10, 64)
		closer.Close()
		if perr != nil {
			return fmt.Errorf("read checkpoint: %w", perr)
		}
		s.cp.Store(cp)
	}
	return s.loadIndex()
}

// Checkpoint returns the stream sequence of the last applied record, 0 for an empty store.
func (s *Store) Checkpoint() uint64 { return s.cp.Load() }

// CheckpointTo writes a consistent copy of the store into dir, which must not exist yet
// and should be on the store's file system (Pebble links its tables rather than copying
// them), and returns the stream sequence the copy has applied. Apply waits meanwhile, so
// the copy holds whole batches and its checkpoint; the live store goes on as it was.
func (s *Store) CheckpointTo(dir string) (uint64, error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed || s.opts.ReadOnly || s.bulk != nil {
		return 0, fmt.Errorf("checkpoint projections: the store is closed, read-only or a bulk rebuild")
	}
	if err := s.db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		return 0, fmt.Errorf("checkpoint projections: %w", err)
	}
	return s.cp.Load(), nil
}

// Sync makes every committed batch durable; it matters only with Options.NoSync or
// Options.LazySync.
func (s *Store) Sync() error {
	if s.opts.ReadOnly {
		return nil
	}
	if err := s.flushBulk(); err != nil {
		return fmt.Errorf("sync projections: %w", err)
	}
	if s.opts.NoSync {
		if err := s.db.Flush(); err != nil {
			return fmt.Errorf("sync projections: %w", err)
		}
		return nil
	}
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("sync projections: %w", err)
	}
	return nil
}

// Close syncs (unless read-only) and closes the DB. Calling it again does nothing.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.readers.Wait()
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	err := s.Sync()
	if err == nil {
		err = s.unmark()
	}
	if cerr := s.db.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close projections: %w", cerr)
	}
	return err
}

// Each calls fn for every key and value of the DB, meta/checkpoint included, in key order.
// key and value are only valid during the call. An error from fn stops the iteration and is
// returned. Replay uses it to compare two stores key by key.
func (s *Store) Each(fn func(key, value []byte) error) error {
	return s.scan(nil, nil, fn)
}

// scan calls fn for each key in [lower, upper) (nil: unbounded).
func (s *Store) scan(lower, upper []byte, fn func(key, value []byte) error) error {
	return scan(s.db, lower, upper, fn)
}

func scan(r pebble.Reader, lower, upper []byte, fn func(key, value []byte) error) error {
	if lower != nil && upper != nil && bytes.Compare(lower, upper) >= 0 {
		return nil // an empty range (a page that starts past the end)
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("iterate projections: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return fmt.Errorf("iterate projections: %w", err)
		}
		if err := fn(it.Key(), v); err != nil {
			it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("iterate projections: %w", err)
	}
	return nil
}

// scanPrefix calls fn for each key starting with p.
func (s *Store) scanPrefix(p []byte, fn func(key, value []byte) error) error {
	return s.scan(p, prefixEnd(p), fn)
}

// waitChan returns a channel closed when the checkpoint next advances.
func (s *Store) waitChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *Store) setCheckpoint(cp uint64) {
	s.cp.Store(cp)
	s.wake()
}

// wake wakes the goroutines waiting on waitChan.
func (s *Store) wake() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// quietLogger drops Pebble's informational messages (it logs every WAL it opens) and
// keeps its errors.
type quietLogger struct{}

func (quietLogger) Infof(format string, args ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	pebble.DefaultLogger.Errorf(format, args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	pebble.DefaultLogger.Fatalf(format, args...)
}
