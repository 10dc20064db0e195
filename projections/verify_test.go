package projections

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
)

// TestEachKeyReadsTheViews: EachKey gives every key's whole state as the views hold it
// (names and creators included, which the verify index does not keep), with the
// checkpoint they hold; Close waits for an EachKey under way, and EachKey after Close
// fails with events.ErrClosed.
func TestEachKeyReadsTheViews(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 200)
	s := openMem(t)
	if err := s.Apply(allRecords(t, log)); err != nil {
		t.Fatal(err)
	}
	want, err := s.Keys("acme", KeyFilter{})
	if err != nil || len(want) == 0 {
		t.Fatalf("Keys(acme) = %d keys, %v", len(want), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	closed := make(chan error, 1)
	seen := map[string]events.KeyState{}
	cp, err := s.EachKey(func(k *events.KeyState) bool {
		if len(seen) == 0 {
			go func() { closed <- s.Close() }()
			select { // give a Close that does not wait the time to close the DB under EachKey
			case err := <-closed:
				t.Errorf("Close returned (%v) while EachKey was reading", err)
			case <-time.After(200 * time.Millisecond):
			}
		}
		seen[string(k.Workspace)+"/"+k.ID] = *k
		return true
	})
	if err != nil || cp != s.Checkpoint() {
		t.Fatalf("EachKey = %d, %v; want the checkpoint %d", cp, err, s.Checkpoint())
	}
	if len(seen) != 53 {
		t.Errorf("EachKey saw %d keys, want 53", len(seen))
	}
	for _, k := range want {
		got := seen["acme/"+k.ID]
		if got.Name != k.Name || got.Name == "" || got.CreatedAt != k.CreatedAt || got.Version != k.Version || got.LastHash != k.LastHash {
			t.Errorf("EachKey gave %s as %+v, the views hold %+v", k.ID, got, k)
		}
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Close did not return after EachKey")
	}
	if _, err := s.EachKey(func(*events.KeyState) bool { return true }); !errors.Is(err, events.ErrClosed) {
		t.Errorf("EachKey after Close = %v, want events.ErrClosed", err)
	}
}
