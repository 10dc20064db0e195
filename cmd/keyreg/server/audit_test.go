package server_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands/sealer"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/replay"
)

// withSealer makes the node seal checkpoints by itself.
func withSealer(every int, interval time.Duration) func(*server.Config) {
	return func(c *server.Config) { c.SealEveryEvents, c.SealInterval = every, interval }
}

type auditPage struct {
	Events []wire.HistoryEntry `json:"events"`
	Next   uint64              `json:"next"`
}

type ev struct {
	seq uint64
	events.Event
}

func (p auditPage) decode(t *testing.T) []ev {
	t.Helper()
	var out []ev
	for _, e := range p.Events {
		d, err := events.Decode(e.Event)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev{e.Sequence, d})
	}
	return out
}

func shortTypes(evs []ev) string {
	var s []string
	for _, e := range evs {
		s = append(s, strings.TrimSuffix(strings.TrimPrefix(string(e.Type), "keyreg."), ".v1"))
	}
	return strings.Join(s, " ")
}

// auditFixture: in workspace acme, an ops key (keys only) creates key K1, the writer
// changes its allowlist (with a reason) and renames it, ops revokes it, the writer
// creates K2.
type auditFixture struct {
	fixture
	ops, k1, k2 wire.KeyWithSecret
}

func newAuditFixture(t *testing.T, n *node) auditFixture {
	f := auditFixture{fixture: newFixture(t, n, "acme")}
	f.ops = f.createKey(map[string]any{"name": "ops", "permissions": []string{"keyreg.keys.read", "keyreg.keys.write"}})
	f.json("POST", "/v1/workspaces/acme/keys", f.ops.Secret, map[string]any{"name": "K1", "allowlist": []string{"10.0.0.0/8"}}, 201, &f.k1)
	base := "/v1/workspaces/acme/keys/" + f.k1.Key.ID
	f.json("PUT", base+"/allowlist", f.writer, map[string]any{"allowlist": []string{"192.0.2.0/24"}}, 200, nil, "Keyreg-Reason", "office moved")
	f.json("PATCH", base, f.writer, map[string]any{"name": "K1 renamed"}, 200, nil)
	f.json("DELETE", base, f.ops.Secret, nil, 200, nil, "Keyreg-Reason", "leaked")
	f.k2 = f.createKey(map[string]any{"name": "K2"})
	return f
}

