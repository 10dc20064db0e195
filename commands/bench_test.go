package commands

import (
	"fmt"
	"testing"
)

// BenchmarkCreateKey measures CreateKey, one at a time and from parallel callers. MemLog
// scans the whole log to read an aggregate, so its figures grow with b.N.
func BenchmarkCreateKey(b *testing.B) {
	for _, impl := range logImpls() {
		for _, parallel := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/parallel=%t", impl.name, parallel), func(b *testing.B) {
				h := &Handler{Log: impl.new(b)}
				mustWorkspace(b, h, "acme")
				ctx := testCtx(b)
				cmd := CreateKey{Workspace: "acme", Name: "bench", Permissions: []string{"users.track"}, Allowlist: []string{"10.0.0.0/8"}}
				b.ReportAllocs()
				b.ResetTimer()
				if !parallel {
					for range b.N {
						if _, err := h.CreateKey(ctx, cmd); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := h.CreateKey(ctx, cmd); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// BenchmarkUpdateAllowlist measures UpdateAllowlist on one key per caller (no
// contention); each update alternates between two lists so none is a no-op. Reading a
// key folds all its events, so the cost grows with the key's history (b.N).
func BenchmarkUpdateAllowlist(b *testing.B) {
	lists := [2][]string{{"10.0.0.0/8", "192.0.2.1"}, {"10.0.0.0/8", "2001:db8::/32"}}
	for _, impl := range logImpls() {
		for _, parallel := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/parallel=%t", impl.name, parallel), func(b *testing.B) {
				h := &Handler{Log: impl.new(b)}
				mustWorkspace(b, h, "acme")
				ctx := testCtx(b)
				update := func(id string, i int) error {
					_, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: lists[i%2]})
					return err
				}
				b.ReportAllocs()
				if !parallel {
					id := mustKey(b, h, "acme").ID
					b.ResetTimer()
					for i := range b.N {
						if err := update(id, i); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					id := mustKey(b, h, "acme").ID
					for i := 0; pb.Next(); i++ {
						if err := update(id, i); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
