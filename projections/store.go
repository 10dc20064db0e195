package projections

import (
	"bytes"
	"errors"
	"fmt"
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

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when the checkpoint advances
	closed  bool
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
	s := &Store{db: db, opts: opts, changed: make(chan struct{})}
	fresh, err := s.checkFormat(dir)
	if err != nil {
		db.Close()
		return nil, err
	}
	if fresh && opts.NoSync {
		s.bulk = newBulkLoad(dir, po.FS, po, db)
	}
	if err := s.load(); err != nil {
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

// Sync makes every committed batch durable; it matters only with Options.NoSync.
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
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	err := s.Sync()
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
