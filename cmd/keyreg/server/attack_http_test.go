package server_test

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// These tests attack the real binary over HTTP, as an outsider would (issue 10).

// binNode is a `keyreg serve` process of the real binary.
type binNode struct {
	*node  // url, root, stderr (its output) and the request helpers; no in-process Node
	pid    int
	addr   string       // the HTTP listener's host:port
	client *http.Client // trusts the certificate of a TLS node
}

// binOptions changes how startBinaryWith runs `keyreg serve`.
type binOptions struct {
	data string         // the data dir; a fresh one when ""
	root string         // the root secret, when data was initialised before
	args []string       // more flags for serve; later ones win over the defaults
	tls  *x509.CertPool // trusts the --tls-cert given in args: the node speaks HTTPS
}

// startBinary runs `keyreg serve` on a fresh data dir and waits until it is ready. The
// process is stopped at the end of the test.
func startBinary(t *testing.T) *binNode { return startBinaryWith(t, binOptions{}) }

// startBinaryWith runs `keyreg serve` as o says (nodetest.StartBinaryWith) and waits
// until it is ready. The process is stopped at the end of the test.
func startBinaryWith(t *testing.T, o binOptions) *binNode {
	t.Helper()
	h := nodetest.StartBinaryWith(t, nodetest.BinaryOptions{DataDir: o.data, Root: o.root, Args: o.args, TLS: o.tls})
	return &binNode{node: wrap(h), pid: h.Pid, addr: h.Addr, client: h.HTTP}
}

// rssKB reads the process's resident set size from /proc.
func (b *binNode) rssKB() int {
	b.t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", b.pid))
	if err != nil {
		b.t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err != nil {
				b.t.Fatal(err)
			}
			return kb
		}
	}
	b.t.Fatal("no VmRSS in /proc status")
	return 0
}

// noPanic fails the test if the server logged a panic.
func (b *binNode) noPanic() {
	b.t.Helper()
	if out := b.stderr.String(); strings.Contains(out, "panic") {
		i := strings.Index(out, "panic")
		b.t.Fatalf("the server logged a panic: %s", out[i:min(len(out), i+600)])
	}
}

