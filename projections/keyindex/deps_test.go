package keyindex_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies: keyindex depends on events alone of keyreg, and links neither Pebble
// nor NATS, so that an embedded verifier need not.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if rest, ok := strings.CutPrefix(dep, "github.com/keyreg/keyreg/"); ok && rest != "events" && rest != "projections/keyindex" {
			t.Errorf("keyindex depends on %s", dep)
		}
		if strings.HasPrefix(dep, "github.com/cockroachdb/pebble") || strings.HasPrefix(dep, "github.com/nats-io/") {
			t.Errorf("keyindex links %s", dep)
		}
	}
}
