package projections

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyreg/keyreg/events"
)

// The audit tree is an RFC 6962 Merkle tree over every message of the stream: leaf n is
// tlog.RecordHash of the stored bytes of the message with sequence n+1, so the views at
// checkpoint c hold the tree of size c. Its hashes are stored as tlog lays them out
// (tlog.StoredHashes), each under tlog/<storage index> as 32 raw bytes, in the batch of
// the record that completes them.

const (
	prefixTree             = "tlog/"
	keyLatestCheckpoint    = "ckpt/latest"
	prefixCheckpointBySize = "ckpt/size/"
)

func treeKey(index int64) []byte { return appendSeq([]byte(prefixTree), uint64(index)) }

func checkpointBySizeKey(size uint64) []byte {
	return appendSeq([]byte(prefixCheckpointBySize), size)
}

// ErrNoTree means a tree hash the views should hold is missing: they were built before
// the audit tree existed, and must be rebuilt from the log (keyreg replay).
var ErrNoTree = errors.New("projections: audit tree incomplete: the views predate it; rebuild them (keyreg replay)")

// treeTxn is the part of a txn that grows the audit trees: the hashes written in this
// batch that the next leaves read back, which a plain Pebble batch cannot.
type treeTxn struct {
	started bool
	top     frontier
	// The workspace trees: their sizes so far (-1: none, the views predate them), and
	// their frontiers.
	ws map[events.Workspace]*wsTreeTxn
}

type wsTreeTxn struct {
	size int64
	f    frontier
	// The lanes of the tree's hashes and leaf indexes in a bulk rebuild, kept so as not
	// to build them for every leaf.
	lane, seqLane string
}

// errNotInFrontier means a bulk rebuild, which keeps its trees' frontiers across batches,
// missed a hash there: a bug.
var errNotInFrontier = errors.New("projections: bulk rebuild: a tree hash is missing from the frontier")

// frontier holds, for each level of a tree, the last hash stored at that level in this
// batch. Adding leaf n reads back only the left siblings on its path, the last nodes
// completed at their levels, so a batch needs no map of every hash it wrote: a hash not
// in the frontier was written by an earlier batch and is read from the DB.
type frontier struct {
	idx  []int64 // storage index of the hash at each level; -1 for none
	hash []tlog.Hash
}

func (f *frontier) get(idx int64) (tlog.Hash, bool) {
	for l, x := range f.idx {
		if x == idx {
			return f.hash[l], true
		}
	}
	return tlog.Hash{}, false
}

// stored records the hashes that tlog.StoredHashes returned for a leaf: hashes[l] is at
// level l, at storage index base+l.
func (f *frontier) stored(base int64, hashes []tlog.Hash) {
	for len(f.idx) < len(hashes) {
		f.idx = append(f.idx, -1)
		f.hash = append(f.hash, tlog.Hash{})
	}
	for l, h := range hashes {
		f.idx[l], f.hash[l] = base+int64(l), h
	}
}

// addLeaf adds record r, whose leaf hash is leaf (tlog.RecordHash of its data), as leaf
// r.Seq-1 and writes the hashes it completes.
func (t *txn) addLeaf(r events.Record, leaf tlog.Hash) error {
	n := int64(r.Seq) - 1
	if !t.tree.started {
		t.tree.started = true
		// The first leaf of a batch: the views must hold the tree so far (views built
		// before the audit tree do not), or the new hashes would be wrong.
		if n > 0 {
			if _, err := readHash(t.s.db, tlog.StoredHashIndex(0, n-1)); err != nil {
				return err
			}
		}
	}
	hashes, err := tlog.StoredHashesForRecordHash(n, leaf, tlog.HashReaderFunc(t.readHashes))
	if err != nil {
		return fmt.Errorf("audit tree leaf %d: %w", n, err)
	}
	base := tlog.StoredHashIndex(0, n)
	t.tree.top.stored(base, hashes)
	for i, h := range hashes {
		if err := t.put(prefixTree, treeKey(base+int64(i)), h[:]); err != nil {
			return err
		}
	}
	return nil
}

