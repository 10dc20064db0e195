package replay

import (
	"fmt"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// TestTreeBuilder checks the verifier's streaming Merkle root against tlog's at every size
// up to 70 leaves (empty, powers of two and the sizes between).
func TestTreeBuilder(t *testing.T) {
	var stored []tlog.Hash
	read := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, idx := range indexes {
			out[i] = stored[idx]
		}
		return out, nil
	})
	var b treeBuilder
	for n := int64(0); n <= 70; n++ {
		want, err := tlog.TreeHash(n, read)
		if err != nil {
			t.Fatal(err)
		}
		if got := b.root(); got != want {
			t.Fatalf("%d leaves: root %v, want %v", n, got, want)
		}
		data := []byte(fmt.Sprint("record ", n))
		hashes, err := tlog.StoredHashes(n, data, read)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hashes...)
		b.add(tlog.RecordHash(data))
	}
}
