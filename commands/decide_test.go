package commands

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
)

var (
	testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	testKey = events.KeyState{
		ID: "01JDX3KEY0000000000000000A", Workspace: "acme", Name: "Backend",
		Permissions: []events.Permission{"campaigns.list", "users.track"},
		Allowlist:   []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32")},
		Status:      events.StatusActive, SecretHash: "hash-0", Head: events.Head{Version: 7, LastHash: "last-7"},
	}
	testIdent = events.IdentifierState{
		ID: "01JDX3SEGM0000000000000000", Workspace: "acme", Kind: events.KindSegment, Name: "Summer Sale",
		Status: events.StatusActive, Head: events.Head{Version: 9, LastHash: "last-9"},
	}
	testWorkspace = events.WorkspaceState{ID: "acme", Name: "Acme", Head: events.Head{Version: 1, LastHash: "last-1"}}
)

func wantChanges(t *testing.T, got []change, err error, want ...change) {
	t.Helper()
	if err != nil {
		t.Fatalf("decide: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("changes:\n got %+v\nwant %+v", got, want)
	}
}

func prefixes(s ...string) []netip.Prefix {
	out := []netip.Prefix{}
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

// TestDecideKeyChecks runs every decide of a command on an existing key against a
// missing, a stale and a revoked key.
func TestDecideKeyChecks(t *testing.T) {
	id := testKey.ID
	decides := map[string]func(k events.KeyState, expected uint64) ([]change, error){
		"RenameKey": func(k events.KeyState, v uint64) ([]change, error) {
			return renameKey{ws: "acme", id: id, name: "New", expected: v}.decide(k)
		},
		"UpdatePermissions": func(k events.KeyState, v uint64) ([]change, error) {
			return updatePermissions{ws: "acme", id: id, permissions: []events.Permission{"users.delete"}, expected: v}.decide(k, testWorkspace)
		},
		"UpdateAllowlist": func(k events.KeyState, v uint64) ([]change, error) {
			return updateAllowlist{ws: "acme", id: id, allowlist: prefixes("1.2.3.4/32"), expected: v}.decide(k)
		},
		"RotateKey": func(k events.KeyState, v uint64) ([]change, error) {
			return rotateKey{ws: "acme", id: id, expected: v, secretHash: "hash-1"}.decide(k, testNow)
		},
		"SetKeyExpiry": func(k events.KeyState, v uint64) ([]change, error) {
			exp := testNow.Add(time.Hour)
			return setKeyExpiry{ws: "acme", id: id, expiresAt: &exp, expected: v}.decide(k)
		},
		"RevokeKey": func(k events.KeyState, v uint64) ([]change, error) {
			return revokeKey{ws: "acme", id: id, expected: v}.decide(k, testNow)
		},
	}
	revoked := testKey
	revoked.Status = events.StatusRevoked
	for name, decide := range decides {
		t.Run(name, func(t *testing.T) {
			for _, tc := range []struct {
				name     string
				state    events.KeyState
				expected uint64
				want     error
			}{
				{"events.ErrNotFound", events.KeyState{}, 0, events.ErrNotFound},
				{"ErrPrecondition", testKey, 6, ErrPrecondition},
				{"ErrRevoked", revoked, 0, ErrRevoked},
				{"ErrRevoked/ExpectedVersion", revoked, 7, ErrRevoked},
			} {
				changes, err := decide(tc.state, tc.expected)
				if !errors.Is(err, tc.want) || changes != nil {
					t.Errorf("%s: got %v, %v; want %v", tc.name, changes, err, tc.want)
				}
			}
			if changes, err := decide(testKey, 7); err != nil || len(changes) != 1 {
				t.Errorf("at expected version: got %v, %v; want one change", changes, err)
			}
		})
	}
}

func TestDecideCreateWorkspace(t *testing.T) {
	c := createWorkspace{ws: "acme", name: "Acme"}
	changes, err := c.decide(events.WorkspaceState{})
	wantChanges(t, changes, err, change{ws: "acme", agg: events.AggWorkspace, id: "acme", payload: events.WorkspaceCreated{Name: "Acme"}})
	_, err = c.decide(testWorkspace)
	wantErr(t, err, ErrAlreadyExists)
}

func TestDecideCreateKey(t *testing.T) {
	exp := testNow.Add(time.Hour)
	c := createKey{ws: "acme", id: "01JDX3KEY0000000000000000B", name: "K", permissions: []events.Permission{"users.track"},
		allowlist: prefixes("10.0.0.0/8"), expiresAt: &exp, secretHash: "hash"}
	changes, err := c.decide(testWorkspace)
	wantChanges(t, changes, err, change{ws: "acme", agg: events.AggKey, id: c.id, payload: events.KeyCreated{
		Name: "K", Permissions: []events.Permission{"users.track"}, Allowlist: prefixes("10.0.0.0/8"), SecretHash: "hash", ExpiresAt: &exp,
	}})
	_, err = c.decide(events.WorkspaceState{})
	wantErr(t, err, events.ErrNotFound)
}

func TestDecideRenameKey(t *testing.T) {
	changes, err := renameKey{id: testKey.ID, name: "Frontend"}.decide(testKey)
	wantChanges(t, changes, err, change{ws: "acme", agg: events.AggKey, id: testKey.ID, expect: 7, prevHash: "last-7",
		payload: events.KeyRenamed{Name: "Frontend", Previous: "Backend"}})
	changes, err = renameKey{id: testKey.ID, name: "Backend"}.decide(testKey)
	wantChanges(t, changes, err)
}

func TestDecideUpdatePermissions(t *testing.T) {
	next := []events.Permission{"campaigns.list", "segments.list"}
	changes, err := updatePermissions{id: testKey.ID, permissions: next}.decide(testKey, testWorkspace)
	wantChanges(t, changes, err, keyChange(testKey, events.KeyPermissionsUpdated{
		Permissions: next,
		Previous:    []events.Permission{"campaigns.list", "users.track"},
		Added:       []events.Permission{"segments.list"},
		Removed:     []events.Permission{"users.track"},
	}))
	changes, err = updatePermissions{id: testKey.ID, permissions: testKey.Permissions}.decide(testKey, testWorkspace)
	wantChanges(t, changes, err)

	// An unsorted state (not written by commands) still diffs right.
	k := testKey
	k.Permissions = []events.Permission{"users.track", "campaigns.list"}
	changes, err = updatePermissions{id: testKey.ID, permissions: testKey.Permissions}.decide(k, testWorkspace)
	wantChanges(t, changes, err)

	// From none to some, and back: Previous, Added and Removed are never nil.
	k.Permissions = []events.Permission{}
	changes, err = updatePermissions{id: testKey.ID, permissions: []events.Permission{"users.track"}}.decide(k, testWorkspace)
	wantChanges(t, changes, err, keyChange(k, events.KeyPermissionsUpdated{
		Permissions: []events.Permission{"users.track"}, Previous: []events.Permission{}, Added: []events.Permission{"users.track"}, Removed: []events.Permission{},
	}))
}

func TestDecideUpdateAllowlist(t *testing.T) {
	next := prefixes("10.0.0.0/8", "2001:db8::/32")
	changes, err := updateAllowlist{id: testKey.ID, allowlist: next}.decide(testKey)
	wantChanges(t, changes, err, keyChange(testKey, events.AllowlistUpdated{
		Allowlist: next,
		Previous:  testKey.Allowlist,
		Added:     prefixes("2001:db8::/32"),
		Removed:   prefixes("192.0.2.1/32"),
	}))
	changes, err = updateAllowlist{id: testKey.ID, allowlist: prefixes("10.0.0.0/8", "192.0.2.1/32")}.decide(testKey)
	wantChanges(t, changes, err)
	// Clearing the list allows any address.
	changes, err = updateAllowlist{id: testKey.ID, allowlist: []netip.Prefix{}}.decide(testKey)
	wantChanges(t, changes, err, keyChange(testKey, events.AllowlistUpdated{
		Allowlist: []netip.Prefix{}, Previous: testKey.Allowlist, Added: []netip.Prefix{}, Removed: testKey.Allowlist,
	}))
}

func TestDecideRotateKey(t *testing.T) {
	changes, err := rotateKey{id: testKey.ID, grace: time.Hour, secretHash: "hash-1"}.decide(testKey, testNow)
	wantChanges(t, changes, err, keyChange(testKey, events.KeySecretRotated{
		SecretHash: "hash-1", PreviousHash: "hash-0", PreviousValidUntil: testNow.Add(time.Hour),
	}))
	changes, err = rotateKey{id: testKey.ID, secretHash: "hash-1"}.decide(testKey, testNow)
	wantChanges(t, changes, err, keyChange(testKey, events.KeySecretRotated{
		SecretHash: "hash-1", PreviousHash: "hash-0", PreviousValidUntil: testNow,
	}))
}

func TestDecideSetKeyExpiry(t *testing.T) {
	exp := testNow.Add(time.Hour)
	sameExp := exp.In(time.FixedZone("X", 3600))
	changes, err := setKeyExpiry{id: testKey.ID, expiresAt: &exp}.decide(testKey)
	wantChanges(t, changes, err, keyChange(testKey, events.KeyExpiryChanged{ExpiresAt: &exp}))

	k := testKey
	k.ExpiresAt = &exp
	changes, err = setKeyExpiry{id: testKey.ID, expiresAt: &sameExp}.decide(k)
	wantChanges(t, changes, err)
	changes, err = setKeyExpiry{id: testKey.ID}.decide(k)
	wantChanges(t, changes, err, keyChange(k, events.KeyExpiryChanged{Previous: &exp}))
	changes, err = setKeyExpiry{id: testKey.ID}.decide(testKey)
	wantChanges(t, changes, err)
}

func TestDecideRevokeKey(t *testing.T) {
	changes, err := revokeKey{id: testKey.ID}.decide(testKey, testNow)
	wantChanges(t, changes, err, keyChange(testKey, events.KeyRevoked{PreviousStatus: events.StatusActive}))

	expired := testKey
	past := testNow.Add(-time.Second)
	expired.ExpiresAt = &past
	changes, err = revokeKey{id: testKey.ID}.decide(expired, testNow)
	wantChanges(t, changes, err, keyChange(expired, events.KeyRevoked{PreviousStatus: events.StatusExpired}))
}

func TestDecideRegisterIdentifier(t *testing.T) {
	c := registerIdentifier{ws: "acme", id: "01JDX3APP00000000000000001", kind: events.KindApp, name: "Shop", platform: "ios"}
	claim := events.NameClaimState{Head: events.Head{Version: 12, LastHash: "last-12"}} // claimed and released before
	changes, err := c.decide(testWorkspace, claim)
	wantChanges(t, changes, err,
		change{ws: "acme", agg: events.AggIdentifier, id: c.id, payload: events.IdentifierRegistered{Kind: "app", Name: "Shop", Platform: "ios"}},
		change{ws: "acme", agg: events.AggName, id: events.NameClaimID("app", "shop"), expect: 12, prevHash: "last-12",
			payload: events.NameClaimed{IdentifierID: c.id, Kind: "app", Name: "Shop"}},
	)
	_, err = c.decide(testWorkspace, events.NameClaimState{Holder: testIdent.ID, Head: events.Head{Version: 13}})
	wantErr(t, err, ErrNameTaken)
	_, err = c.decide(events.WorkspaceState{}, events.NameClaimState{})
	wantErr(t, err, events.ErrNotFound)
}

func TestDecideRenameIdentifier(t *testing.T) {
	id := testIdent.ID
	oldClaim := events.NameClaimState{Holder: id, Head: events.Head{Version: 10, LastHash: "claim-10"}}
	newClaim := events.NameClaimState{Head: events.Head{Version: 3, LastHash: "claim-3"}} // released earlier
	rename := func(name string) change {
		return identifierChange(testIdent, events.IdentifierRenamed{Name: name, Previous: "Summer Sale"})
	}

	t.Run("NewName", func(t *testing.T) {
		changes, err := renameIdentifier{id: id, name: "Winter Sale"}.decide(testIdent, newClaim, oldClaim)
		wantChanges(t, changes, err,
			rename("Winter Sale"),
			change{ws: "acme", agg: events.AggName, id: events.NameClaimID("segment", "winter sale"), expect: 3, prevHash: "claim-3",
				payload: events.NameClaimed{IdentifierID: id, Kind: "segment", Name: "Winter Sale"}},
			change{ws: "acme", agg: events.AggName, id: events.NameClaimID("segment", "summer sale"), expect: 10, prevHash: "claim-10",
				payload: events.NameReleased{IdentifierID: id, Kind: "segment", Name: "Summer Sale"}},
		)
	})
	t.Run("CaseOnly", func(t *testing.T) {
		changes, err := renameIdentifier{id: id, name: "SUMMER SALE"}.decide(testIdent, events.NameClaimState{}, events.NameClaimState{})
		wantChanges(t, changes, err, rename("SUMMER SALE"))
	})
	t.Run("Same", func(t *testing.T) {
		changes, err := renameIdentifier{id: id, name: "Summer Sale"}.decide(testIdent, events.NameClaimState{}, events.NameClaimState{})
		wantChanges(t, changes, err)
	})
	t.Run("ErrNameTaken", func(t *testing.T) {
		_, err := renameIdentifier{id: id, name: "Winter Sale"}.decide(testIdent, events.NameClaimState{Holder: "other", Head: events.Head{Version: 4}}, oldClaim)
		wantErr(t, err, ErrNameTaken)
	})
	t.Run("OldNameNotHeld", func(t *testing.T) {
		changes, err := renameIdentifier{id: id, name: "Winter Sale"}.decide(testIdent, newClaim, events.NameClaimState{Holder: "other", Head: events.Head{Version: 5}})
		if err != nil || len(changes) != 2 {
			t.Fatalf("got %v, %v; want rename and claim only", changes, err)
		}
	})
	t.Run("Errors", func(t *testing.T) {
		retired := testIdent
		retired.Status = events.StatusRetired
		_, err := renameIdentifier{id: id, name: "X"}.decide(retired, newClaim, oldClaim)
		wantErr(t, err, ErrRetired)
		_, err = renameIdentifier{id: id, name: "X"}.decide(events.IdentifierState{}, newClaim, oldClaim)
		wantErr(t, err, events.ErrNotFound)
		_, err = renameIdentifier{id: id, name: "X", expected: 8}.decide(testIdent, newClaim, oldClaim)
		wantErr(t, err, ErrPrecondition)
	})
}

func TestDecideRetireIdentifier(t *testing.T) {
	id := testIdent.ID
	claim := events.NameClaimState{Holder: id, Head: events.Head{Version: 10, LastHash: "claim-10"}}
	changes, err := retireIdentifier{id: id}.decide(testIdent, claim)
	wantChanges(t, changes, err,
		identifierChange(testIdent, events.IdentifierRetired{Kind: "segment", Name: "Summer Sale"}),
		change{ws: "acme", agg: events.AggName, id: events.NameClaimID("segment", "summer sale"), expect: 10, prevHash: "claim-10",
			payload: events.NameReleased{IdentifierID: id, Kind: "segment", Name: "Summer Sale"}},
	)
	changes, err = retireIdentifier{id: id}.decide(testIdent, events.NameClaimState{Holder: "other", Head: events.Head{Version: 11}})
	wantChanges(t, changes, err, identifierChange(testIdent, events.IdentifierRetired{Kind: "segment", Name: "Summer Sale"}))

	retired := testIdent
	retired.Status = events.StatusRetired
	_, err = retireIdentifier{id: id}.decide(retired, claim)
	wantErr(t, err, ErrRetired)
	_, err = retireIdentifier{id: id}.decide(events.IdentifierState{}, claim)
	wantErr(t, err, events.ErrNotFound)
	_, err = retireIdentifier{id: id, expected: 10}.decide(testIdent, claim)
	wantErr(t, err, ErrPrecondition)
}

func TestMessages(t *testing.T) {
	first := events.NewID()
	changes := []change{
		{ws: "acme", agg: events.AggKey, id: "K", payload: events.KeyRenamed{Name: "a", Previous: "b"}, expect: 5, prevHash: "h5"},
		{ws: "acme", agg: events.AggName, id: "N", payload: events.NameClaimed{IdentifierID: "K", Kind: "segment", Name: "a"}, expect: 2, prevHash: "h2"},
		{ws: "acme", agg: events.AggKey, id: "K", payload: events.KeyRenamed{Name: "c", Previous: "a"}, expect: 5, prevHash: "h5"},
	}
	msgs, err := messages(changes, first, events.Meta{Actor: "ACTOR"}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	var evs []events.Event
	for i, m := range msgs {
		e, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
		if want, _ := batchID(first, i); m.ID != want || e.ID != want {
			t.Errorf("message %d: id %s, event id %s, want %s", i, m.ID, e.ID, want)
		}
		if e.Actor != "ACTOR" || !e.Time.Equal(testNow) {
			t.Errorf("message %d: actor %q time %v", i, e.Actor, e.Time)
		}
	}
	if msgs[0].Subject != "keyreg.acme.key.K.renamed" || msgs[1].Subject != "keyreg.acme.name.N.claimed" {
		t.Errorf("subjects %s, %s", msgs[0].Subject, msgs[1].Subject)
	}
	if msgs[0].ExpectFilter != "keyreg.acme.key.K.*" || msgs[0].ExpectSeq != 5 ||
		msgs[1].ExpectFilter != "keyreg.acme.name.N.*" || msgs[1].ExpectSeq != 2 ||
		msgs[2].ExpectFilter != "" {
		t.Errorf("expectations: %+v", msgs)
	}
	if evs[0].PrevHash != "h5" || evs[1].PrevHash != "h2" || evs[2].PrevHash != events.Hash(msgs[0].Data) {
		t.Errorf("prevhash chain: %q %q %q", evs[0].PrevHash, evs[1].PrevHash, evs[2].PrevHash)
	}
}

func TestBatchID(t *testing.T) {
	tests := []struct{ first, want string }{
		{"01JDX3KEY0000000000000000A", "01JDX3KEY0000000000000000B"},
		{"01JDX3KEY000000000000000ZZ", "01JDX3KEY00000000000000100"},
		{"01JDX3KEYZZZZZZZZZZZZZZZZZ", "01JDX3KEZ00000000000000000"}, // carry into the timestamp
	}
	for _, tt := range tests {
		got, err := batchID(tt.first, 1)
		if err != nil || got != tt.want {
			t.Errorf("batchID(%s, 1) = %s, %v; want %s", tt.first, got, err, tt.want)
		}
	}
	if got, _ := batchID("01JDX3KEY0000000000000000A", 0); got != "01JDX3KEY0000000000000000A" {
		t.Errorf("batchID(x, 0) = %s", got)
	}
}
