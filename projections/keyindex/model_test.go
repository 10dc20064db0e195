package keyindex_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/keyindex"
)

// modelIndex is the index as plain maps, the way it was first written: the reference
// TestIndexMatchesModel holds Index to.
type modelIndex struct {
	byHash map[string]string // secret hash -> ws/id
	byKey  map[string]events.KeyState
}

func (m *modelIndex) put(k events.KeyState) {
	ref := string(k.Workspace) + "/" + k.ID
	if old, ok := m.byKey[ref]; ok {
		for _, h := range []string{old.SecretHash, old.PreviousHash} {
			if h != "" && m.byHash[h] == ref {
				delete(m.byHash, h)
			}
		}
	}
	m.byKey[ref] = k
	if k.PreviousHash != "" && k.PreviousValidUntil != nil {
		m.byHash[k.PreviousHash] = ref
	}
	m.byHash[k.SecretHash] = ref
}

func (m *modelIndex) verify(secret string, perm events.Permission, now time.Time) (string, string) {
	ref, ok := m.byHash[events.HashSecret(secret)]
	if !ok {
		return keyindex.CodeNotFound, ""
	}
	k := m.byKey[ref]
	if events.HashSecret(secret) != k.SecretHash && !now.Before(*k.PreviousValidUntil) {
		return keyindex.CodeNotFound, ""
	}
	switch k.StatusAt(now) {
	case events.StatusActive:
	case events.StatusExpired:
		return keyindex.CodeExpired, k.ID
	default:
		return keyindex.CodeRevoked, k.ID
	}
	for _, p := range k.Permissions {
		if p == perm {
			return keyindex.CodeValid, k.ID
		}
	}
	return keyindex.CodePermissionDenied, k.ID
}

// TestIndexMatchesModel: over thousands of random puts (new keys, rotations with and
// without a grace period, revocations, expiry changes, two keys given one secret, the
// same key put again), a VerifyOnly index and a whole one answer every secret ever used
// exactly as the plain-map model does: the open-addressing tables find every live digest
// after their removals and growths, and nothing removed.
func TestIndexMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	m := &modelIndex{byHash: map[string]string{}, byKey: map[string]events.KeyState{}}
	var full, compact keyindex.Index
	compact.VerifyOnly = true
	var keys []events.KeyState
	nsecrets := 0
	newSecret := func() string { nsecrets++; return fmt.Sprint("s", nsecrets) }
	perms := [][]events.Permission{{"a"}, {"a", "b"}, {}, nil}
	for step := range 20000 {
		var k events.KeyState
		switch op := rng.IntN(10); {
		case op < 4 || len(keys) == 0: // a new key
			k = events.KeyState{ID: fmt.Sprintf("K%05d", len(keys)), Workspace: events.Workspace(fmt.Sprint("ws", rng.IntN(7))),
				Status: events.StatusActive, SecretHash: events.HashSecret(testSecret(newSecret()))}
			keys = append(keys, k)
		default:
			j := rng.IntN(len(keys))
			k = keys[j]
			switch op {
			case 4, 5: // rotate, with a grace that is over or not at t0
				until := t0.Add(time.Duration(rng.IntN(3)-1) * time.Minute)
				k.PreviousHash, k.PreviousValidUntil = k.SecretHash, &until
				k.SecretHash = events.HashSecret(testSecret(newSecret()))
			case 6:
				k.Status = events.StatusRevoked
			case 7:
				exp := t0.Add(time.Duration(rng.IntN(3)-1) * time.Second)
				k.ExpiresAt = &exp
			case 8: // the secret of another key
				k.SecretHash = keys[rng.IntN(len(keys))].SecretHash
				k.PreviousHash, k.PreviousValidUntil = "", nil
			}
			keys[j] = k
		}
		k.Permissions = perms[rng.IntN(len(perms))]
		k.Name, k.Version = fmt.Sprint("name", step), uint64(step+1)
		m.put(k)
		full.Put(k)
		compact.Put(k)
	}
	if full.Len() != len(keys) || compact.Len() != len(keys) {
		t.Fatalf("Len %d and %d, want %d", full.Len(), compact.Len(), len(keys))
	}
	for i := 1; i <= nsecrets+1; i++ {
		s := testSecret(fmt.Sprint("s", i))
		wantCode, wantID := m.verify(s, "b", t0)
		for name, x := range map[string]*keyindex.Index{"whole": &full, "VerifyOnly": &compact} {
			if r := x.Verify(s, netip.Addr{}, "b", t0); r.Code != wantCode || r.KeyID != wantID {
				t.Fatalf("%s: secret s%d: %s %s, want %s %s", name, i, r.Code, r.KeyID, wantCode, wantID)
			}
		}
	}
	for _, k := range keys {
		got, ok := full.Key(k.Workspace, k.ID)
		if !ok || got.Name != m.byKey[string(k.Workspace)+"/"+k.ID].Name || got.SecretHash != k.SecretHash {
			t.Fatalf("Key(%s, %s) = %+v, %v", k.Workspace, k.ID, got, ok)
		}
	}
	df, _ := full.Dump()
	dc, _ := compact.Dump()
	if df != dc {
		t.Fatal("a VerifyOnly index and a whole one that answer alike dump differently")
	}
}
