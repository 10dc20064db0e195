package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// TestSIGTERMDrains holds "It stops cleanly on SIGINT or SIGTERM: HTTP requests
// drained", on the real binary: a request in flight when SIGTERM arrives gets its answer
// (the change made and applied), new connections are refused meanwhile, and the process
// exits 0.
func TestSIGTERMDrains(t *testing.T) {
	b := startBinary(t)
	body := `{"id":"drained","name":"Drained"}`
	c, err := net.DialTimeout("tcp", b.addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/workspaces HTTP/1.1\r\nHost: keyreg\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		b.root, len(body), body[:10])
	b.json("GET", "/healthz", "", nil, 200, nil) // a round trip after the slow request's first bytes

	if err := syscall.Kill(b.pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		d, err := net.DialTimeout("tcp", b.addr, time.Second)
		if err != nil {
			break // refused: the listener is closed
		}
		d.Close()
		if time.Now().After(deadline) {
			t.Fatal("new connections are still accepted 30 s after SIGTERM")
		}
	}
	if _, err := io.WriteString(c, body[10:]); err != nil {
		t.Fatalf("the request in flight was cut at SIGTERM: %v\n%s", err, b.stderr.String())
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the request in flight got no answer: %v\n%s", err, b.stderr.String())
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || !strings.Contains(string(answer), `"drained"`) {
		t.Fatalf("the request in flight at SIGTERM: %d %s", resp.StatusCode, answer)
	}
	if err := b.h.Stop(); err != nil {
		t.Fatalf("keyreg serve after SIGTERM: %v\n%s", err, b.stderr.String())
	}
	if !strings.Contains(b.stderr.String(), "keyreg shutting down") {
		t.Fatalf("no clean shutdown logged: %s", b.stderr.String())
	}
}

// TestNothingLogsTheSecret holds "The plaintext exists only in the response that creates
// or rotates a key: the stream and the views hold its SHA-256, and nothing logs it". It
// captures everything the real binary prints (stdout and stderr, at debug level) over a
// whole scenario (create, idempotent replay, rotate, verifies good and bad, refused
// requests that carry secrets, an audit export, an online rebuild, a restart, offline
// replay) and finds no secret it issued, except the root secret once in the first start's
// banner; no file of the data dir holds one either.
func TestNothingLogsTheSecret(t *testing.T) {
	data := t.TempDir()
	b := startBinaryWith(t, binOptions{data: data, args: []string{"--log-level", "debug", "--nats-listen", "127.0.0.1:0"}})
	f := newFixture(t, b.node, "acme")
	keys := "/v1/workspaces/acme/keys"
	issued := []string{f.writer}
	create := func(body map[string]any, headers ...string) wire.KeyWithSecret {
		t.Helper()
		var k wire.KeyWithSecret
		f.json("POST", keys, f.writer, body, 201, &k, headers...)
		issued = append(issued, k.Secret)
		return k
	}
	a := create(map[string]any{"name": "a", "permissions": []string{"users.track"}, "allowlist": []string{"10.0.0.0/8"}})
	revoked := create(map[string]any{"name": "b"})
	create(map[string]any{"name": "c"}, "Idempotency-Key", "logs-1")
	create(map[string]any{"name": "c"}, "Idempotency-Key", "logs-1") // the kept answer
	var rotated wire.KeyWithSecret
	f.json("POST", keys+"/"+a.Key.ID+"/rotate", f.writer, map[string]any{"grace_seconds": 600}, 200, &rotated)
	issued = append(issued, rotated.Secret)
	f.json("DELETE", keys+"/"+revoked.Key.ID, f.writer, nil, 200, nil)

	for _, v := range []struct{ secret, ip, perm, code string }{
		{rotated.Secret, "10.1.1.1", "users.track", "VALID"},
		{a.Secret, "10.1.1.1", "users.track", "VALID"}, // in its grace period
		{rotated.Secret, "192.0.2.1", "", "IP_NOT_ALLOWED"},
		{rotated.Secret, "10.1.1.1", "users.export", "PERMISSION_DENIED"},
		{revoked.Secret, "10.1.1.1", "", "REVOKED"},
		{otherLast(rotated.Secret), "10.1.1.1", "", "MALFORMED"}, // its checksum fails
		{binJunk(1), "10.1.1.1", "", "NOT_FOUND"},
	} {
		if got := f.verify(v.secret, v.ip, v.perm); got.Code != v.code {
			t.Fatalf("verify: %s, want %s", got.Code, v.code)
		}
	}
	// Refused requests that carry secrets: as the bearer token, in the path, in bad bodies.
	for _, r := range []struct {
		method, path, token string
		body                any
		status              int
	}{
		{"GET", keys, revoked.Secret, nil, 401},
		{"GET", keys, rotated.Secret, nil, 403},
		{"GET", keys + "/" + rotated.Secret, f.writer, nil, 0},
		{"POST", "/v1/verify", f.writer, map[string]any{"key": rotated.Secret, "ip": "not-an-ip"}, 400},
		{"POST", "/v1/verify", f.writer, `{"key":"` + rotated.Secret + `","ip":`, 400},
		{"POST", "/v1/verify", f.writer, map[string]any{"key": rotated.Secret, "ip": "10.1.1.1", "extra": rotated.Secret}, 400},
		{"POST", keys, f.writer, map[string]any{"name": rotated.Secret, "permissions": []string{rotated.Secret}}, 400},
	} {
		if st, _, body := f.do(r.method, r.path, r.token, r.body); (r.status != 0 && st != r.status) || st < 400 {
			t.Fatalf("%s %s: %d %s, want %d", r.method, r.path, st, body, r.status)
		}
	}
	// An audit export and an online rebuild, which log.
	if st, _, body := f.do("GET", "/v1/workspaces/acme/audit/export", f.writer, nil); st != 200 {
		t.Fatalf("audit export: %d %s", st, body)
	}
	rebuild(t, b.node)

	if err := b.h.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	first := b.stderr.String()
	again := startBinaryWith(t, binOptions{data: data, root: b.root, args: []string{"--log-level", "debug"}})
	fx := fixture{node: again.node, ws: "acme", writer: f.writer}
	if v := fx.verify(rotated.Secret, "10.1.1.1", ""); v.Code != "VALID" {
		t.Fatalf("verify after the restart: %s", v.Code)
	}
	if err := again.h.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	logs := []string{again.stderr.String()}
	for _, args := range [][]string{{"replay", "--data", data}, {"replay", "--data", data, "--verify"}} {
		code, out := runBinary(t, nil, args...)
		if code != 0 {
			t.Fatalf("keyreg %s: exit %d: %s", strings.Join(args, " "), code, out)
		}
		logs = append(logs, out)
	}

	for _, want := range []string{"keyreg serving", "audit export", "views swapped", "keyreg shutting down"} {
		if !strings.Contains(first, want) {
			t.Fatalf("the server's output lacks %q: the scenario did not log what it should:\n%s", want, first)
		}
	}
	// The root secret: once, in the first start's banner, and nowhere else.
	if c := strings.Count(first, secretBody(b.root)); c != 1 {
		t.Errorf("the first start's output shows the root secret %d times, want once (the banner)", c)
	}
	all := append(issued, b.root)
	for n, out := range append(logs, strings.Replace(first, b.root, "", 1)) {
		for _, s := range all {
			if i := strings.Index(out, secretBody(s)); i >= 0 {
				t.Errorf("output %d shows a secret: ...%s<the secret>", n, out[max(0, i-200):i])
			}
		}
	}
	filepath.WalkDir(data, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		content, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range all {
			if strings.Contains(string(content), secretBody(s)) {
				t.Errorf("%s holds a secret", path)
			}
		}
		return nil
	})
}

// secretBody is the random part of a secret: what a log must not show in any framing.
func secretBody(secret string) string { return strings.TrimPrefix(secret, "kr_")[:43] }

// rebuild runs an online rebuild of n's views and waits (at most a minute) until it is
// done.
func rebuild(t *testing.T, n *node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if st := getJSON(ctx, t, "POST", n.url+"/v1/admin/replay", n.root, nil); st != 202 {
		t.Fatalf("start replay: %d", st)
	}
	var st httpapi.ReplayStatus
	for st.State != "done" {
		if getJSON(ctx, t, "GET", n.url+"/v1/admin/replay", n.root, &st); st.State == "failed" {
			t.Fatalf("replay failed: %s", st.Error)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// otherLast returns secret with its last character changed (to one it is not).
func otherLast(secret string) string {
	last := "x"
	if strings.HasSuffix(secret, last) {
		last = "y"
	}
	return secret[:len(secret)-1] + last
}
