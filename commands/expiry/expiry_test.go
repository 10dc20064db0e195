package expiry_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/commands/expiry"
	"github.com/keyreg/keyreg/events"
)

func TestParseWarnings(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"30d,7d,1d", "30d 7d 1d"},
		{"1d, 36h,7d,1d", "7d 36h 1d"},
		{"90m", "90m"},
		{"", ""},
	} {
		ts, err := expiry.ParseWarnings(c.in)
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		var got []string
		for _, x := range ts {
			got = append(got, x.Text)
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("%q: %v, want %s", c.in, got, c.want)
		}
	}
	for _, bad := range []string{"7x", "0d", "-1h", "d", "1.5d", "0s", "99999d"} {
		if _, err := expiry.ParseWarnings(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestScanner: a key first scanned 36 hours before its expiry gets the 30-day and 7-day
// warnings at once, the 1-day one 24 hours before, the expired notice after; scanning
// again, or with a new scanner (a restart), appends nothing more.
func TestScanner(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now := time.Now().UTC()
	clock := func() time.Time { return now }
	log := events.NewMemLog()
	h := &commands.Handler{Log: log, Now: clock}
	if _, err := h.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: "acme", Name: "Acme"}); err != nil {
		t.Fatal(err)
	}
	exp := now.Add(36 * time.Hour)
	k, err := h.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "k", Permissions: []string{"users.track"}, ExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	keys := func(fn func(*events.KeyState) bool) error {
		st, err := commands.LogState{Log: log}.Key(ctx, "acme", k.ID)
		if err != nil {
			return err
		}
		fn(&st)
		return nil
	}
	thresholds, _ := expiry.ParseWarnings(expiry.DefaultWarnings)
	notices := func() string {
		var out []string
		log.Read(ctx, events.AggregateFilter("acme", events.AggKey, k.ID), 1, func(r events.Record) error {
			d, _ := events.DecodeRecord(r)
			switch p := d.Payload.(type) {
			case *events.KeyExpiring:
				out = append(out, p.Threshold)
			case *events.KeyExpired:
				out = append(out, "expired")
			}
			return nil
		})
		return strings.Join(out, " ")
	}
	s := expiry.New(thresholds, time.Second, keys, h, nil, nil, clock)
	for i, step := range []struct {
		at   time.Time
		want string
	}{
		{now, "30d 7d"},
		{now, "30d 7d"},
		{exp.Add(-23 * time.Hour), "30d 7d 1d"},
		{exp.Add(time.Second), "30d 7d 1d expired"},
		{exp.Add(time.Hour), "30d 7d 1d expired"},
	} {
		now = step.at
		if _, err := s.Scan(ctx); err != nil {
			t.Fatal(err)
		}
		if got := notices(); got != step.want {
			t.Fatalf("scan %d: %q, want %q", i, got, step.want)
		}
	}
	last, _ := log.LastSeq(ctx)
	restarted := expiry.New(thresholds, time.Second, keys, h, nil, nil, clock)
	if n, err := restarted.Scan(ctx); err != nil || n != 1 {
		t.Fatalf("a restarted scanner asked %d: %v", n, err)
	}
	if after, _ := log.LastSeq(ctx); after != last {
		t.Fatalf("a restarted scanner appended: %d -> %d", last, after)
	}
}
