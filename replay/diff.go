package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
)

// Difference is one key whose value differs between two stores; a nil value means the key
// is missing from that store.
type Difference struct {
	Key   string
	Left  []byte
	Right []byte
}

// String shows the difference with the values readable (projections.ReadableValue).
func (d Difference) String() string {
	l, r := projections.ReadableValue([]byte(d.Key), d.Left), projections.ReadableValue([]byte(d.Key), d.Right)
	switch {
	case d.Left == nil:
		return fmt.Sprintf("%s: only in right: %s", d.Key, r)
	case d.Right == nil:
		return fmt.Sprintf("%s: only in left: %s", d.Key, l)
	}
	return fmt.Sprintf("%s: left %s, right %s", d.Key, l, r)
}

type kv struct{ k, v []byte }

// Diff compares two stores key by key and returns every difference, in key order, up to
// max of them (0: all).
func Diff(left, right *projections.Store, max int) ([]Difference, error) {
	ch := make(chan kv, 256)
	errc := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		defer close(ch)
		errc <- right.Each(func(k, v []byte) error {
			select {
			case ch <- kv{bytes.Clone(k), bytes.Clone(v)}:
				return nil
			case <-stop:
				return errStopped
			}
		})
	}()
	defer func() {
		close(stop)
		for range ch {
		}
	}()
	var diffs []Difference
	full := func() bool { return max > 0 && len(diffs) >= max }
	r, rok := <-ch
	err := left.Each(func(k, v []byte) error {
		for rok && bytes.Compare(r.k, k) < 0 {
			diffs = append(diffs, Difference{Key: string(r.k), Right: r.v})
			r, rok = <-ch
		}
		switch {
		case rok && bytes.Equal(r.k, k):
			if !bytes.Equal(r.v, v) {
				diffs = append(diffs, Difference{Key: string(k), Left: bytes.Clone(v), Right: r.v})
			}
			r, rok = <-ch
		default:
			diffs = append(diffs, Difference{Key: string(k), Left: bytes.Clone(v)})
		}
		if full() {
			return errStopped
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopped) {
		return nil, fmt.Errorf("replay: diff: %w", err)
	}
	for rok && !full() {
		diffs = append(diffs, Difference{Key: string(r.k), Right: r.v})
		r, rok = <-ch
	}
	if full() {
		return diffs, nil
	}
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("replay: diff: %w", err)
	}
	return diffs, nil
}

var errStopped = errors.New("replay: stopped")

// Verify rebuilds the views up to live's checkpoint into a temporary directory under
// tmpRoot and compares them with live, key by key. It returns the differences (none for
// healthy views) and removes the temporary store.
func Verify(ctx context.Context, log events.Reader, live *projections.Store, tmpRoot string, max int) ([]Difference, error) {
	dir, err := os.MkdirTemp(tmpRoot, "verify-")
	if err != nil {
		return nil, fmt.Errorf("replay: verify: %w", err)
	}
	defer os.RemoveAll(dir)
	cp := live.Checkpoint()
	store, err := projections.Open(dir, projections.Options{NoSync: true})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	if cp > 0 {
		if _, err := ApplyInto(ctx, log, store, Options{UntilSeq: cp}); err != nil {
			return nil, err
		}
	}
	return Diff(live, store, max)
}
