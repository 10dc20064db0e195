package projections

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the arrows pointing one way: projections depends on events and
// never on commands, replay or cmd.
func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range strings.Fields(string(out)) {
		rest, ok := strings.CutPrefix(dep, "github.com/keyreg/keyreg/")
		if ok && rest != "events" && rest != "projections" && rest != "projections/keyindex" {
			t.Errorf("projections depends on %s", dep)
		}
	}
}
