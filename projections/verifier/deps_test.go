package verifier_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies: a service that embeds the verifier links nats.go, and neither the
// NATS server nor Pebble; of keyreg, only the domain and the key index.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	nats := false
	for _, dep := range strings.Fields(string(out)) {
		for _, forbidden := range []string{"github.com/nats-io/nats-server", "github.com/cockroachdb/pebble"} {
			if strings.HasPrefix(dep, forbidden) {
				t.Errorf("the verifier links %s", dep)
			}
		}
		if rest, ok := strings.CutPrefix(dep, "github.com/keyreg/keyreg/"); ok && !allowedKeyreg(rest) {
			t.Errorf("the verifier depends on keyreg's %s", rest)
		}
		nats = nats || dep == "github.com/nats-io/nats.go"
	}
	if !nats {
		t.Error("go list -deps lists no nats.go: the check read the wrong package")
	}
}

// allowedKeyreg reports whether the verifier may depend on keyreg package rel.
func allowedKeyreg(rel string) bool {
	switch rel {
	case "events", "projections/keyindex", "projections/verifier":
		return true
	}
	return strings.HasPrefix(rel, "events/natslog") && !strings.HasPrefix(rel, "events/natslog/natsserver")
}
