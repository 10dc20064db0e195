package console

import (
	"reflect"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
)

// TestSessionKeepsNoSecret: a session holds the key's digest, never its secret: no field
// of a session is a string but the CSRF token.
func TestSessionKeepsNoSecret(t *testing.T) {
	typ := reflect.TypeOf(session{})
	for i := range typ.NumField() {
		if f := typ.Field(i); f.Type.Kind() == reflect.String && f.Name != "csrf" {
			t.Errorf("session.%s is a string: a session must not keep the key's secret", f.Name)
		}
	}
}

// TestSessionLimits: one key holds at most maxPerKey sessions (signing in again ends its
// oldest), the table at most max (then sign-in is refused until one expires), and an
// expired session is gone.
func TestSessionLimits(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	s := newSessions(time.Hour, maxPerKey+2, func() time.Time { return now })
	var first string
	for i := range maxPerKey + 1 {
		id, _, ok := s.open(events.SecretDigest("kr_a"))
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
	if _, _, ok := s.open(events.SecretDigest("kr_b")); !ok {
		t.Fatal("another key's sign-in refused")
	}
	if _, _, ok := s.open(events.SecretDigest("kr_c")); !ok {
		t.Fatal("a sign-in with room left refused")
	}
	if _, _, ok := s.open(events.SecretDigest("kr_d")); ok {
		t.Error("a sign-in beyond the table's size was let in")
	}
	now = now.Add(2 * time.Hour)
	if _, _, ok := s.open(events.SecretDigest("kr_d")); !ok {
		t.Error("a sign-in refused though every session had expired")
	}
	if _, ok := s.get(first); ok || len(s.m) != 1 {
		t.Errorf("expired sessions kept: %d", len(s.m))
	}
}
