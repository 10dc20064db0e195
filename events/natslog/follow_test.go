package natslog_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
)

// TestFollowFilter follows one workspace, and one key, from a sequence, on the JetStream
// log (filtered on the server) and the in-memory log (filtered here): the same records in
// the same order, then new ones as they come.
func TestFollowFilter(t *testing.T) {
	for name, newLog := range map[string]func(t *testing.T) events.Log{
		"JetStream": func(t *testing.T) events.Log { return eventstest.NewJetStreamLog(t) },
		"Memory":    func(t *testing.T) events.Log { return events.NewMemLog() },
	} {
		t.Run(name, func(t *testing.T) {
			log := newLog(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			add := func(i int) {
				ws := []string{"acme", "beta"}[i%2]
				subj := fmt.Sprintf("keyreg.%s.key.K%d.created", ws, i%5)
				if _, err := log.Append(ctx, []events.Message{{Subject: subj, ID: events.NewID(), Data: []byte("{}")}}); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 20 {
				add(i) // seq i+1
			}
			collect := func(filter string, from uint64, n int, later func()) []string {
				var got []string
				errDone := errors.New("done")
				if later != nil {
					t := time.AfterFunc(50*time.Millisecond, later)
					defer t.Stop()
				}
				err := events.FollowFilter(ctx, log, filter, from, func(r events.Record) error {
					got = append(got, fmt.Sprintf("%d %s", r.Seq, r.Subject))
					if len(got) == n {
						return errDone
					}
					return nil
				})
				if !errors.Is(err, errDone) {
					t.Fatalf("FollowFilter(%s, %d): %v after %v", filter, from, err, got)
				}
				return got
			}
			appended := make(chan struct{})
			got := collect(events.WorkspaceFilter("acme"), 15, 4, func() {
				defer close(appended)
				if _, err := log.Append(ctx, []events.Message{{Subject: "keyreg.acme.key.K0.created", ID: events.NewID(), Data: []byte("{}")}}); err != nil {
					t.Error(err)
				}
			})
			<-appended
			want := []string{"15 keyreg.acme.key.K4.created", "17 keyreg.acme.key.K1.created", "19 keyreg.acme.key.K3.created", "21 keyreg.acme.key.K0.created"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("workspace acme from 15: %v, want %v", got, want)
			}
			got = collect(events.AggregateFilter("acme", events.AggKey, "K0"), 1, 3, nil)
			want = []string{"1 keyreg.acme.key.K0.created", "11 keyreg.acme.key.K0.created", "21 keyreg.acme.key.K0.created"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("key acme/K0: %v, want %v", got, want)
			}
		})
	}
}

func TestSeqAtTime(t *testing.T) {
	log := eventstest.NewJetStreamLog(t)
	ctx := context.Background()
	if seq, err := events.SeqAtTime(ctx, log, time.Now()); err != nil || seq != 1 {
		t.Fatalf("empty log: %d, %v; want 1", seq, err)
	}
	var times []time.Time
	for i := range 9 {
		seqs, err := log.Append(ctx, []events.Message{{Subject: fmt.Sprintf("keyreg.acme.key.K%d.created", i), ID: events.NewID(), Data: []byte("{}")}})
		if err != nil {
			t.Fatal(err)
		}
		r, err := log.Get(ctx, seqs[0])
		if err != nil {
			t.Fatal(err)
		}
		times = append(times, r.Time)
		time.Sleep(2 * time.Millisecond)
	}
	for i, tm := range times {
		if seq, err := events.SeqAtTime(ctx, log, tm); err != nil || seq != uint64(i+1) {
			t.Errorf("at the time of seq %d: %d, %v", i+1, seq, err)
		}
		if seq, _ := events.SeqAtTime(ctx, log, tm.Add(time.Nanosecond)); seq != uint64(i+2) {
			t.Errorf("just after the time of seq %d: %d, want %d", i+1, seq, i+2)
		}
	}
	if seq, _ := events.SeqAtTime(ctx, log, times[0].Add(-time.Hour)); seq != 1 {
		t.Errorf("long before: %d, want 1", seq)
	}
}