func (t *txn) readHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		if h, ok := t.tree.top.get(idx); ok {
			out[i] = h
			continue
		}
		if t.s.bulk != nil {
			return nil, errNotInFrontier
		}
		h, err := readHash(t.s.db, idx)
		if err != nil {
			return nil, err
		}
		out[i] = h
	}
	return out, nil
}

func readHash(r pebble.Reader, idx int64) (tlog.Hash, error) {
	var h tlog.Hash
	v, closer, err := r.Get(treeKey(idx))
	if errors.Is(err, pebble.ErrNotFound) {
		return h, fmt.Errorf("%w: no hash at storage index %d", ErrNoTree, idx)
	}
	if err != nil {
		return h, fmt.Errorf("read tree hash %d: %w", idx, err)
	}
	defer closer.Close()
	if len(v) != len(h) {
		return h, fmt.Errorf("read tree hash %d: %d bytes", idx, len(v))
	}
	copy(h[:], v)
	return h, nil
}

// applyCheckpoint keeps the latest checkpoint and indexes every one by tree size.
func (t *txn) applyCheckpoint(d events.Decoded) error {
	var st events.CheckpointState
	if err := st.Apply(d.Seq, d.Data, d.Event, d.Payload); err != nil {
		return err
	}
	v, err := encodeValue(nil, &st)
	if err != nil {
		return err
	}
	if err := t.b.Set([]byte(keyLatestCheckpoint), v, nil); err != nil {
		return err
	}
	return t.b.Set(checkpointBySizeKey(st.TreeSize), v, nil)
}

// hashReader reads stored tree hashes from the DB.
func (s *Store) hashReader() tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, idx := range indexes {
			h, err := readHash(s.db, idx)
			if err != nil {
				return nil, err
			}
			out[i] = h
		}
		return out, nil
	})
}

// TreeSize returns the size of the audit tree the views hold: the number of records
// applied.
func (s *Store) TreeSize() int64 { return int64(s.Checkpoint()) }

func (s *Store) checkTreeSize(n int64) error {
	if n < 0 || n > s.TreeSize() {
		return fmt.Errorf("audit tree of size %d: the views hold %d leaves: %w", n, s.TreeSize(), events.ErrNotFound)
	}
	return nil
}

// TreeHash returns the root hash of the audit tree of the first n leaves (stream
// sequences 1 to n). It returns an error wrapping events.ErrNotFound when n is beyond the views'
// checkpoint, or ErrNoTree when the views lack the tree.
func (s *Store) TreeHash(n int64) (tlog.Hash, error) {
	if err := s.checkTreeSize(n); err != nil {
		return tlog.Hash{}, err
	}
	h, err := tlog.TreeHash(n, s.hashReader())
	if err != nil {
		return tlog.Hash{}, fmt.Errorf("tree hash %d: %w", n, err)
	}
	return h, nil
}

// ProveRecord returns the inclusion proof of leaf n (stream sequence n+1) in the audit
// tree of size t, to check with tlog.CheckRecord. Errors as TreeHash; n must be below t.
func (s *Store) ProveRecord(t, n int64) (tlog.RecordProof, error) {
	if err := s.checkTreeSize(t); err != nil {
		return nil, err
	}
	p, err := tlog.ProveRecord(t, n, s.hashReader())
	if err != nil {
		return nil, fmt.Errorf("prove leaf %d in tree %d: %w", n, t, err)
	}
	return p, nil
}

// ProveTree returns the proof that the audit tree of size t extends that of size n (n <=
// t), to check with tlog.CheckTree. Errors as TreeHash.
func (s *Store) ProveTree(t, n int64) (tlog.TreeProof, error) {
	if err := s.checkTreeSize(t); err != nil {
		return nil, err
	}
	p, err := tlog.ProveTree(t, n, s.hashReader())
	if err != nil {
		return nil, fmt.Errorf("prove tree %d extends %d: %w", t, n, err)
	}
	return p, nil
}

