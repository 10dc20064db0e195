package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies: a program that uses the client links none of keyreg's server side:
// no NATS (server or client), no Pebble, no huma, no Prometheus; of keyreg, only the
// wire types.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	for _, dep := range deps {
		for _, forbidden := range []string{"github.com/nats-io/", "github.com/cockroachdb/pebble", "github.com/danielgtaylor/huma", "github.com/prometheus/"} {
			if strings.HasPrefix(dep, forbidden) {
				t.Errorf("the client links %s", dep)
			}
		}
		if rest, ok := strings.CutPrefix(dep, "github.com/keyreg/keyreg/"); ok && rest != "cmd/keyreg/wire" && rest != "cmd/keyreg/client" {
			t.Errorf("the client depends on keyreg's %s", rest)
		}
	}
	if len(deps) == 0 || deps[len(deps)-1] != "github.com/keyreg/keyreg/cmd/keyreg/client" {
		t.Errorf("go list -deps . did not list the client last: %q", deps)
	}
}
