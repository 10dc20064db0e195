package commands

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkCreateKey measures CreateKey, from one caller and from 4×GOMAXPROCS parallel
// callers. MemLog scans the whole log to read the workspace, so its figures grow with
// b.N.
func BenchmarkCreateKey(b *testing.B) {
	cmd := CreateKey{Workspace: "acme", Name: "bench", Permissions: []string{"users.track"}, Allowlist: []string{"10.0.0.0/8"}}
	bench(b, func(h *Handler) func(i int) error {
		return func(int) error {
			_, err := h.CreateKey(context.Background(), cmd)
			return err
		}
	})
}

// BenchmarkCreateKeyQuota is BenchmarkCreateKey under a (never reached) quota: creations
// in the workspace take turns and each expects the last creation counted.
func BenchmarkCreateKeyQuota(b *testing.B) {
	cmd := CreateKey{Workspace: "acme", Name: "bench", Permissions: []string{"users.track"}, Allowlist: []string{"10.0.0.0/8"}}
	bench(b, func(h *Handler) func(i int) error {
		h.MaxKeysPerWorkspace = 1 << 30
		return func(int) error {
			_, err := h.CreateKey(context.Background(), cmd)
			return err
		}
	})
}

// BenchmarkUpdateAllowlist measures UpdateAllowlist without contention: each caller
// updates a key of its own, alternating between two lists so that no update is a no-op.
// Reading a key folds all its events, so each caller moves to a new key every 50 updates
// (the creation is part of the figures).
func BenchmarkUpdateAllowlist(b *testing.B) {
	lists := [2][]string{{"10.0.0.0/8", "192.0.2.1"}, {"10.0.0.0/8", "2001:db8::/32"}}
	bench(b, func(h *Handler) func(i int) error {
		var id string
		return func(i int) error {
			ctx := context.Background()
			if i%50 == 0 {
				res, err := h.CreateKey(ctx, CreateKey{Workspace: "acme", Name: "bench", Allowlist: lists[1]})
				if err != nil {
					return err
				}
				id = res.ID
			}
			_, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: lists[i%2]})
			return err
		}
	})
}

// bench runs sub-benchmarks per log implementation, sequential and parallel. newOp is
// called once per calling goroutine, on a Handler whose log holds workspace acme; the op
// it returns is called with the goroutine's call count.
func bench(b *testing.B, newOp func(h *Handler) func(i int) error) {
	for _, impl := range logImpls() {
		for _, parallel := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/parallel=%t", impl.name, parallel), func(b *testing.B) {
				h := impl.newHandler(b)
				mustWorkspace(b, h, "acme")
				b.ReportAllocs()
				b.ResetTimer()
				if !parallel {
					op := newOp(h)
					for i := range b.N {
						if err := op(i); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.SetParallelism(4)
				b.RunParallel(func(pb *testing.PB) {
					op := newOp(h)
					for i := 0; pb.Next(); i++ {
						if err := op(i); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
