package events_test

import (
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDependencyDirection keeps the arrows of DESIGN.md pointing one way: events depends
// on no keyreg package; commands and projections on events only; replay on events and
// projections; nothing imports cmd.
func TestDependencyDirection(t *testing.T) {
	const mod = "github.com/keyreg/keyreg/"
	allowed := map[string][]string{
		"events":      {"events"},
		"commands":    {"events", "commands"},
		"projections": {"events", "projections"},
		"replay":      {"events", "projections", "replay"},
	}
	out, err := exec.Command("go", "list", "-deps", "-test=false", "-json=ImportPath,Deps", "../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	checked := 0
	for dec.More() {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(p.ImportPath, mod) {
			continue
		}
		rel := strings.TrimPrefix(p.ImportPath, mod)
		top, _, _ := strings.Cut(rel, "/")
		for _, d := range p.Deps {
			if !strings.HasPrefix(d, mod) {
				continue
			}
			dtop, _, _ := strings.Cut(strings.TrimPrefix(d, mod), "/")
			if dtop == "cmd" && top != "cmd" {
				t.Errorf("%s imports %s: nothing outside cmd may import cmd", rel, d)
			}
			if ok, listed := allowed[top]; listed && !slices.Contains(ok, dtop) {
				t.Errorf("%s imports %s: %s may depend only on %v", rel, d, top, ok)
			}
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("go list found no keyreg packages")
	}
}
