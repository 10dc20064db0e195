package projections

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/keyindex"
)

// Verify checks a presented secret for a request from ip that needs permission, at time
// now: the checks, order and codes of keyindex.Index.Verify.
//
// Verify reads an in-memory index that Apply updates before advancing the checkpoint, so
// it is as fresh as the views. It does not allocate.
func (s *Store) Verify(secret string, ip netip.Addr, permission events.Permission, now time.Time) keyindex.VerifyResult {
	return s.verify.Verify(secret, ip, permission, now)
}

// EachKey calls fn with every key of the verify index (keyindex.Index.Each) and returns
// the checkpoint it read first: the keys fn sees hold every record up to it (Apply updates
// the index before advancing the checkpoint), and may hold later ones. The verifier's
// snapshots are made so.
func (s *Store) EachKey(fn func(*events.KeyState) bool) (checkpoint uint64) {
	checkpoint = s.cp.Load()
	s.verify.Each(fn)
	return checkpoint
}

// loadIndex builds the verify index from the key views, a few thousand keys at a time so
// that the decoded states of every key are never in memory beside the index.
func (s *Store) loadIndex() error {
	keys := make([]events.KeyState, 0, 4096)
	err := s.scanPrefix([]byte(prefixKey), func(key, value []byte) error {
		var k events.KeyState
		if err := decodeValue(value, &k); err != nil {
			return fmt.Errorf("load verify index: %s: %w", key, err)
		}
		if keys = append(keys, k); len(keys) == cap(keys) {
			s.verify.Put(keys...)
			keys = keys[:0]
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.verify.Put(keys...)
	return nil
}

// updateIndex puts the keys an Apply changed (by view key) into the verify index.
func (s *Store) updateIndex(keys map[string]*events.KeyState) {
	states := make([]events.KeyState, 0, len(keys))
	for _, k := range keys {
		states = append(states, *k)
	}
	s.verify.Put(states...)
}