// Prover proves many leaves of one tree, in order, faster than ProveRecord: it reads the
// hashes with one iterator in key order and keeps the upper levels, which every proof
// shares, in a bounded cache. Call Release between batches of proofs, so that it does not
// pin old data of the DB for long, and Close at the end. A Prover is not safe for
// concurrent use.
type Prover struct {
	s     *Store
	size  int64
	it    *pebble.Iterator
	cache map[int64]tlog.Hash
}

// proverCache bounds the hashes a Prover keeps (32 bytes each, plus the map's overhead).
const proverCache = 1 << 15

// NewProver returns a Prover of the tree of size t. Errors as TreeHash.
func (s *Store) NewProver(t int64) (*Prover, error) {
	if err := s.checkTreeSize(t); err != nil {
		return nil, err
	}
	return &Prover{s: s, size: t, cache: map[int64]tlog.Hash{}}, nil
}

// ProveRecord returns the inclusion proof of leaf n in the Prover's tree.
func (p *Prover) ProveRecord(n int64) (tlog.RecordProof, error) {
	proof, err := tlog.ProveRecord(p.size, n, p)
	if err != nil {
		return nil, fmt.Errorf("prove leaf %d in tree %d: %w", n, p.size, err)
	}
	return proof, nil
}

// ReadHashes implements tlog.HashReader.
func (p *Prover) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		if h, ok := p.cache[idx]; ok {
			out[i] = h
			continue
		}
		if p.it == nil {
			it, err := p.s.db.NewIter(&pebble.IterOptions{LowerBound: []byte(prefixTree), UpperBound: prefixEnd([]byte(prefixTree))})
			if err != nil {
				return nil, fmt.Errorf("read tree hashes: %w", err)
			}
			p.it = it
		}
		key := treeKey(idx)
		if !p.it.SeekGE(key) || !bytes.Equal(p.it.Key(), key) {
			if err := p.it.Error(); err != nil {
				return nil, fmt.Errorf("read tree hash %d: %w", idx, err)
			}
			return nil, fmt.Errorf("%w: no hash at storage index %d", ErrNoTree, idx)
		}
		v, err := p.it.ValueAndErr()
		if err != nil || len(v) != len(out[i]) {
			return nil, fmt.Errorf("read tree hash %d: %d bytes, %v", idx, len(v), err)
		}
		copy(out[i][:], v)
		if len(p.cache) >= proverCache {
			clear(p.cache)
		}
		// Keep the hashes above the lowest levels: each serves many proofs.
		if level, _ := tlog.SplitStoredHashIndex(idx); level >= 2 {
			p.cache[idx] = out[i]
		}
	}
	return out, nil
}

// Release closes the Prover's iterator; the next proof opens a new one.
func (p *Prover) Release() error {
	if p.it == nil {
		return nil
	}
	err := p.it.Close()
	p.it = nil
	return err
}

// Close releases the Prover.
func (p *Prover) Close() error { return p.Release() }

// SealedCheckpoint returns the latest signed checkpoint of the audit tree, or the zero
// state (Exists false) when none has been sealed. ctx is unused; it is there for the
// commands' checkpoint-reader interface.
func (s *Store) SealedCheckpoint(ctx context.Context) (events.CheckpointState, error) {
	var st events.CheckpointState
	err := s.get([]byte(keyLatestCheckpoint), &st)
	if err != nil && !errors.Is(err, events.ErrNotFound) {
		return st, fmt.Errorf("read latest checkpoint: %w", err)
	}
	return st, nil
}

