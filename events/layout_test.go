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

// forbiddenDeps lists, for a keyreg package, import path prefixes that must not be among
// its dependencies (go list -deps, tests excluded): what it must never link. One line per
// rule.
var forbiddenDeps = map[string][]string{
	"events":               {"github.com/nats-io/", "github.com/cockroachdb/pebble"},
	"events/natslog":       {"github.com/nats-io/nats-server"},
	"projections/keyindex": {"github.com/nats-io/", "github.com/cockroachdb/pebble"},
	"projections/verifier": {"github.com/nats-io/nats-server", "github.com/cockroachdb/pebble"},
	"commands/sealer":      {"github.com/nats-io/", "github.com/cockroachdb/pebble", "github.com/keyreg/keyreg/projections", "github.com/keyreg/keyreg/events/natslog"},
	"commands/expiry":      {"github.com/nats-io/", "github.com/cockroachdb/pebble", "github.com/keyreg/keyreg/projections", "github.com/keyreg/keyreg/events/natslog"},
	"cmd/keyreg/client":    {"github.com/nats-io/nats-server", "github.com/cockroachdb/pebble", "github.com/danielgtaylor/huma", "github.com/prometheus/"},
}

// onlyKeyreg lists, for a keyreg package that others embed, the keyreg packages (path
// prefixes) it may depend on at all; any other keyreg dependency fails.
var onlyKeyreg = map[string][]string{
	"projections/keyindex": {"events", "projections/keyindex"},
	"projections/verifier": {"events", "projections/keyindex", "projections/verifier", "events/natslog"},
	"cmd/keyreg/client":    {"cmd/keyreg/wire", "cmd/keyreg/client"},
}

// TestForbiddenDependencies checks forbiddenDeps: events is the domain, with no NATS and
// no Pebble; the JetStream log uses nats.go but not the server; the verifier a service
// embeds links no NATS server and no Pebble, and the Go client nothing of the server side;
// sealing consumes the views, the projector and the lease through interfaces of its own.
func TestForbiddenDependencies(t *testing.T) {
	const mod = "github.com/keyreg/keyreg/"
	for pkg, forbidden := range forbiddenDeps {
		out, err := exec.Command("go", "list", "-deps", "-test=false", "../"+pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		deps := strings.Fields(string(out))
		if !slices.Contains(deps, mod+pkg) {
			t.Fatalf("go list -deps %s does not list the package itself: %q", pkg, out)
		}
		for _, d := range deps {
			rel, ok := strings.CutPrefix(d, mod)
			if only, listed := onlyKeyreg[pkg]; ok && listed && !slices.ContainsFunc(only, func(o string) bool { return rel == o || strings.HasPrefix(rel, o+"/") }) {
				t.Errorf("%s depends on keyreg's %s: it may depend only on %v", pkg, rel, only)
			}
		}
		for _, f := range forbidden {
			var bad []string
			for _, d := range deps {
				if strings.HasPrefix(d, f) {
					bad = append(bad, d)
				}
			}
			if len(bad) > 0 {
				t.Errorf("%s links %s (%d packages: %s ...): it must not", pkg, f, len(bad), bad[0])
			}
		}
	}
}