// Finding 1: a 429 answer to a request with an Idempotency-Key used to leave its key in
// the eviction queue without an entry; from then on every new idempotent write panicked.
func TestAttackIdempotencyAfter429(t *testing.T) {
	b := startBinary(t)
	f := newFixture(t, b.node, "acme")
	junk := map[string]any{"key": "kr_junk", "ip": "10.0.0.1"}
	limited := false
	for range 200 { // the failure limiter allows a burst of 20
		st, _, _ := b.do("POST", "/v1/verify", b.root, junk)
		if st == http.StatusTooManyRequests {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("200 failed verifies were never answered 429: the test cannot drive the sequence it claims")
	}
	if st, _, body := b.do("POST", "/v1/verify", b.root, junk, "Idempotency-Key", "a1"); st != http.StatusTooManyRequests {
		t.Fatalf("verify with Idempotency-Key while limited: %d %s", st, body)
	}
	for i := range 30 {
		st, _, body := b.do("POST", "/v1/workspaces/acme/identifiers", f.writer,
			map[string]any{"kind": "segment", "name": fmt.Sprintf("s%d", i)}, "Idempotency-Key", fmt.Sprintf("w%d", i))
		if st != http.StatusCreated {
			t.Fatalf("idempotent write %d after a 429: status %d %q", i, st, body)
		}
	}
	b.noPanic()
}

// Finding 2: a bad ip used to be echoed whole in the problem and cached for an hour.
func TestAttackVerifyHugeIPMemory(t *testing.T) {
	b := startBinary(t)
	ip := strings.Repeat("9", 1_000_000)
	body, _ := json.Marshal(map[string]any{"key": "kr_x", "ip": ip})
	before := b.rssKB()
	for i := range 300 {
		st, _, resp := b.do("POST", "/v1/verify", b.root, body, "Idempotency-Key", fmt.Sprintf("m%d", i))
		if st != http.StatusBadRequest {
			t.Fatalf("request %d: status %d %.200s", i, st, resp)
		}
		if len(resp) > 2048 {
			t.Fatalf("request %d: a %d-byte problem for a bad ip; it echoes the value", i, len(resp))
		}
	}
	after := b.rssKB()
	t.Logf("VmRSS %d kB before, %d kB after 300 verifies with a 1 MB ip: +%d kB", before, after, after-before)
	if after-before > 50*1024 {
		t.Fatalf("RSS grew by %d kB over 300 bad requests, want < 50 MB", after-before)
	}
}

// Finding 3: cached answers were replayed before authentication.
func TestAttackIdempotentReplayAfterRevoke(t *testing.T) {
	b := startBinary(t)
	f := newFixture(t, b.node, "acme")
	var writer wire.KeyWithSecret
	b.json("POST", "/v1/workspaces/acme/keys", b.root, map[string]any{"name": "w", "permissions": allWorkspacePerms}, 201, &writer)
	req := map[string]any{"name": "child"}
	var child wire.KeyWithSecret
	b.json("POST", "/v1/workspaces/acme/keys", writer.Secret, req, 201, &child, "Idempotency-Key", "c1")
	if child.Secret == "" {
		t.Fatal("no secret in the first answer")
	}
	// A verify with an Idempotency-Key, then the verified key is revoked.
	verify := map[string]any{"key": child.Secret, "ip": "10.0.0.1"}
	var v wire.VerifyResponse
	b.json("POST", "/v1/verify", b.root, verify, 200, &v, "Idempotency-Key", "v1")
	if v.Code != "VALID" {
		t.Fatalf("verify before revocation: %s", v.Code)
	}
	b.json("DELETE", "/v1/workspaces/acme/keys/"+child.Key.ID, f.writer, nil, 200, nil)
	b.json("POST", "/v1/verify", b.root, verify, 200, &v, "Idempotency-Key", "v1")
	if v.Code != "REVOKED" {
		t.Fatalf("verify after revocation, same Idempotency-Key: %s, want REVOKED", v.Code)
	}
	// The writer is revoked: its retry is refused, and the secret is not replayed.
	b.json("DELETE", "/v1/workspaces/acme/keys/"+writer.Key.ID, f.writer, nil, 200, nil)
	st, h, body := b.do("POST", "/v1/workspaces/acme/keys", writer.Secret, req, "Idempotency-Key", "c1")
	if st != http.StatusUnauthorized || strings.Contains(string(body), child.Secret) || h.Get("Idempotent-Replayed") != "" {
		t.Fatalf("a revoked key's retry: %d %s", st, body)
	}
}

// Finding 3: a retry from outside the key's allowlist is refused, not replayed.
func TestAttackIdempotentReplayOutsideAllowlist(t *testing.T) {
	b := startBinary(t)
	newFixture(t, b.node, "acme")
	var writer wire.KeyWithSecret
	b.json("POST", "/v1/workspaces/acme/keys", b.root, map[string]any{"name": "w", "permissions": allWorkspacePerms,
		"allowlist": []string{"127.0.0.1/32"}}, 201, &writer)
	req := map[string]any{"name": "child"}
	var child wire.KeyWithSecret
	b.json("POST", "/v1/workspaces/acme/keys", writer.Secret, req, 201, &child, "Idempotency-Key", "c1")

	// The same request from 127.0.0.2, outside the allowlist.
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 10 * time.Second}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: dialer.DialContext}}
	r, _ := http.NewRequestWithContext(context.Background(), "POST", b.url+"/v1/workspaces/acme/keys", strings.NewReader(`{"name":"child"}`))
	r.Header.Set("Authorization", "Bearer "+writer.Secret)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Idempotency-Key", "c1")
	resp, err := client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "ip_not_allowed") || strings.Contains(string(body), child.Secret) {
		t.Fatalf("a retry from outside the allowlist: %d %s", resp.StatusCode, body)
	}
}

// Finding 6: null for a list and duplicate keys are refused, and change nothing.
func TestAttackStrictJSON(t *testing.T) {
	b := startBinary(t)
	f := newFixture(t, b.node, "acme")
	k := f.createKey(map[string]any{"name": "k", "allowlist": []string{"10.0.0.0/8"}})
	keys := "/v1/workspaces/acme/keys"
	for _, c := range []struct{ name, method, path, body, field string }{
		{"PutNull", "PUT", keys + "/" + k.Key.ID + "/allowlist", `{"allowlist":null}`, "allowlist"},
		{"PutDuplicate", "PUT", keys + "/" + k.Key.ID + "/allowlist", `{"allowlist":["1.1.1.1"],"allowlist":[]}`, "allowlist"},
		{"CreateNull", "POST", keys, `{"name":"x","allowlist":null}`, "allowlist"},
		{"CreateNullPermissions", "POST", keys, `{"name":"x","permissions":null}`, "permissions"},
		{"CreateDuplicateName", "POST", keys, `{"name":"x","name":"y"}`, "name"},
		{"PatchNullPermissions", "PATCH", keys + "/" + k.Key.ID, `{"permissions":null}`, "permissions"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, _, body := b.do(c.method, c.path, f.writer, c.body)
			var p problemBody
			json.Unmarshal(body, &p)
			if st != http.StatusBadRequest || p.Field != c.field {
				t.Fatalf("status %d field %q, want 400 %q: %s", st, p.Field, c.field, body)
			}
		})
	}
	var got wire.Key
	b.json("GET", keys+"/"+k.Key.ID, f.writer, nil, 200, &got)
	if got.Version != k.Key.Version || len(got.Allowlist) != 1 || got.Allowlist[0] != "10.0.0.0/8" {
		t.Fatalf("the key changed: %+v", got)
	}
	var list struct{ Keys []wire.Key }
	b.json("GET", keys, f.writer, nil, 200, &list)
	if len(list.Keys) != 2 {
		t.Fatalf("%d keys after refused creates, want 2", len(list.Keys))
	}
}

