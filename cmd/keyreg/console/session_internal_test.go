package console

import (
	"testing"
	"time"
)

// TestSessionLimits: one key holds at most maxPerKey sessions (signing in again ends its
// oldest), the table at most max (then sign-in is refused until one expires), and an
// expired session is gone.
func TestSessionLimits(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	s := newSessions(time.Hour, maxPerKey+2, func() time.Time { return now })
	var first string
	for i := range maxPerKey + 1 {
		id, _, ok := s.open("kr_a")
		if !ok {
			t.Fatalf("session %d of one key refused", i)
		}
		if i == 0 {
			first = id
		}
		now = now.Add(time.Second)
	}
	if _, ok := s.get(first); ok {
		t.Error("the oldest session of a key outlived its eleventh sign-in")
	}
	if len(s.m) != maxPerKey {
		t.Errorf("%d sessions of one key, want %d", len(s.m), maxPerKey)
	}
	if _, _, ok := s.open("kr_b"); !ok {
		t.Fatal("another key's sign-in refused")
	}
	if _, _, ok := s.open("kr_c"); !ok {
		t.Fatal("a sign-in with room left refused")
	}
	if _, _, ok := s.open("kr_d"); ok {
		t.Error("a sign-in beyond the table's size was let in")
	}
	now = now.Add(2 * time.Hour)
	if _, _, ok := s.open("kr_d"); !ok {
		t.Error("a sign-in refused though every session had expired")
	}
	if _, ok := s.get(first); ok || len(s.m) != 1 {
		t.Errorf("expired sessions kept: %d", len(s.m))
	}
}
