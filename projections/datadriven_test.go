package projections

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keyreg/keyreg/events"
)

// TestScripts runs the scripts under testdata/. Directives:
//
//	event ws=<ws> type=<aggregate>.<name> [id=<id>] [actor=<id>] [at=<RFC 3339>] [apply=false]
//	<payload JSON; {{hash NAME}} is the hash of testSecret(NAME)>
//	    Appends an event (the id of a workspace event is its workspace; that of a name
//	    event is NameClaimID of the payload's kind and name) and applies it.
//	    Without at=, an event is one minute after the previous one (the first at t0).
//	apply [each]            applies the records not applied yet, in one batch or one by one
//	apply-seqs seqs=(a,b,…) applies just these records of the log
//	reopen                  closes and reopens the store
//	views [prefix=<p>]      every key (and value) of the DB
//	workspaces | workspace ws= | key ws= id= | keys ws= [status=] [at=]
//	identifier ws= id= | identifiers ws= [kind=] [prefix=] | claim ws= kind= name=
//	history ws= agg= id= [after=] [limit=] | wshistory ws= [after=] [limit=]
//	verify secret=<NAME, typo:NAME or literal> [ip=] [perm=] at=
//
// 64-hex-digit hashes print as <NAME> for test secrets and as their first 8 digits
// otherwise.
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		h := &harness{fs: vfs.NewMem(), log: events.NewMemLog(), secrets: map[string]string{}}
		h.w = newWriter(h.log)
		h.open(t)
		defer func() { h.s.Close() }()
		datadriven.RunTest(t, path, h.run)
	})
}

type harness struct {
	fs      vfs.FS
	s       *Store
	log     *events.MemLog
	w       *writer
	secrets map[string]string // hash -> name
}

func (h *harness) open(t *testing.T) {
	t.Helper()
	s, err := Open("db", Options{FS: h.fs})
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
}

var placeholderRE = regexp.MustCompile(`\{\{hash (\w+)\}\}`)

func (h *harness) hash(name string) string {
	hash := events.HashSecret(testSecret(name))
	h.secrets[hash] = name
	return hash
}