// CheckpointAtLeast returns the smallest checkpoint whose tree covers at least size
// leaves, or an error wrapping events.ErrNotFound when there is none.
func (s *Store) CheckpointAtLeast(size uint64) (events.CheckpointState, error) {
	var st events.CheckpointState
	found := false
	p := []byte(prefixCheckpointBySize)
	err := s.scan(checkpointBySizeKey(size), prefixEnd(p), func(key, value []byte) error {
		found = true
		if err := decodeValue(value, &st); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		return errStop
	})
	if err != nil && !errors.Is(err, errStop) {
		return st, fmt.Errorf("checkpoint of at least %d leaves: %w", size, err)
	}
	if !found {
		return st, fmt.Errorf("checkpoint of at least %d leaves: %w", size, events.ErrNotFound)
	}
	return st, nil
}

// Each workspace has an audit tree of its own: an RFC 6962 Merkle tree whose leaf i is
// tlog.RecordHash of the stored bytes of the workspace's i-th event (from 0, in stream
// order; the events of every aggregate of the workspace, as in its history index). An
// export of a whole workspace up to a stream sequence is the leaves 0..N-1 of that tree,
// so the tree's size and root, signed, prove the export complete: a missing, extra,
// reordered or changed event yields another root. Its hashes are stored under
// wtlog/<ws>/<storage index>, and wtseq/<ws>/<seq> maps the stream sequence of each of
// its events to its leaf index, so that the tree's size as of any stream sequence is one
// seek.

const (
	prefixWSTree    = "wtlog/"
	prefixWSTreeSeq = "wtseq/"
)

func wsTreeKey(ws events.Workspace, index int64) []byte {
	return appendSeq([]byte(prefixWSTree+string(ws)+"/"), uint64(index))
}

func wsTreeSeqPrefix(ws events.Workspace) []byte {
	return []byte(prefixWSTreeSeq + string(ws) + "/")
}

// addWorkspaceLeaf adds record r, an event of workspace ws, as the next leaf of the
// workspace's tree. Views built before the workspace trees existed have none for the
// workspaces they hold: those workspaces stay without one (WorkspaceTree says ErrNoTree)
// until a rebuild, and the views keep serving.
func (t *txn) addWorkspaceLeaf(ws events.Workspace, r events.Record, leaf tlog.Hash) error {
	if t.tree.ws == nil {
		t.tree.ws = map[events.Workspace]*wsTreeTxn{}
	}
	wt, ok := t.tree.ws[ws]
	if !ok && t.s.bulk != nil {
		wt = &wsTreeTxn{}
		if b := t.s.bulk.ws[ws]; b != nil {
			wt = &wsTreeTxn{size: b.size, f: b.f.clone(), lane: b.lane, seqLane: b.seqLane}
		}
		t.tree.ws[ws] = wt
	} else if !ok {
		n, err := workspaceTreeSize(t.s.db, ws, ^uint64(0))
		if err != nil {
			return err
		}
		// Views built before the workspace trees hold history but no tree.
		if n == 0 {
			found := false
			if err := scan(t.s.db, wsHistoryPrefix(ws), prefixEnd(wsHistoryPrefix(ws)), func(key, value []byte) error {
				found = true
				return errStop
			}); err != nil && !errors.Is(err, errStop) {
				return err
			}
			if found {
				n = -1
			}
		}
		wt = &wsTreeTxn{size: n}
		t.tree.ws[ws] = wt
	}
	n := wt.size
	if n < 0 {
		return nil // a workspace of views that predate the workspace trees
	}
	read := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, idx := range indexes {
			if h, ok := wt.f.get(idx); ok {
				out[i] = h
				continue
			}
			if t.s.bulk != nil {
				return nil, errNotInFrontier
			}
			h, err := readHashAt(t.s.db, wsTreeKey(ws, idx))
			if err != nil {
				return nil, err
			}
			out[i] = h
		}
		return out, nil
	})
	hashes, err := tlog.StoredHashesForRecordHash(n, leaf, read)
	if err != nil {
		return fmt.Errorf("workspace %s tree leaf %d: %w", ws, n, err)
	}
	base := tlog.StoredHashIndex(0, n)
	wt.f.stored(base, hashes)
	if wt.lane == "" {
		wt.lane, wt.seqLane = prefixWSTree+string(ws)+"/", string(wsTreeSeqPrefix(ws))
	}
	for i, h := range hashes {
		if err := t.put(wt.lane, appendSeq([]byte(wt.lane), uint64(base+int64(i))), h[:]); err != nil {
			return err
		}
	}
	wt.size = n + 1
	var idx [binary.MaxVarintLen64]byte
	return t.put(wt.seqLane, appendSeq([]byte(wt.seqLane), r.Seq), binary.AppendUvarint(idx[:0], uint64(n)))
}

