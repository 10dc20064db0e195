package commands

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/keyreg/keyreg/events"
)

// TestQuotaExactUnderConcurrency creates keys and registers identifiers from two
// Handlers on one log (two nodes), 3×limit at once: exactly limit of each succeed, the
// rest get a *QuotaError naming the workspace and the limit, and the log holds exactly
// limit creations.
func TestQuotaExactUnderConcurrency(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		const limit = 7
		h.MaxKeysPerWorkspace, h.MaxIdentifiersPerWorkspace = limit, limit
		other := &Handler{Log: h.Log, MaxKeysPerWorkspace: limit, MaxIdentifiersPerWorkspace: limit}
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		mustWorkspace(t, h, "beta")
		mustKey(t, h, "beta") // another workspace's keys do not count
		var wg sync.WaitGroup
		keyErrs := make([]error, 3*limit)
		idErrs := make([]error, 3*limit)
		for i := range keyErrs {
			hh := []*Handler{h, other}[i%2]
			wg.Go(func() {
				_, keyErrs[i] = hh.CreateKey(ctx, CreateKey{Workspace: "acme", Name: fmt.Sprint("k", i)})
			})
			wg.Go(func() {
				_, idErrs[i] = hh.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: fmt.Sprint("s", i)})
			})
		}
		wg.Wait()
		for _, c := range []struct {
			what, filter string
			errs         []error
		}{
			{"keys", events.Subject("acme", events.AggKey, "*", events.TypeKeyCreated), keyErrs},
			{"identifiers", events.Subject("acme", events.AggIdentifier, "*", events.TypeIdentifierRegistered), idErrs},
		} {
			ok := 0
			for _, err := range c.errs {
				var qe *QuotaError
				switch {
				case err == nil:
					ok++
				case errors.As(err, &qe):
					if qe.Limit != limit || qe.Workspace != "acme" || qe.What != c.what || !errors.Is(err, ErrQuotaExceeded) {
						t.Errorf("quota error %+v", qe)
					}
				case errors.Is(err, events.ErrConflict):
					// gave up after retries: allowed, but it must not have appended
				default:
					t.Errorf("%s: %v", c.what, err)
				}
			}
			if stored := len(records(t, h.Log, c.filter)); stored != ok || ok > limit {
				t.Fatalf("%s: %d succeeded, %d stored, limit %d", c.what, ok, stored, limit)
			}
			if ok < limit {
				t.Logf("%s: only %d of %d (some gave up after retries)", c.what, ok, limit)
			}
		}
		// Fill up to the limit if some gave up; then both handlers refuse one more, and
		// nothing is appended.
		keyFilter := events.Subject("acme", events.AggKey, "*", events.TypeKeyCreated)
		for len(records(t, h.Log, keyFilter)) < limit {
			mustKey(t, other, "acme")
		}
		before := lastSeq(t, h.Log)
		for _, hh := range []*Handler{h, other} {
			_, err := hh.CreateKey(ctx, CreateKey{Workspace: "acme", Name: "one more"})
			wantErr(t, err, ErrQuotaExceeded)
			if want := `workspace "acme" holds 7 keys, the most allowed`; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v does not say %q", err, want)
			}
		}
		if after := lastSeq(t, h.Log); after != before {
			t.Fatalf("refused creations appended %d events", after-before)
		}
		// Another workspace is not limited by acme's count.
		if _, err := other.CreateKey(ctx, CreateKey{Workspace: "beta", Name: "b2"}); err != nil {
			t.Fatal(err)
		}
	})
}