// Finding 9: invented methods add no metric series.
func TestAttackMetricMethods(t *testing.T) {
	b := startBinary(t)
	metrics := func() string {
		_, _, body := b.do("GET", "/metrics", "", nil)
		return string(body)
	}
	// The series of every answer below exist before: a 404, a 405 and an invented method.
	b.do("GET", "/v1/nothing", "", nil)
	b.do("PUT", "/v1/workspaces", "", nil)
	b.do("INVENTED", "/v1/workspaces", "", nil)
	metrics()
	before := strings.Count(metrics(), "\n")
	for i := range 300 {
		b.do(fmt.Sprintf("INVENTED%d", i), "/v1/workspaces", "", nil)
	}
	for i := range 20 {
		b.do(strings.Repeat("X", 50_000)+strconv.Itoa(i), "/v1/workspaces", "", nil)
	}
	m := metrics()
	after := strings.Count(m, "\n")
	t.Logf("/metrics: %d lines before, %d after 320 invented methods; %d bytes", before, after, len(m))
	if strings.Contains(m, "INVENTED") || strings.Contains(m, "XXXX") {
		t.Fatal("/metrics holds an invented method as a label value")
	}
	if after-before > 10 {
		t.Fatalf("/metrics grew by %d lines", after-before)
	}
}

// Finding 12: path ids are parsed before use; a wildcard is no id.
func TestAttackPathIDs(t *testing.T) {
	b := startBinary(t)
	f := newFixture(t, b.node, "acme")
	f.createKey(map[string]any{"name": "a"})
	for _, c := range []struct{ name, path, field, value string }{
		{"KeyWildcardAsOf", "/v1/workspaces/acme/keys/*?as_of=99", "key_id", "*"},
		{"KeyGreaterAsOf", "/v1/workspaces/acme/keys/%3E?as_of=99", "key_id", ">"},
		{"KeyWildcard", "/v1/workspaces/acme/keys/*", "key_id", "*"},
		{"KeyHistoryWildcard", "/v1/workspaces/acme/keys/*/history", "key_id", "*"},
		{"IdentifierWildcardAsOf", "/v1/workspaces/acme/identifiers/*?as_of=99", "identifier_id", "*"},
		{"WorkspaceWildcardAsOf", "/v1/workspaces/*/keys?as_of=99", "workspace", "*"},
		{"WorkspaceWildcardAudit", "/v1/workspaces/*/audit", "workspace", "*"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, _, body := b.do("GET", c.path, b.root, nil)
			var p problemBody
			json.Unmarshal(body, &p)
			if st != http.StatusBadRequest || p.Field != c.field || p.Value != c.value {
				t.Fatalf("status %d field %q value %q, want 400 %q %q: %s", st, p.Field, p.Value, c.field, c.value, body)
			}
		})
	}
}

// Finding 3: a kept answer is not replayed to a key that has since lost the permission
// the request needs: its retry is authorized anew (403), and the created key's secret is
// not shown again.
func TestAttackIdempotentReplayAfterPermissionLoss(t *testing.T) {
	b := startBinary(t)
	newFixture(t, b.node, "acme")
	var writer wire.KeyWithSecret
	b.json("POST", "/v1/workspaces/acme/keys", b.root, map[string]any{"name": "w", "permissions": []string{"keyreg.keys.write", "keyreg.keys.read"}}, 201, &writer)
	req := map[string]any{"name": "child"}
	var child wire.KeyWithSecret
	b.json("POST", "/v1/workspaces/acme/keys", writer.Secret, req, 201, &child, "Idempotency-Key", "c1")
	var again wire.KeyWithSecret
	h := b.json("POST", "/v1/workspaces/acme/keys", writer.Secret, req, 201, &again, "Idempotency-Key", "c1")
	if h.Get("Idempotent-Replayed") != "true" || again.Secret != child.Secret {
		t.Fatalf("a retry while the key may write is not the kept answer: %s %+v", h.Get("Idempotent-Replayed"), again)
	}
	b.json("PATCH", "/v1/workspaces/acme/keys/"+writer.Key.ID, b.root, map[string]any{"permissions": []string{"keyreg.keys.read"}}, 200, nil)
	keys := func() int {
		var list struct{ Keys []wire.Key }
		b.json("GET", "/v1/workspaces/acme/keys", b.root, nil, 200, &list)
		return len(list.Keys)
	}
	before := keys()
	st, h, body := b.do("POST", "/v1/workspaces/acme/keys", writer.Secret, req, "Idempotency-Key", "c1")
	if st != http.StatusForbidden || strings.Contains(string(body), child.Secret) || h.Get("Idempotent-Replayed") != "" {
		t.Fatalf("a retry after the key lost keyreg.keys.write: %d %s", st, body)
	}
	if got := keys(); got != before {
		t.Fatalf("the refused retry created a key: %d keys, were %d", got, before)
	}
}
