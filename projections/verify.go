package projections

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble/v2"

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

// VerifyDigest is Verify for a secret known by its digest (events.SecretDigest) alone
// (keyindex.Index.VerifyDigest).
func (s *Store) VerifyDigest(d *[32]byte, ip netip.Addr, permission events.Permission, now time.Time) keyindex.VerifyResult {
	return s.verify.VerifyDigest(d, ip, permission, now)
}

// EachKey calls fn with the state of every key of the views, revoked ones included, in
// key order, until fn returns false, and returns the checkpoint of the views it read:
// it reads a Pebble snapshot, so the keys fn sees hold exactly the records up to that
// checkpoint. The verifier's snapshots are made so. It returns an error if the views
// cannot be read (fn may have seen some keys by then) or the store is closed; Close
// waits for it to return.
func (s *Store) EachKey(fn func(*events.KeyState) bool) (checkpoint uint64, err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, events.ErrClosed
	}
	s.readers.Add(1)
	s.mu.Unlock()
	defer s.readers.Done()
	snap := s.db.NewSnapshot()
	defer snap.Close()
	v, closer, err := snap.Get([]byte(keyCheckpoint))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return 0, fmt.Errorf("read checkpoint: %w", err)
	default:
		checkpoint, err = strconv.ParseUint(string(v), 10, 64)
		closer.Close()
		if err != nil {
			return 0, fmt.Errorf("read checkpoint: %w", err)
		}
	}
	p := []byte(prefixKey)
	err = scan(snap, p, prefixEnd(p), func(key, value []byte) error {
		var k events.KeyState
		if err := decodeValue(value, &k); err != nil {
			return fmt.Errorf("read %s: %w", key, err)
		}
		if !fn(&k) {
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return 0, err
	}
	return checkpoint, nil
}

// loadIndex builds the verify index from the key views, a few thousand keys at a time so
// that the decoded states of every key are never in memory beside the index.
//
// The index is VerifyOnly: it holds what Verify needs (about a third of the whole states'
// memory); the whole states are in the views (Key, EachKey).
func (s *Store) loadIndex() error {
	s.verify.VerifyOnly = true
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
