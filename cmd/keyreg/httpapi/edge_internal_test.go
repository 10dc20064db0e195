package httpapi

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
)

// TestIdempotencyCacheBounds drives the cache through answers that are kept and answers
// that are not (5xx, 429, 401), entries evicted while running, expiry and both bounds: the
// queue and the index never drift apart, and the kept bytes stay within the bound.
// (Issue 10 finding 1: a 5xx or 429 removed its entry but left its queue slot, and the
// eviction of that slot dereferenced nil.)
func TestIdempotencyCacheBounds(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := newIdempotency(time.Minute, 8, 4096, 1024)
	statuses := []int{500, 429, 201, 200, 401, 403, 503, 400, 201, 409}
	var running []*idemEntry
	check := func(step string) {
		t.Helper()
		q, idx := m.len()
		if q != idx || q > 8 {
			t.Fatalf("%s: queue %d, index %d entries (bound 8)", step, q, idx)
		}
		if m.size < 0 || m.size > 4096 {
			t.Fatalf("%s: %d bytes kept, bound 4096", step, m.size)
		}
	}
	for i := range 2000 {
		if i%300 == 299 {
			now = now.Add(2 * time.Minute) // every entry expires
		}
		scope := fmt.Sprintf("k%d", i%37)
		e, found := m.begin(scope, sha256.Sum256([]byte(scope)), now)
		check(fmt.Sprintf("begin %d", i))
		if found {
			continue
		}
		running = append(running, e)
		if len(running) < 3 && i%5 != 0 { // keep a few running while others evict them
			continue
		}
		for _, r := range running {
			st := statuses[i%len(statuses)]
			body := strings.Repeat("x", (i*131)%1500) // some too big to keep
			m.finish(r, st >= 200 && st < 300, st, http.Header{"Content-Type": {"application/json"}}, []byte(body))
			check(fmt.Sprintf("finish %d", i))
		}
		running = running[:0]
	}
}

// TestShorten: values are cut to a prefix on a character boundary, with "…".
func TestShorten(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{strings.Repeat("a", 64), strings.Repeat("a", 64)},
		{strings.Repeat("a", 65), strings.Repeat("a", 64) + "…"},
		{strings.Repeat("a", 63) + "é", strings.Repeat("a", 63) + "…"},
	} {
		if got := shorten(c.in, maxEchoedValue); got != c.want {
			t.Errorf("shorten(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if p := invalid("ip", strings.Repeat("9", 1<<20), strings.Repeat("d", 1<<20)); len(p.Value) > 70 || len(p.Detail) > maxDetail+3 {
		t.Errorf("a problem keeps %d bytes of value and %d of detail", len(p.Value), len(p.Detail))
	}
}

func TestCheckStrictJSON(t *testing.T) {
	isList := func(f string) bool { return f == "allowlist" || f == "permissions" || f == "a.list" }
	for _, c := range []struct {
		name, body, field string // field "": accepted
	}{
		{"Plain", `{"name":"x","allowlist":["1.1.1.1"]}`, ""},
		{"Empty", `{}`, ""},
		{"EmptyList", `{"allowlist":[]}`, ""},
		{"NullNotList", `{"expires_at":null}`, ""},
		{"NotJSON", `{"name":`, ""},
		{"Scalar", `42`, ""},
		{"SameKeyInSiblings", `{"a":{"x":1},"b":{"x":1}}`, ""},
		{"SameKeyInArrayElements", `{"items":[{"x":1},{"x":2}]}`, ""},
		{"NullList", `{"allowlist":null}`, "allowlist"},
		{"NullListLater", `{"name":"x","permissions":null}`, "permissions"},
		{"NullNestedList", `{"a":{"list":null}}`, "a.list"},
		{"Duplicate", `{"allowlist":["1.1.1.1"],"allowlist":[]}`, "allowlist"},
		{"DuplicateAfterNested", `{"a":{"b":[1,{"c":2}]},"a":1}`, "a"},
		{"DuplicateNested", `{"a":{"b":1,"b":2}}`, "a.b"},
		{"DuplicateInArrayElement", `{"items":[{"x":1},{"x":2,"x":3}]}`, "items.x"},
		{"DuplicateInTopArray", `[{"x":1,"x":1}]`, "x"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := checkStrictJSON([]byte(c.body), isList)
			switch {
			case c.field == "" && p != nil:
				t.Fatalf("refused: %+v", p)
			case c.field != "" && p == nil:
				t.Fatal("accepted")
			case c.field != "" && (p.Status != 400 || p.Field != c.field):
				t.Fatalf("status %d field %q, want 400 %q", p.Status, p.Field, c.field)
			}
		})
	}
}

// FuzzCheckStrictJSON: the checker never panics, and a refusal is a 400 that echoes at
// most the bounds.
func FuzzCheckStrictJSON(f *testing.F) {
	for _, s := range []string{`{"allowlist":null}`, `{"a":1,"a":2}`, `{"a":[{"b":1},{"b":{"c":null}}]}`, `[[[]]]`, `{"name":`, `null`, `{"":1,"":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p := checkStrictJSON(body, func(field string) bool { return strings.HasSuffix(field, "list") })
		if p == nil {
			return
		}
		if p.Status != 400 || p.Code != CodeInvalid {
			t.Fatalf("problem %+v", p)
		}
		if len(p.Value) > maxEchoedValue+len("…") || len(p.Detail) > maxDetail+len("…") {
			t.Fatalf("a problem echoes %d bytes of value, %d of detail", len(p.Value), len(p.Detail))
		}
	})
}

// FuzzParsePathIDs: whatever the path holds, an accepted workspace is a slug and an
// accepted id a canonical ULID; NATS wildcards never pass.
func FuzzParsePathIDs(f *testing.F) {
	for _, s := range [][2]string{{"acme", "01ARZ3NDEKTSV4RRFFQ69G5FAV"}, {"*", "*"}, {"acme", ">"}, {"ac.me", "01arz3ndektsv4rrffq69g5fav"}, {"", ""}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, ws, id string) {
		for _, route := range []string{"/v1/workspaces/{ws}/keys/{id}", "/v1/workspaces/{ws}/identifiers/{id}"} {
			err := parsePathIDs(route, func(name string) string {
				if name == "ws" {
					return ws
				}
				return id
			})
			if err != nil {
				p := toProblem(err)
				if p.Status != 400 || (p.Field != "workspace" && p.Field != pathIDField(route)) {
					t.Fatalf("problem %+v", p)
				}
				continue
			}
			if strings.ContainsAny(ws+id, "*>. \x00") || len(id) != 26 {
				t.Fatalf("accepted ws %q id %q", ws, id)
			}
		}
	})
}

// TestOutcomeNamesUnavailable: a command refused because the stream cannot take it now
// (no leader, no quorum) is counted as "unavailable" in keyreg_commands_total, apart from
// the errors an operator must look into.
func TestOutcomeNamesUnavailable(t *testing.T) {
	for err, want := range map[error]string{
		nil: "ok",
		fmt.Errorf("natslog: append x: %w", events.ErrUnavailable): "unavailable",
		errors.New("disk on fire"):                                 "error",
	} {
		if got := outcome(err); got != want {
			t.Errorf("outcome(%v) = %q, want %q", err, got, want)
		}
	}
}
