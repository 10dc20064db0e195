package projections

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"slices"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyreg/keyreg/events"
)

// memTree is a reference audit tree kept in memory.
type memTree []tlog.Hash

func (m memTree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		out[i] = m[idx]
	}
	return out, nil
}

// referenceTree builds the tree of recs in memory, as tlog documents it.
func referenceTree(t testing.TB, recs []events.Record) memTree {
	t.Helper()
	var stored memTree
	for i, r := range recs {
		hashes, err := tlog.StoredHashes(int64(i), r.Data, stored)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hashes...)
	}
	return stored
}

// TestTreeMatchesReference checks that the views' audit tree has, at every size, the root
// of a tree built in memory from the same records, and that its proofs check.
func TestTreeMatchesReference(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 150)
	recs := allRecords(t, log)
	ref := referenceTree(t, recs)
	s := openMem(t)
	for i := 0; i < len(recs); i += 7 { // batches of 7 records
		if err := s.Apply(recs[i:min(i+7, len(recs))]); err != nil {
			t.Fatal(err)
		}
	}
	n := int64(len(recs))
	if s.TreeSize() != n {
		t.Fatalf("TreeSize %d, want %d", s.TreeSize(), n)
	}
	for size := int64(0); size <= n; size++ {
		want, err := tlog.TreeHash(size, ref)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.TreeHash(size)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("TreeHash(%d) = %s, want %s", size, got, want)
		}
	}
	root, _ := s.TreeHash(n)
	for leaf := int64(0); leaf < n; leaf++ {
		p, err := s.ProveRecord(n, leaf)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, n, root, leaf, tlog.RecordHash(recs[leaf].Data)); err != nil {
			t.Fatalf("leaf %d: %v", leaf, err)
		}
		if err := tlog.CheckRecord(p, n, root, leaf, tlog.RecordHash(append([]byte(" "), recs[leaf].Data...))); err == nil {
			t.Fatalf("leaf %d: the proof also proves changed data", leaf)
		}
	}
	if _, err := s.TreeHash(n + 1); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("TreeHash beyond the views: %v, want events.ErrNotFound", err)
	}
}

// TestTreeOnlyGrows checks that each tree the views held is a prefix of every later one:
// a proof that the later tree extends the earlier one checks against both roots.
func TestTreeOnlyGrows(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 100)
	recs := allRecords(t, log)
	s := openMem(t)
	var sizes []int64
	var roots []tlog.Hash
	for i := 0; i < len(recs); i += 13 {
		if err := s.Apply(recs[i:min(i+13, len(recs))]); err != nil {
			t.Fatal(err)
		}
		root, err := s.TreeHash(s.TreeSize())
		if err != nil {
			t.Fatal(err)
		}
		sizes, roots = append(sizes, s.TreeSize()), append(roots, root)
	}
	last := len(sizes) - 1
	for i := range sizes {
		p, err := s.ProveTree(sizes[last], sizes[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckTree(p, sizes[last], roots[last], sizes[i], roots[i]); err != nil {
			t.Fatalf("tree %d does not extend tree %d: %v", sizes[last], sizes[i], err)
		}
		if i > 0 {
			if err := tlog.CheckTree(p, sizes[last], roots[last], sizes[i], roots[i-1]); err == nil {
				t.Fatalf("a wrong earlier root checked at size %d", sizes[i])
			}
		}
	}
}

// TestCheckpointViews applies checkpoint events: the latest is kept and every one is
// indexed by tree size.
func TestCheckpointViews(t *testing.T) {
	log := events.NewMemLog()
	w := newWriter(log)
	scenario(t, w, 0)
	s := openMem(t)
	ctx := context.Background()
	if st, err := s.SealedCheckpoint(ctx); err != nil || st.Exists() {
		t.Fatalf("SealedCheckpoint of no checkpoint = %+v, %v", st, err)
	}
	skey, _, err := note.GenerateKey(rand.Reader, "test")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	seal := func() uint64 {
		t.Helper()
		if err := s.Apply(allRecords(t, log)); err != nil {
			t.Fatal(err)
		}
		size := uint64(s.TreeSize())
		root, err := s.TreeHash(int64(size))
		if err != nil {
			t.Fatal(err)
		}
		msg, err := note.Sign(&note.Note{Text: string(events.FormatCheckpoint(size, root))}, signer)
		if err != nil {
			t.Fatal(err)
		}
		w.add(t, events.SystemWorkspace, events.AggCheckpoint, events.CheckpointID, &events.CheckpointSealed{
			TreeSize: size, RootHash: base64.StdEncoding.EncodeToString(root[:]), Note: string(msg)})
		if err := s.Apply(allRecords(t, log)); err != nil {
			t.Fatal(err)
		}
		return size
	}
	first := seal()
	w.add(t, "acme", events.AggKey, "K2", &events.KeyRenamed{Name: "x", Previous: "deploy"})
	second := seal()
	st, err := s.SealedCheckpoint(ctx)
	if err != nil || st.TreeSize != second || st.Version != second+1 {
		t.Fatalf("latest checkpoint %+v, %v; want tree size %d at seq %d", st, err, second, second+1)
	}
	for _, c := range []struct{ atLeast, want uint64 }{{1, first}, {first, first}, {first + 1, second}, {second, second}} {
		got, err := s.CheckpointAtLeast(c.atLeast)
		if err != nil || got.TreeSize != c.want {
			t.Errorf("CheckpointAtLeast(%d) = %d, %v; want %d", c.atLeast, got.TreeSize, err, c.want)
		}
	}
	if _, err := s.CheckpointAtLeast(second + 1); !errors.Is(err, events.ErrNotFound) {
		t.Errorf("CheckpointAtLeast beyond the latest: %v, want events.ErrNotFound", err)
	}
	hist, err := s.History(events.SystemWorkspace, events.AggCheckpoint, events.CheckpointID, 0, 0)
	if err != nil || len(hist) != 2 {
		t.Fatalf("checkpoint history %v, %v", hist, err)
	}
}

// TestProver checks that a Prover's proofs, read in key order with a cache, are those of
// ProveRecord, across Release calls.
func TestProver(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 300)
	recs := allRecords(t, log)
	s := openMem(t)
	if err := s.Apply(recs); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{1, 2, 7, 64, int64(len(recs)) - 5, int64(len(recs))} {
		p, err := s.NewProver(size)
		if err != nil {
			t.Fatal(err)
		}
		for leaf := int64(0); leaf < size; leaf++ {
			got, err := p.ProveRecord(leaf)
			if err != nil {
				t.Fatal(err)
			}
			want, err := s.ProveRecord(size, leaf)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("tree %d leaf %d: Prover and ProveRecord differ", size, leaf)
			}
			if leaf%50 == 0 {
				p.Release()
			}
		}
		p.Close()
	}
	if _, err := s.NewProver(int64(len(recs)) + 1); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("Prover beyond the views: %v", err)
	}
}