func TestAuditLogFilters(t *testing.T) {
	n := startNode(t, "")
	f := newAuditFixture(t, n)
	get := func(query string) []ev {
		t.Helper()
		var p auditPage
		f.json("GET", "/v1/workspaces/acme/audit"+query, f.writer, nil, 200, &p)
		if p.Next != 0 {
			t.Fatalf("%s: a next cursor on a small page", query)
		}
		return p.decode(t)
	}
	all := get("")
	if got, want := shortTypes(all), "workspace.created key.created key.created key.created key.allowlist_updated key.renamed key.revoked key.created"; got != want {
		t.Fatalf("audit log: %s\nwant %s", got, want)
	}
	for i := 1; i < len(all); i++ {
		if all[i].seq <= all[i-1].seq {
			t.Fatal("audit log not in stream order")
		}
	}
	allow := all[4]
	var p events.AllowlistUpdated
	json.Unmarshal(allow.Data, &p)
	if allow.Reason != "office moved" || allow.ActorIP != "127.0.0.1" || fmt.Sprint(p.Previous) != "[10.0.0.0/8]" ||
		fmt.Sprint(p.Allowlist) != "[192.0.2.0/24]" || fmt.Sprint(p.Added) != "[192.0.2.0/24]" || fmt.Sprint(p.Removed) != "[10.0.0.0/8]" {
		t.Fatalf("allowlist event: %+v %+v", allow.Event, p)
	}
	ts := func(e ev) string { return url.QueryEscape(e.Time.Format(time.RFC3339Nano)) }
	for _, c := range []struct{ query, want string }{
		{"?key=" + f.k1.Key.ID, "key.created key.allowlist_updated key.renamed key.revoked"},
		{"?actor=" + f.ops.Key.ID, "key.created key.revoked"},
		{"?type=revoked", "key.revoked"},
		{"?type=key.renamed&type=keyreg.key.revoked.v1", "key.renamed key.revoked"},
		{"?type=created", "workspace.created key.created key.created key.created key.created"},
		{"?type=allowlist_updated,renamed", "key.allowlist_updated key.renamed"},
		{"?since=" + ts(allow) + "&until=" + ts(all[6]), "key.allowlist_updated key.renamed key.revoked"},
		{"?since=" + ts(all[7]), "key.created"},
		{"?until=" + ts(all[0]), "workspace.created"},
		{"?key=" + f.k1.Key.ID + "&actor=" + f.writer0(all) + "&type=renamed", "key.renamed"},
		{"?after=" + fmt.Sprint(all[5].seq), "key.revoked key.created"},
	} {
		if got := shortTypes(get(c.query)); got != c.want {
			t.Errorf("audit%s: %s, want %s", c.query, got, c.want)
		}
	}
	// Pages of 3 with the next cursor give the whole log.
	var paged []ev
	after := uint64(0)
	for {
		var p auditPage
		f.json("GET", fmt.Sprintf("/v1/workspaces/acme/audit?limit=3&after=%d", after), f.writer, nil, 200, &p)
		paged = append(paged, p.decode(t)...)
		if p.Next == 0 {
			break
		}
		after = p.Next
	}
	if shortTypes(paged) != shortTypes(all) || len(paged) != len(all) {
		t.Fatalf("paged audit log: %s", shortTypes(paged))
	}
	// Bad filters name the field.
	for _, c := range []struct{ query, field string }{
		{"?type=bogus", "type"}, {"?since=yesterday", "since"}, {"?until=2026-13-01T00:00:00Z", "until"},
		{"?key=not-a-ulid", "key"}, {"?actor=x", "actor"}, {"?limit=0", "limit"}, {"?limit=1001", "limit"},
		{"?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "until"},
	} {
		var pb problemBody
		f.json("GET", "/v1/workspaces/acme/audit"+c.query, f.writer, nil, 400, &pb)
		if pb.Field != c.field {
			t.Errorf("audit%s: field %q, want %q", c.query, pb.Field, c.field)
		}
	}
	// Permissions: keyreg.audit.read (or admin) only; other workspaces see nothing.
	f.json("GET", "/v1/workspaces/acme/audit", f.ops.Secret, nil, 403, nil)
	f.json("GET", "/v1/workspaces/acme/audit", n.root, nil, 200, nil)
	var auditor wire.KeyWithSecret
	f.json("POST", "/v1/workspaces/acme/keys", f.writer, map[string]any{"name": "auditor", "permissions": []string{"keyreg.audit.read"}}, 201, &auditor)
	f.json("GET", "/v1/workspaces/acme/audit", auditor.Secret, nil, 200, nil)
	f.json("GET", "/v1/workspaces/acme/keys", auditor.Secret, nil, 403, nil)
	// The history of a revoked key, for an auditor.
	var h auditPage
	f.json("GET", "/v1/workspaces/acme/keys/"+f.k1.Key.ID+"/history", auditor.Secret, nil, 200, &h)
	if got := shortTypes(h.decode(t)); got != "key.created key.allowlist_updated key.renamed key.revoked" {
		t.Fatalf("history of the revoked key: %s", got)
	}
	g := newFixture(t, n, "globex")
	f.json("GET", "/v1/workspaces/acme/audit", g.writer, nil, 404, nil)
	f.json("GET", "/v1/workspaces/acme/audit/export", g.writer, nil, 404, nil)
	f.json("GET", "/v1/workspaces/acme/audit", "", nil, 401, nil)
}

// writer0 returns the actor of the allowlist change: the writer key's id.
func (f auditFixture) writer0(all []ev) string { return all[4].Actor }

func TestAsOfOverHTTP(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	pause := func() time.Time {
		time.Sleep(20 * time.Millisecond)
		m := time.Now().UTC()
		time.Sleep(20 * time.Millisecond)
		return m
	}
	beforeKey := pause()
	k := f.createKey(map[string]any{"name": "watched", "allowlist": []string{"10.0.0.0/8"}})
	created := pause()
	var changed wire.Key
	f.json("PUT", "/v1/workspaces/acme/keys/"+k.Key.ID+"/allowlist", f.writer, map[string]any{"allowlist": []string{"192.0.2.0/24"}}, 200, &changed)
	afterChange := pause()
	var revoked wire.Key
	f.json("DELETE", "/v1/workspaces/acme/keys/"+k.Key.ID, f.writer, nil, 200, &revoked)
	afterRevoke := pause()

	keyAt := func(asOf string, want int) wire.Key {
		t.Helper()
		var out wire.Key
		var into any
		if want == 200 {
			into = &out
		}
		f.json("GET", "/v1/workspaces/acme/keys/"+k.Key.ID+"?as_of="+url.QueryEscape(asOf), f.writer, nil, want, into)
		return out
	}
	listAt := func(asOf string) []string {
		t.Helper()
		var out struct{ Keys []wire.Key }
		f.json("GET", "/v1/workspaces/acme/keys?as_of="+url.QueryEscape(asOf), f.writer, nil, 200, &out)
		var names []string
		for _, k := range out.Keys {
			names = append(names, k.Name+":"+k.Status)
		}
		return names
	}
	rfc := func(t time.Time) string { return t.Format(time.RFC3339Nano) }
	keyAt(rfc(beforeKey), 404)
	keyAt(fmt.Sprint(k.Key.Version-1), 404)
	for _, c := range []struct {
		asOf, status, allow string
		version             uint64
	}{
		{rfc(created), "active", "10.0.0.0/8", k.Key.Version},
		{fmt.Sprint(k.Key.Version), "active", "10.0.0.0/8", k.Key.Version},
		{rfc(afterChange), "active", "192.0.2.0/24", changed.Version},
		{fmt.Sprint(revoked.Version - 1), "active", "192.0.2.0/24", changed.Version},
		{rfc(afterRevoke), "revoked", "192.0.2.0/24", revoked.Version},
		{fmt.Sprint(revoked.Version + 1000), "revoked", "192.0.2.0/24", revoked.Version},
	} {
		got := keyAt(c.asOf, 200)
		if got.Status != c.status || fmt.Sprint(got.Allowlist) != "["+c.allow+"]" || got.Version != c.version {
			t.Errorf("as_of %s: %s %v version %d; want %s [%s] %d", c.asOf, got.Status, got.Allowlist, got.Version, c.status, c.allow, c.version)
		}
	}
	if got := listAt(rfc(beforeKey)); slices.Contains(got, "watched:active") {
		t.Errorf("keys before the key existed: %v", got)
	}
	if got := listAt(rfc(afterChange)); !slices.Contains(got, "watched:active") || !slices.Contains(got, "writer:active") {
		t.Errorf("keys after the change: %v", got)
	}
	if got := listAt(rfc(afterRevoke)); !slices.Contains(got, "watched:revoked") {
		t.Errorf("keys after revocation: %v", got)
	}
	var active struct{ Keys []wire.Key }
	f.json("GET", "/v1/workspaces/acme/keys?status=revoked&as_of="+url.QueryEscape(rfc(afterChange)), f.writer, nil, 200, &active)
	if len(active.Keys) != 0 {
		t.Errorf("revoked keys before the revocation: %+v", active.Keys)
	}

	// Identifiers.
	beforeID := pause()
	var id wire.Identifier
	f.json("POST", "/v1/workspaces/acme/identifiers", f.writer, map[string]any{"kind": "segment", "name": "Summer buyers"}, 201, &id)
	registered := pause()
	f.json("PATCH", "/v1/workspaces/acme/identifiers/"+id.ID, f.writer, map[string]any{"name": "Winter buyers"}, 200, nil)
	renamed := pause()
	f.json("DELETE", "/v1/workspaces/acme/identifiers/"+id.ID, f.writer, nil, 200, nil)
	f.json("GET", "/v1/workspaces/acme/identifiers/"+id.ID+"?as_of="+url.QueryEscape(rfc(beforeID)), f.writer, nil, 404, nil)
	for _, c := range []struct {
		at           time.Time
		name, search string
		listed       bool
	}{{registered, "Summer buyers", "summer", true}, {renamed, "Winter buyers", "winter", true}, {time.Now(), "Winter buyers", "winter", false}} {
		var got wire.Identifier
		f.json("GET", "/v1/workspaces/acme/identifiers/"+id.ID+"?as_of="+url.QueryEscape(rfc(c.at)), f.writer, nil, 200, &got)
		var list struct{ Identifiers []wire.Identifier }
		f.json("GET", "/v1/workspaces/acme/identifiers?kind=segment&q="+c.search+"&as_of="+url.QueryEscape(rfc(c.at)), f.writer, nil, 200, &list)
		if got.Name != c.name || (len(list.Identifiers) == 1) != c.listed {
			t.Errorf("identifier as of %s: %+v, listed %+v", c.at, got, list.Identifiers)
		}
	}
	// Bad as_of; permissions.
	for _, bad := range []string{"yesterday", "0", "-3", "2026-01-01"} {
		var pb problemBody
		f.json("GET", "/v1/workspaces/acme/keys/"+k.Key.ID+"?as_of="+url.QueryEscape(bad), f.writer, nil, 400, &pb)
		if pb.Field != "as_of" {
			t.Errorf("as_of=%s: field %q", bad, pb.Field)
		}
	}
	var auditor, none wire.KeyWithSecret
	f.json("POST", "/v1/workspaces/acme/keys", f.writer, map[string]any{"name": "auditor", "permissions": []string{"keyreg.audit.read"}}, 201, &auditor)
	f.json("POST", "/v1/workspaces/acme/keys", f.writer, map[string]any{"name": "none", "permissions": []string{"users.track"}}, 201, &none)
	f.json("GET", "/v1/workspaces/acme/keys/"+k.Key.ID+"?as_of="+url.QueryEscape(rfc(created)), auditor.Secret, nil, 200, nil)
	f.json("GET", "/v1/workspaces/acme/keys/"+k.Key.ID+"?as_of="+url.QueryEscape(rfc(created)), none.Secret, nil, 403, nil)
}

func TestAuditExportOverHTTP(t *testing.T) {
	n := startNode(t, "")
	f := newAuditFixture(t, n)
	var pk struct {
		VerifierKey string `json:"verifier_key"`
	}
	n.json("GET", "/v1/audit/pubkey", "", nil, 200, &pk)
	if vk, err := sealer.ReadVerifierKey(n.dataDir); err != nil || vk != pk.VerifierKey {
		t.Fatalf("pubkey endpoint %q, data dir %q (%v)", pk.VerifierKey, vk, err)
	}
	var all auditPage
	f.json("GET", "/v1/workspaces/acme/audit", f.writer, nil, 200, &all)

	st, h, body := f.do("GET", "/v1/workspaces/acme/audit/export", f.writer, nil)
	if st != 200 || h.Get("Content-Type") != "application/x-ndjson" || !strings.Contains(h.Get("Content-Disposition"), "keyreg-audit-acme-") {
		t.Fatalf("export: %d %v %s", st, h, body)
	}
	sum, err := replay.VerifyExport(bytes.NewReader(body), replay.VerifyOptions{Keys: []string{pk.VerifierKey}})
	if err != nil || sum.Events != len(all.Events) || !sum.Complete || sum.Workspace != "acme" {
		t.Fatalf("verify the export: %+v, %v", sum, err)
	}
	// The export sealed a checkpoint covering it: the node's latest.
	cp, _ := n.Store().SealedCheckpoint(context.Background())
	if cp.TreeSize != sum.TreeSize || cp.TreeSize < all.Events[len(all.Events)-1].Sequence {
		t.Fatalf("checkpoint %d, export's %d", cp.TreeSize, sum.TreeSize)
	}
	// Any valid key reads it (a workspace's reviewer, not only an admin); no key: 401.
	var served struct {
		TreeSize uint64 `json:"tree_size"`
		RootHash string `json:"root_hash"`
		Sequence uint64 `json:"sequence"`
		Note     string `json:"note"`
	}
	f.json("GET", "/v1/audit/checkpoint", f.writer, nil, 200, &served)
	if served.TreeSize != cp.TreeSize || served.RootHash != cp.RootHash || served.Sequence != cp.Version || served.Note != cp.Note {
		t.Fatalf("GET /v1/audit/checkpoint: %+v, the views hold %+v", served, cp)
	}
	f.json("GET", "/v1/audit/checkpoint", "", nil, 401, nil)

	st, h, body = f.do("GET", "/v1/workspaces/acme/audit/export?format=csv&key="+f.k1.Key.ID, f.writer, nil)
	rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if st != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/csv") || err != nil || len(rows) != 5 {
		t.Fatalf("csv export: %d %v %d rows %v\n%s", st, h, len(rows), err, body)
	}
	if rows[2][4] != "allowlist_updated" || rows[2][5] != `{"allowlist":["10.0.0.0/8"]}` || rows[2][6] != `{"allowlist":["192.0.2.0/24"]}` ||
		rows[2][9] != "office moved" || rows[2][3] != "key/"+f.k1.Key.ID || rows[4][4] != "revoked" || rows[4][1] != f.ops.Key.ID {
		t.Fatalf("csv rows: %q", rows)
	}
	st, _, body = f.do("GET", "/v1/workspaces/acme/audit/export?type=revoked", f.writer, nil)
	if _, err := replay.VerifyExport(bytes.NewReader(body), replay.VerifyOptions{Keys: []string{pk.VerifierKey}, AllowGaps: true}); st != 200 || err != nil {
		t.Fatalf("filtered export: %d %v", st, err)
	}
	for _, c := range []struct {
		query string
		want  int
	}{{"?format=xml", 400}, {"?type=nope", 400}, {"?since=x", 400}} {
		if st, _, b := f.do("GET", "/v1/workspaces/acme/audit/export"+c.query, f.writer, nil); st != c.want {
			t.Errorf("export%s: %d %s", c.query, st, b)
		}
	}
	f.json("GET", "/v1/workspaces/acme/audit/export", f.ops.Secret, nil, 403, nil)
}

