package keyindex

// table is an open-addressing hash table with linear probing that stores references
// (uint32, 0 meaning an empty slot) to what the index holds elsewhere: it costs about 6
// bytes a reference, where a Go map keyed by a 32-byte digest costs about 60. The index
// hashes and compares; the table only places. hashOf gives the hash of a stored reference
// (to grow the table and to close the gap a removal leaves).
type table struct {
	slots []uint32 // a power of two long, at most 3/4 full
	n     int
}

// add stores ref, of hash h, in the first empty slot of its probe sequence (the caller
// checked that the table does not hold it), growing the table first when it is full.
func (t *table) add(h uint64, ref uint32, hashOf func(uint32) uint64) {
	if (t.n+1)*4 > len(t.slots)*3 {
		t.grow(hashOf)
	}
	mask := len(t.slots) - 1
	i := int(h) & mask
	for t.slots[i] != 0 {
		i = (i + 1) & mask
	}
	t.slots[i] = ref
	t.n++
}

func (t *table) grow(hashOf func(uint32) uint64) {
	old := t.slots
	t.slots, t.n = make([]uint32, max(1024, 2*len(old))), 0
	for _, r := range old {
		if r != 0 {
			t.add(hashOf(r), r, hashOf)
		}
	}
}

// remove empties slot pos and moves back the references after it in its cluster that
// would no longer be found past the gap (backward-shift deletion: no tombstones).
func (t *table) remove(pos int, hashOf func(uint32) uint64) {
	mask := len(t.slots) - 1
	i := pos
	for j := (i + 1) & mask; t.slots[j] != 0; j = (j + 1) & mask {
		k := int(hashOf(t.slots[j])) & mask
		// slots[j] may fill the gap at i unless its home k lies cyclically in (i, j].
		if (i < j && (k <= i || k > j)) || (j < i && k <= i && k > j) {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = 0
	t.n--
}
