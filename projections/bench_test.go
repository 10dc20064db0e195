package projections

import (
	"net/netip"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keyreg/keyreg/events"
)

// BenchmarkApply applies one batch of 1000 records (workspaces, keys with updates and
// rotations, identifiers with name claims) to a fresh store.
func BenchmarkApply(b *testing.B) {
	log := events.NewMemLog()
	scenario(b, newWriter(log), 1000)
	recs := allRecords(b, log)[:1000]
	for _, bc := range []struct {
		name string
		opts func(b *testing.B) (string, Options)
	}{
		{"Mem", func(*testing.B) (string, Options) { return "db", Options{FS: vfs.NewMem()} }},
		{"Disk/Sync", func(b *testing.B) (string, Options) { return b.TempDir(), Options{} }},
		{"Disk/NoSync", func(b *testing.B) (string, Options) { return b.TempDir(), Options{NoSync: true} }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				s, err := Open(bc.opts(b))
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := s.Apply(recs); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				s.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(b.N*len(recs))/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkVerify checks a valid secret against a store of about 250 keys.
func BenchmarkVerify(b *testing.B) {
	log := events.NewMemLog()
	scenario(b, newWriter(log), 1000)
	s := openMem(b)
	if err := s.Apply(allRecords(b, log)); err != nil {
		b.Fatal(err)
	}
	secret := testSecret("BK00000b")
	ip := netip.MustParseAddr("203.0.113.7")
	b.ReportAllocs()
	b.Run("Serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r := s.Verify(secret, ip, "users.track", t0); !r.Valid {
				b.Fatal(r.Code)
			}
		}
	})
	b.Run("Parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if r := s.Verify(secret, ip, "users.track", t0); !r.Valid {
					b.Error(r.Code)
					return
				}
			}
		})
	})
}
