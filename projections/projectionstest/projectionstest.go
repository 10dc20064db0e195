// Package projectionstest holds fixtures for tests that need views in a given state.
package projectionstest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/keyreg/keyreg/projections"
)

// ToFormat1 rewrites the closed views in dir as format 1 wrote them: states and history
// entries as JSON, leaf indexes in decimal (projections.ReadableValue gives exactly those
// bytes), no format mark. Tree entries are the same in both formats.
func ToFormat1(t testing.TB, dir string) {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{Logger: quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := db.NewBatch()
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		switch k := string(it.Key()); {
		case k == "meta/format":
			b.Delete(it.Key(), nil)
		case strings.HasPrefix(k, "tlog/"), strings.HasPrefix(k, "wtlog/"):
		default:
			b.Set(it.Key(), []byte(projections.ReadableValue(it.Key(), it.Value())), nil)
		}
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

// quiet is a Pebble logger that drops what Pebble says, except a fatal error.
type quiet struct{}

func (quiet) Infof(string, ...any)  {}
func (quiet) Errorf(string, ...any) {}
func (quiet) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