func (h *harness) run(t *testing.T, d *datadriven.TestData) string {
	ctx := context.Background()
	arg := func(key string) string {
		var v string
		d.MaybeScanArgs(t, key, &v)
		return v
	}
	num := func(key string) uint64 {
		var v uint64
		d.MaybeScanArgs(t, key, &v)
		return v
	}
	ws := events.Workspace(arg("ws"))
	switch d.Cmd {
	case "event":
		typ := events.Type("keyreg." + arg("type") + ".v1")
		agg, ok := aggregateOf(typ)
		if !ok {
			d.Fatalf(t, "unknown type %s", typ)
		}
		data := placeholderRE.ReplaceAllStringFunc(d.Input, func(m string) string {
			return h.hash(placeholderRE.FindStringSubmatch(m)[1])
		})
		var buf bytes.Buffer
		if err := json.Compact(&buf, []byte(data)); err != nil {
			d.Fatalf(t, "payload: %v", err)
		}
		id := arg("id")
		switch {
		case agg == events.AggWorkspace && id == "":
			id = string(ws)
		case agg == events.AggName && id == "":
			var c events.NameClaimed
			if err := json.Unmarshal(buf.Bytes(), &c); err != nil {
				d.Fatalf(t, "payload: %v", err)
			}
			id = events.NameClaimID(c.Kind, events.FoldName(c.Name))
		}
		var at time.Time
		if s := arg("at"); s != "" {
			at = mustTime(t, d, s)
		}
		seqs, err := h.w.append(ctx, event{ws: ws, agg: agg, id: id, typ: typ, data: buf.Bytes(), actor: arg("actor"), at: at})
		if err != nil {
			return "error: " + err.Error()
		}
		out := fmt.Sprintf("seq %d", seqs[0])
		if arg("apply") != "false" {
			if err := h.s.Apply(allRecords(t, h.log)[h.s.Checkpoint():]); err != nil {
				return out + "\nerror: " + err.Error()
			}
		}
		return out

	case "apply":
		recs := allRecords(t, h.log)
		if d.HasArg("each") {
			for _, r := range recs {
				if err := h.s.Apply([]events.Record{r}); err != nil {
					return "error: " + err.Error()
				}
			}
		} else if err := h.s.Apply(recs); err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("checkpoint %d", h.s.Checkpoint())

	case "apply-seqs":
		arg, _ := d.Arg("seqs")
		var recs []events.Record
		for _, v := range arg.Vals {
			seq, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				d.Fatalf(t, "seqs: %v", err)
			}
			r, err := h.log.Get(ctx, seq)
			if err != nil {
				d.Fatalf(t, "%v", err)
			}
			recs = append(recs, r)
		}
		if err := h.s.Apply(recs); err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("checkpoint %d", h.s.Checkpoint())

	case "reopen":
		if err := h.s.Close(); err != nil {
			return "error: " + err.Error()
		}
		h.open(t)
		return fmt.Sprintf("checkpoint %d", h.s.Checkpoint())

	case "views":
		var b strings.Builder
		p := []byte(arg("prefix"))
		err := h.s.Each(func(k, v []byte) error {
			if !bytes.HasPrefix(k, p) {
				return nil
			}
			b.WriteString(h.readable(strings.ReplaceAll(string(k), "\x00", `\x00`)))
			if len(v) > 0 {
				b.WriteString(" -> ")
				// States and history entries as JSON, hashes in hex (ReadableValue).
				b.WriteString(h.readable(ReadableValue(k, v)))
			}
			b.WriteString("\n")
			return nil
		})
		if err != nil {
			return "error: " + err.Error()
		}
		return b.String()

	case "workspaces":
		l, err := h.s.Workspaces("", 0)
		return h.result(l, err)
	case "workspace":
		st, err := h.s.Workspace(ctx, ws)
		return h.result(st, err)
	case "key":
		st, err := h.s.Key(ctx, ws, arg("id"))
		return h.result(st, err)
	case "keys":
		f := KeyFilter{Status: arg("status"), After: arg("after")}
		if s := arg("limit"); s != "" {
			f.Limit, _ = strconv.Atoi(s)
		}
		if s := arg("at"); s != "" {
			f.At = mustTime(t, d, s)
		}
		l, err := h.s.Keys(ws, f)
		if err != nil {
			return "error: " + err.Error()
		}
		var b strings.Builder
		for _, k := range l {
			status := k.Status
			if !f.At.IsZero() {
				status = k.StatusAt(f.At)
			}
			fmt.Fprintf(&b, "%s %q %s v%d", k.ID, k.Name, status, k.Version)
			if k.ExpiresAt != nil {
				fmt.Fprintf(&b, " expires=%s", k.ExpiresAt.Format(time.RFC3339))
			}
			b.WriteString("\n")
		}
		return b.String()
	case "identifier":
		st, err := h.s.Identifier(ctx, ws, arg("id"))
		return h.result(st, err)
	case "identifiers":
		f := IdentifierFilter{Kind: events.Kind(arg("kind")), NamePrefix: arg("prefix")}
		if s := arg("limit"); s != "" {
			f.Limit, _ = strconv.Atoi(s)
		}
		if id := arg("after"); id != "" { // the page after identifier id
			st, err := h.s.Identifier(ctx, ws, id)
			if err != nil {
				return "error: " + err.Error()
			}
			f.After = IdentifierCursor(st)
		}
		l, err := h.s.Identifiers(ws, f)
		if err != nil {
			return "error: " + err.Error()
		}
		var b strings.Builder
		for _, s := range l {
			fmt.Fprintf(&b, "%s %s %q %s v%d\n", s.ID, s.Kind, s.Name, s.Status, s.Version)
		}
		return b.String()
	case "claim":
		st, err := h.s.NameClaim(ctx, ws, events.NameClaimID(events.Kind(arg("kind")), events.FoldName(arg("name"))))
		return h.result(st, err)
	case "history", "wshistory":
		var l []HistoryEntry
		var err error
		if d.Cmd == "history" {
			l, err = h.s.History(ws, events.Aggregate(arg("agg")), arg("id"), num("after"), int(num("limit")))
		} else {
			l, err = h.s.WorkspaceHistory(ws, num("after"), int(num("limit")))
		}
		if err != nil {
			return "error: " + err.Error()
		}
		var b strings.Builder
		for _, e := range l {
			fmt.Fprintf(&b, "%d %s %s/%s actor=%s %s\n", e.Seq, e.Type, e.Aggregate, e.ID, e.Actor, e.Time.Format(time.RFC3339))
		}
		return b.String()

	case "verify":
		secret := arg("secret")
		if name, ok := strings.CutPrefix(secret, "typo:"); ok {
			// One character changed: the checksum no longer matches.
			b := []byte(testSecret(name))
			b[10] = map[bool]byte{true: 'B', false: 'A'}[b[10] == 'A']
			secret = string(b)
		} else if !strings.HasPrefix(secret, events.SecretPrefix) {
			secret = testSecret(secret)
		}
		var ip netip.Addr
		if s := arg("ip"); s != "" {
			ip = netip.MustParseAddr(s)
		}
		r := h.s.Verify(secret, ip, events.Permission(arg("perm")), mustTime(t, d, arg("at")))
		out := fmt.Sprintf("%s valid=%t", r.Code, r.Valid)
		if r.KeyID != "" {
			out += fmt.Sprintf(" key=%s/%s", r.Workspace, r.KeyID)
		}
		if r.Permissions != nil {
			out += fmt.Sprintf(" permissions=%v", r.Permissions)
		}
		return out
	}
	d.Fatalf(t, "unknown directive %s", d.Cmd)
	return ""
}

// result prints v as indented JSON, or the error with whether it is events.ErrNotFound.
func (h *harness) result(v any, err error) string {
	if err != nil {
		return fmt.Sprintf("error: %v (ErrNotFound=%t)", err, errors.Is(err, events.ErrNotFound))
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "error: " + err.Error()
	}
	return h.readable(string(b))
}

var hashRE = regexp.MustCompile(`[0-9a-f]{64}`)

func (h *harness) readable(s string) string {
	return hashRE.ReplaceAllStringFunc(s, func(m string) string {
		if name, ok := h.secrets[m]; ok {
			return "<" + name + ">"
		}
		return m[:8]
	})
}

func aggregateOf(t events.Type) (events.Aggregate, bool) {
	for _, x := range events.Types {
		if x.Type == t {
			return x.Aggregate, true
		}
	}
	return "", false
}

func mustTime(t *testing.T, d *datadriven.TestData, s string) time.Time {
	at, err := time.Parse(time.RFC3339, s)
	if err != nil {
		d.Fatalf(t, "time %q: %v", s, err)
	}
	return at
}