// TestViewsWithoutTree: views built before the audit tree refuse to apply more records,
// saying they must be rebuilt, rather than grow a wrong tree.
func TestViewsWithoutTree(t *testing.T) {
	log := events.NewMemLog()
	w := newWriter(log)
	scenario(t, w, 0)
	recs := allRecords(t, log)
	s := openMem(t)
	if err := s.Apply(recs); err != nil {
		t.Fatal(err)
	}
	if err := s.db.DeleteRange([]byte(prefixTree), prefixEnd([]byte(prefixTree)), nil); err != nil {
		t.Fatal(err)
	}
	w.add(t, "acme", events.AggKey, "K2", &events.KeyRenamed{Name: "x", Previous: "deploy"})
	err := s.Apply(allRecords(t, log))
	if !errors.Is(err, ErrNoTree) {
		t.Fatalf("Apply on views without a tree: %v, want ErrNoTree", err)
	}
	if s.Checkpoint() != uint64(len(recs)) {
		t.Fatal("the failed batch moved the checkpoint")
	}
}

// TestWorkspaceTreeMatchesReference checks that each workspace's own audit tree has, as of
// every stream sequence, the size and root of a tree built in memory from that
// workspace's records alone, applied live in batches.
func TestWorkspaceTreeMatchesReference(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 60)
	recs := allRecords(t, log)
	s := openMem(t)
	for i := 0; i < len(recs); i += 5 {
		if err := s.Apply(recs[i:min(i+5, len(recs))]); err != nil {
			t.Fatal(err)
		}
	}
	byWS := map[events.Workspace][]events.Record{}
	for _, r := range recs {
		d, err := events.DecodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		byWS[d.Event.Workspace()] = append(byWS[d.Event.Workspace()], r)
	}
	if len(byWS) < 2 {
		t.Fatalf("the scenario has %d workspaces; want several", len(byWS))
	}
	for ws, wrecs := range byWS {
		ref := referenceTree(t, wrecs)
		for asOf := uint64(0); asOf <= uint64(len(recs)); asOf++ {
			n := int64(0)
			for _, r := range wrecs {
				if r.Seq <= asOf {
					n++
				}
			}
			want, err := tlog.TreeHash(n, ref)
			if err != nil {
				t.Fatal(err)
			}
			size, root, err := s.WorkspaceTree(ws, asOf)
			if err != nil || size != n || root != want {
				t.Fatalf("workspace %s as of %d: size %d root %v, %v; want %d %v", ws, asOf, size, root, err, n, want)
			}
		}
	}
	if _, _, err := s.WorkspaceTree("acme", uint64(len(recs))+1); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("beyond the checkpoint: %v, want events.ErrNotFound", err)
	}
}

// TestWorkspaceTreeMissingInOldViews: views built before the workspace trees (simulated by
// deleting them) keep applying events; their workspaces answer ErrNoTree until a rebuild,
// and a workspace created afterwards gets its tree.
func TestWorkspaceTreeMissingInOldViews(t *testing.T) {
	log := events.NewMemLog()
	w := newWriter(log)
	scenario(t, w, 10)
	recs := allRecords(t, log)
	s := openMem(t)
	half := len(recs) / 2
	if err := s.Apply(recs[:half]); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{prefixWSTree, prefixWSTreeSeq} {
		if err := s.db.DeleteRange([]byte(p), prefixEnd([]byte(p)), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Apply(recs[half:]); err != nil {
		t.Fatalf("applying to views without workspace trees: %v", err)
	}
	if _, _, err := s.WorkspaceTree("acme", s.Checkpoint()); !errors.Is(err, ErrNoTree) {
		t.Fatalf("WorkspaceTree of old views: %v, want ErrNoTree", err)
	}
	w.add(t, "gamma", events.AggWorkspace, "gamma", &events.WorkspaceCreated{Name: "Gamma"})
	recs = allRecords(t, log)
	if err := s.Apply(recs[len(recs)-1:]); err != nil {
		t.Fatal(err)
	}
	if n, _, err := s.WorkspaceTree("gamma", s.Checkpoint()); err != nil || n != 1 {
		t.Fatalf("a workspace created after: size %d, %v; want 1", n, err)
	}
}