// TestPeriodicCheckpointsOnlyGrow: a node sealing by itself appends checkpoints whose
// signed notes verify, and a later one provably extends an earlier one.
func TestPeriodicCheckpointsOnlyGrow(t *testing.T) {
	n := startNode(t, "", withSealer(4, 100*time.Millisecond))
	f := newFixture(t, n, "acme")
	vkey, err := sealer.ReadVerifierKey(n.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := note.NewVerifier(vkey)
	ctx := context.Background()
	waitCheckpoint := func(atLeast uint64) events.CheckpointState {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if cp, _ := n.Store().SealedCheckpoint(ctx); cp.TreeSize >= atLeast {
				return cp
			}
		}
		t.Fatalf("no checkpoint of %d leaves after 10s", atLeast)
		return events.CheckpointState{}
	}
	open := func(cp events.CheckpointState) (int64, tlog.Hash) {
		t.Helper()
		msg, err := note.Open([]byte(cp.Note), note.VerifierList(v))
		if err != nil {
			t.Fatal(err)
		}
		size, root, err := events.ParseCheckpoint([]byte(msg.Text))
		if err != nil || size != cp.TreeSize {
			t.Fatalf("checkpoint note %q: %v", msg.Text, err)
		}
		return int64(size), root
	}
	f.createKey(map[string]any{"name": "a"})
	first := waitCheckpoint(n.lastSeq())
	for i := range 6 {
		f.createKey(map[string]any{"name": fmt.Sprint("b", i)})
	}
	second := waitCheckpoint(first.Version + 1)
	n1, r1 := open(first)
	n2, r2 := open(second)
	p, err := n.Store().ProveTree(n2, n1)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckTree(p, n2, r2, n1, r1); err != nil {
		t.Fatalf("checkpoint %d does not extend %d: %v", n2, n1, err)
	}
	// With nothing new, nothing more is sealed: once a round of the sealer found every
	// event covered, its next rounds (three polls, longer than the interval) append nothing.
	s := n.Sealer()
	waitRounds := func(what string, cond func(rounds uint64, r sealer.Round) bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if cond(s.Rounds()) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	var last, covered uint64
	waitRounds("a round finding every event covered", func(rounds uint64, r sealer.Round) bool {
		last, covered = n.lastSeq(), rounds
		return !r.Due && r.Uncovered == 0 && r.Applied == last
	})
	waitRounds("three more rounds", func(rounds uint64, _ sealer.Round) bool { return rounds >= covered+3 })
	if _, r := s.Rounds(); n.lastSeq() != last || r.Due {
		t.Fatalf("the sealer appended with no new event: %d -> %d (last round %+v)", last, n.lastSeq(), r)
	}
}

// TestAsOfTimeFromHistory reads a key as of the time of each event its history shows: the
// answer is the key right after that change (a reviewer copies times from histories), and
// a nanosecond earlier it is the key right before it. The log stores an event a little
// after its time, so a cut by stored time alone would miss the change at its own time.
func TestAsOfTimeFromHistory(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	k := f.createKey(map[string]any{"name": "watched", "allowlist": []string{"10.0.0.0/8"}})
	for _, allow := range []string{"192.0.2.0/24", "198.51.100.0/24"} {
		f.json("PUT", "/v1/workspaces/acme/keys/"+k.Key.ID+"/allowlist", f.writer, map[string]any{"allowlist": []string{allow}}, 200, nil)
	}
	var hist struct {
		Events []struct {
			Sequence uint64
			Event    struct{ Time time.Time }
		}
	}
	f.json("GET", "/v1/workspaces/acme/keys/"+k.Key.ID+"/history", f.writer, nil, 200, &hist)
	if len(hist.Events) != 3 {
		t.Fatalf("history has %d events, want 3", len(hist.Events))
	}
	for i, e := range hist.Events {
		at := url.QueryEscape(e.Event.Time.Format(time.RFC3339Nano))
		var got wire.Key
		f.json("GET", "/v1/workspaces/acme/keys/"+k.Key.ID+"?as_of="+at, f.writer, nil, 200, &got)
		if got.Version != e.Sequence {
			t.Errorf("as_of the time of event %d (%s): version %d, want %d", i, e.Event.Time.Format(time.RFC3339Nano), got.Version, e.Sequence)
		}
		var list struct{ Keys []wire.Key }
		f.json("GET", "/v1/workspaces/acme/keys?as_of="+at, f.writer, nil, 200, &list)
		if !slices.ContainsFunc(list.Keys, func(l wire.Key) bool { return l.ID == k.Key.ID && l.Version == e.Sequence }) {
			t.Errorf("list as_of the time of event %d: %+v, want the key at version %d", i, list.Keys, e.Sequence)
		}
		before := url.QueryEscape(e.Event.Time.Add(-time.Nanosecond).Format(time.RFC3339Nano))
		if i == 0 {
			f.json("GET", "/v1/workspaces/acme/keys/"+k.Key.ID+"?as_of="+before, f.writer, nil, 404, nil)
			continue
		}
		f.json("GET", "/v1/workspaces/acme/keys/"+k.Key.ID+"?as_of="+before, f.writer, nil, 200, &got)
		if got.Version != hist.Events[i-1].Sequence {
			t.Errorf("as_of just before event %d: version %d, want %d", i, got.Version, hist.Events[i-1].Sequence)
		}
	}
}
