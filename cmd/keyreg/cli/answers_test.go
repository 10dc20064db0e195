package cli

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestUnknownCommandsSuggest: a mistyped command at any level is a one-line usage error
// (exit 2) that suggests the closest commands and names the help to read.
func TestUnknownCommandsSuggest(t *testing.T) {
	h := &harness{t: t, env: map[string]string{}}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"key", "craete"}, []string{`unknown command "craete" for "keyreg key"`, "did you mean create?", "see keyreg key --help"}},
		{[]string{"key", "rot", "-w", "acme"}, []string{"did you mean rotate?"}},
		{[]string{"wokspace", "list"}, []string{`unknown command "wokspace" for "keyreg"`, "did you mean workspace?", "see keyreg --help"}},
		{[]string{"identifier", "lst"}, []string{"did you mean list?", "see keyreg identifier --help"}},
		{[]string{"audit", "lgo"}, []string{"did you mean log?"}},
		{[]string{"key", "show"}, []string{"accepts 1 arg", "see keyreg key show --help"}},
		{[]string{"key", "list", "-w", "acme", "--limit", "5000"}, []string{"--limit 5000: use 1 to 1000"}},
	} {
		h.fails(2, c.want, c.args...)
	}
	// Nothing close: no suggestion, still one line.
	r := h.fails(2, []string{`unknown command "zzzzzz"`}, "key", "zzzzzz")
	if strings.Contains(r.stderr, "did you mean") {
		t.Errorf("suggested something for zzzzzz: %q", r.stderr)
	}
}

// TestListPagesAndNotFound: list commands page with --limit and --after (and follow every
// page without them), and errors name what was not found.
func TestListPagesAndNotFound(t *testing.T) {
	h := startServer(t)
	h.ok("workspace", "create", "acme", "--name", "Acme")
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		h.ok("key", "create", "-w", "acme", "--name", name)
		h.ok("identifier", "register", "-w", "acme", "--kind", "segment", "--name", name)
	}
	var all struct {
		Keys []struct{ ID string }
	}
	h.okJSON(&all, "key", "list", "-w", "acme")
	if len(all.Keys) != 5 {
		t.Fatalf("key list: %d keys, want 5", len(all.Keys))
	}
	var got []string
	after := ""
	for range 10 {
		args := []string{"key", "list", "-w", "acme", "--limit", "2", "--json"}
		if after != "" {
			args = append(args, "--after", after)
		}
		var p struct {
			Keys []struct{ ID string }
			Next string
		}
		if err := json.Unmarshal([]byte(h.ok(args...)), &p); err != nil {
			t.Fatal(err)
		}
		for _, k := range p.Keys {
			got = append(got, k.ID)
		}
		if p.Next == "" {
			break
		}
		after = p.Next
	}
	var want []string
	for _, k := range all.Keys {
		want = append(want, k.ID)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("pages of 2 gave %v, want %v", got, want)
	}
	// A table page ends with the command of the next page, which gives the rest.
	r := h.run("identifier", "list", "-w", "acme", "--kind", "segment", "--limit", "3")
	table, more, ok := strings.Cut(r.stdout, "\nMore: ")
	if r.code != 0 || !ok || strings.Count(table, "\n") != 4 || !strings.HasPrefix(more, "keyreg identifier list ") {
		t.Fatalf("identifier list --limit 3: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	next := strings.Fields(more)[3:] // after "keyreg identifier list"
	contains(t, "the next page's command", more, "--workspace acme", "--kind segment", "--limit 3", "--after ")
	r = h.run(append([]string{"identifier", "list"}, next...)...)
	if r.code != 0 || strings.Contains(r.stdout, "More:") || strings.Count(r.stdout, "\n") != 3 {
		t.Fatalf("the next page (%v): exit %d, stdout %q, stderr %q", next, r.code, r.stdout, r.stderr)
	}
	h.fails(1, []string{`key "01ARZ3NDEKTSV4RRFFQ69G5FAV" not found in workspace "acme"`}, "key", "show", "-w", "acme", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
	h.fails(1, []string{`workspace "nope" not found`}, "key", "list", "-w", "nope")
}