// workspaceTreeSize returns the number of events of ws with a stream sequence up to asOf.
func workspaceTreeSize(r pebble.Reader, ws events.Workspace, asOf uint64) (int64, error) {
	p := wsTreeSeqPrefix(ws)
	upper := prefixEnd(p)
	if asOf < ^uint64(0) {
		upper = appendSeq(bytes.Clone(p), asOf+1)
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: upper})
	if err != nil {
		return 0, fmt.Errorf("workspace %s tree size: %w", ws, err)
	}
	defer it.Close()
	if !it.Last() {
		return 0, it.Error()
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return 0, fmt.Errorf("workspace %s tree size: %w", ws, err)
	}
	n, w := binary.Uvarint(v)
	if w <= 0 || w != len(v) || n >= 1<<62 {
		return 0, fmt.Errorf("workspace %s tree size: bad leaf index %q at %s", ws, v, it.Key())
	}
	return int64(n) + 1, nil
}

func readHashAt(r pebble.Reader, key []byte) (tlog.Hash, error) {
	var h tlog.Hash
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return h, fmt.Errorf("%w: no hash %s", ErrNoTree, key)
	}
	if err != nil {
		return h, fmt.Errorf("read tree hash %s: %w", key, err)
	}
	defer closer.Close()
	if len(v) != len(h) {
		return h, fmt.Errorf("read tree hash %s: %d bytes", key, len(v))
	}
	copy(h[:], v)
	return h, nil
}

// WorkspaceTree returns the size and root hash of workspace ws's audit tree as of stream
// sequence asOf: its events with a sequence up to asOf, in stream order. asOf must be at
// most the views' checkpoint (else an error wrapping events.ErrNotFound). A workspace with no
// event then has size 0 and the root of the empty tree. It returns an error wrapping
// ErrNoTree when the views predate the workspace trees.
func (s *Store) WorkspaceTree(ws events.Workspace, asOf uint64) (int64, tlog.Hash, error) {
	if asOf > s.Checkpoint() {
		return 0, tlog.Hash{}, fmt.Errorf("workspace %s tree as of %d: the views hold %d records: %w", ws, asOf, s.Checkpoint(), events.ErrNotFound)
	}
	n, err := workspaceTreeSize(s.db, ws, asOf)
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	if n == 0 && asOf > 0 {
		entries, err := s.Audit(ws, AuditFilter{MaxSeq: asOf}, 0, 1)
		if err != nil {
			return 0, tlog.Hash{}, err
		}
		if len(entries) > 0 {
			return 0, tlog.Hash{}, fmt.Errorf("%w: workspace %s has events but no workspace tree", ErrNoTree, ws)
		}
	}
	h, err := tlog.TreeHash(n, tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, idx := range indexes {
			h, err := readHashAt(s.db, wsTreeKey(ws, idx))
			if err != nil {
				return nil, err
			}
			out[i] = h
		}
		return out, nil
	}))
	if err != nil {
		return 0, tlog.Hash{}, fmt.Errorf("workspace %s tree hash %d: %w", ws, n, err)
	}
	return n, h, nil
}
