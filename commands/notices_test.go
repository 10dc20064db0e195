package commands

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
)

// TestNoteKeyExpiry: a due notice is appended once (asked again, on this or another
// handler of the same log, concurrently or not, it appends nothing); a notice not due, or
// of an expiry changed since, appends nothing; another expiry gets an id of its own.
func TestNoteKeyExpiry(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		exp := time.Now().Add(36 * time.Hour).UTC().Truncate(time.Microsecond)
		k, err := h.CreateKey(ctx, CreateKey{Workspace: "acme", Name: "k", Permissions: []string{"users.track"}, ExpiresAt: &exp})
		if err != nil {
			t.Fatal(err)
		}
		note := func(h *Handler, exp time.Time, d time.Duration) (Result, error) {
			return h.NoteKeyExpiry(ctx, NoteKeyExpiry{Workspace: "acme", KeyID: k.ID, ExpiresAt: exp, Threshold: d})
		}
		// Two nodes ask for the 7-day warning at once.
		other := &Handler{Log: h.Log}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, hh := range []*Handler{h, other} {
			wg.Add(1)
			go func() { defer wg.Done(); _, errs[i] = note(hh, exp, 7*24*time.Hour) }()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if _, err := note(h, exp, 30*24*time.Hour); err != nil {
			t.Fatal(err)
		}
		again, err := note(other, exp, 7*24*time.Hour)
		if err != nil || !again.Duplicate {
			t.Fatalf("the 7-day warning asked again: %v %v", again, err)
		}
		for _, d := range []time.Duration{24 * time.Hour, 0} { // not due yet
			if _, err := note(h, exp, d); err != nil {
				t.Fatal(err)
			}
		}
		got := records(t, h.Log, events.AggregateFilter("acme", events.AggKey, k.ID))
		var notices []string
		for _, r := range got {
			if p, ok := r.Payload.(*events.KeyExpiring); ok {
				notices = append(notices, p.Threshold)
				if r.MsgID != ExpiryNoticeID("acme", k.ID, exp, time.Duration(p.ThresholdSeconds)*time.Second) || !p.ExpiresAt.Equal(exp) {
					t.Fatalf("notice %s: id %s, expires %s", p.Threshold, r.MsgID, p.ExpiresAt)
				}
			}
		}
		if len(got) != 3 || len(notices) != 2 || notices[0] != "7d" || notices[1] != "30d" {
			t.Fatalf("events of the key: %d, notices %v", len(got), notices)
		}
		// The expiry changes: notices of the old one append nothing; the new one has new ids.
		exp2 := exp.Add(time.Hour)
		if _, err := h.SetKeyExpiry(ctx, SetKeyExpiry{Workspace: "acme", KeyID: k.ID, ExpiresAt: &exp2}); err != nil {
			t.Fatal(err)
		}
		last := lastSeq(t, h.Log)
		if _, err := note(h, exp, 24*time.Hour*30); err != nil || lastSeq(t, h.Log) != last {
			t.Fatalf("a notice of the old expiry: %v, log %d -> %d", err, last, lastSeq(t, h.Log))
		}
		if ExpiryNoticeID("acme", k.ID, exp2, 7*24*time.Hour) == ExpiryNoticeID("acme", k.ID, exp, 7*24*time.Hour) {
			t.Fatal("another expiry has the same notice id")
		}
		res, err := note(h, exp2, 7*24*time.Hour)
		if err != nil || res.Duplicate || lastSeq(t, h.Log) != last+1 {
			t.Fatalf("the new expiry's warning: %v %v", res, err)
		}
	})
}

// TestReportLeak: a leak report appends keyreg.key.leaked.v1 and keyreg.key.revoked.v1 in
// one batch; sent again it appends nothing; a revoked key is ErrRevoked; a workspace that
// reports only gets the leak alone.
func TestReportLeak(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		k := mustKey(t, h, "acme")
		hash := keyState(t, h, "acme", k.ID).SecretHash
		report := ReportLeak{Workspace: "acme", KeyID: k.ID, SecretHash: hash, URL: "https://example.com/leak", Reporter: "gh-1",
			Meta: events.Meta{Reason: "leaked"}}
		res, err := h.ReportLeak(ctx, report)
		if err != nil || !res.Revoked || res.Duplicate {
			t.Fatalf("report: %+v %v", res, err)
		}
		got := records(t, h.Log, events.AggregateFilter("acme", events.AggKey, k.ID))
		if len(got) != 3 || got[1].Event.Type != events.TypeKeyLeaked || got[2].Event.Type != events.TypeKeyRevoked ||
			got[2].Seq != got[1].Seq+1 || got[2].Event.PrevHash != events.Hash(got[1].Data) || got[2].Event.Reason != "leaked" {
			t.Fatalf("events: %+v", got)
		}
		again, err := h.ReportLeak(ctx, report)
		if err != nil || !again.Duplicate || again.Revoked {
			t.Fatalf("the report again: %+v %v", again, err)
		}
		report.URL = "https://example.com/elsewhere"
		if _, err := h.ReportLeak(ctx, report); !errors.Is(err, ErrRevoked) {
			t.Fatalf("a report of a revoked key: %v", err)
		}

		if _, err := h.SetLeakResponse(ctx, SetLeakResponse{Workspace: "acme", Mode: "sometimes"}); !errors.Is(err, events.ErrInvalid) {
			t.Fatalf("a bad mode: %v", err)
		}
		if _, err := h.SetLeakResponse(ctx, SetLeakResponse{Workspace: "acme", Mode: events.LeakReportOnly}); err != nil {
			t.Fatal(err)
		}
		k2 := mustKey(t, h, "acme")
		res, err = h.ReportLeak(ctx, ReportLeak{Workspace: "acme", KeyID: k2.ID, SecretHash: keyState(t, h, "acme", k2.ID).SecretHash,
			URL: "https://example.com/leak", Reporter: "gh-1"})
		if err != nil || res.Revoked {
			t.Fatalf("report-only: %+v %v", res, err)
		}
		if st := keyState(t, h, "acme", k2.ID); st.Status != events.StatusActive || st.Version != res.Seq {
			t.Fatalf("report-only key: %+v", st)
		}
	})
}
