package server_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
)

var secretRE = regexp.MustCompile(`kr_[0-9A-Za-z]+`)

// runBinary runs the real binary to its end (at most a minute) and returns its exit code
// and its stdout and stderr together.
func runBinary(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, keyregBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("keyreg %s did not end within a minute: %s", strings.Join(args, " "), out)
	}
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	return code, string(out)
}

// serveBinary starts `keyreg serve` (the real binary) on data with args (the sealer on)
// and returns its address once it serves; stop ends it with SIGTERM, fails the test unless
// it exits 0, and returns its output.
func serveBinary(t *testing.T, data string, args ...string) (url string, out *syncBuffer, stop func() string) {
	t.Helper()
	h := nodetest.StartBinaryWith(t, nodetest.BinaryOptions{DataDir: data, Args: args, Seal: true})
	return h.URL, h.Output, func() string {
		if err := h.Stop(); err != nil {
			t.Errorf("serve after SIGTERM: %v", err)
		}
		return h.Output.String()
	}
}

func statusOf(t *testing.T, method, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestFirstStartBusyPort: a first start whose HTTP or NATS port is taken exits non-zero
// with a one-line error, without making or printing a root secret, and the next start
// makes the root key. A later start given --bootstrap-key-file says it was ignored.
func TestFirstStartBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	data := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "root.key")
	for _, ports := range [][]string{
		{"--http", busy.Addr().String(), "--nats-listen", ""},
		{"--http", "127.0.0.1:0", "--nats-listen", busy.Addr().String()},
	} {
		args := append([]string{"serve", "--data", data, "--bootstrap-key-file", keyFile}, ports...)
		code, out := runBinary(t, nil, args...)
		if code == 0 {
			t.Fatalf("serve %v on a busy port exited 0: %s", ports, out)
		}
		if secretRE.MatchString(out) {
			t.Fatalf("serve %v on a busy port printed a secret: %s", ports, out)
		}
		if !strings.Contains(out, "in use") || !strings.Contains(out, busy.Addr().String()) {
			t.Fatalf("serve %v on a busy port: the error does not say the port is in use: %s", ports, out)
		}
		if _, err := os.Lstat(keyFile); err == nil {
			t.Fatalf("serve %v on a busy port wrote %s", ports, keyFile)
		}
	}

	url, out, stop := serveBinary(t, data, "--bootstrap-key-file", keyFile)
	printed := secretRE.FindString(out.String())
	if printed == "" {
		t.Fatalf("the start after the busy ports printed no root secret: %s", out.String())
	}
	b, err := os.ReadFile(keyFile)
	if err != nil || strings.TrimSpace(string(b)) != printed {
		t.Fatalf("bootstrap key file: %q, %v; printed %s", b, err, printed)
	}
	if fi, _ := os.Stat(keyFile); fi.Mode().Perm() != 0o600 {
		t.Fatalf("bootstrap key file mode %v, want 0600", fi.Mode().Perm())
	}
	if st := statusOf(t, "GET", url+"/v1/workspaces", printed); st != 200 {
		t.Fatalf("the printed root secret: status %d", st)
	}
	stop()

	other := filepath.Join(t.TempDir(), "again.key")
	_, out2, stop2 := serveBinary(t, data, "--bootstrap-key-file", other)
	text := stop2()
	if secretRE.MatchString(text) {
		t.Fatalf("a later start printed a secret: %s", text)
	}
	if !strings.Contains(text, "--bootstrap-key-file "+other+" ignored") || !strings.Contains(text, "already initialised") {
		t.Fatalf("a later start did not say --bootstrap-key-file was ignored: %s", out2.String())
	}
	if _, err := os.Lstat(other); err == nil {
		t.Fatal("a later start wrote the ignored bootstrap key file")
	}
}

// TestBootstrapKeyFileRefused: a bootstrap key file path that is taken (a file of
// another mode, or a symlink) fails the first start before the root key is made: nothing
// is written through it, no secret is printed, and a later start with a free path makes
// the root key.
func TestBootstrapKeyFileRefused(t *testing.T) {
	data := t.TempDir()
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.key")
	if err := os.WriteFile(existing, []byte("not a secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{existing, link} {
		code, out := runBinary(t, nil, "serve", "--data", data, "--http", "127.0.0.1:0", "--nats-listen", "", "--bootstrap-key-file", path)
		if code == 0 || secretRE.MatchString(out) || !strings.Contains(out, "already there") {
			t.Fatalf("bootstrap key file %s: exit %d: %s", path, code, out)
		}
	}
	if b, _ := os.ReadFile(existing); string(b) != "not a secret\n" {
		t.Fatalf("the existing file was changed: %q", b)
	}
	if fi, _ := os.Stat(existing); fi.Mode().Perm() != 0o644 {
		t.Fatalf("the existing file's mode changed: %v", fi.Mode().Perm())
	}
	if _, err := os.Lstat(target); err == nil {
		t.Fatal("the symlink's target was written")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("files left in the key file's directory: %v", entries)
	}
	free := filepath.Join(dir, "root.key")
	_, out, stop := serveBinary(t, data, "--bootstrap-key-file", free)
	stop()
	if b, err := os.ReadFile(free); err != nil || !secretRE.Match(b) || !strings.Contains(out.String(), strings.TrimSpace(string(b))) {
		t.Fatalf("the start with a free path: file %q (%v): %s", b, err, out.String())
	}
}

// TestRecoverRoot: keyreg admin recover-root refuses while a server runs; on the stopped
// server it revokes the root key and makes a new one, whose secret it prints once; the
// events carry the operator as actor and the reason, and show in the audit log.
func TestRecoverRoot(t *testing.T) {
	data := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "root.key")
	url, _, stop := serveBinary(t, data, "--bootstrap-key-file", keyFile)
	b, _ := os.ReadFile(keyFile)
	oldRoot := strings.TrimSpace(string(b))

	code, out := runBinary(t, nil, "admin", "recover-root", "--data", data)
	if code == 0 || !strings.Contains(out, "stop keyreg serve first") || secretRE.MatchString(out) {
		t.Fatalf("recover-root while the server runs: exit %d: %s", code, out)
	}
	if st := statusOf(t, "GET", url+"/v1/workspaces", oldRoot); st != 200 {
		t.Fatalf("the root key after a refused recover-root: %d", st)
	}
	stop()

	newFile := filepath.Join(t.TempDir(), "new.key")
	code, out = runBinary(t, nil, "admin", "recover-root", "--data", data, "--reason", "root key lost with a laptop, INC-7", "--bootstrap-key-file", newFile)
	if code != 0 {
		t.Fatalf("recover-root: exit %d: %s", code, out)
	}
	secrets := secretRE.FindAllString(out, -1)
	if len(secrets) != 1 || secrets[0] == oldRoot {
		t.Fatalf("recover-root should print one new secret: %s", out)
	}
	newRoot := secrets[0]
	if b, _ := os.ReadFile(newFile); strings.TrimSpace(string(b)) != newRoot {
		t.Fatalf("--bootstrap-key-file holds %q", b)
	}

	url, _, stop = serveBinary(t, data)
	defer stop()
	if st := statusOf(t, "GET", url+"/v1/workspaces", oldRoot); st != 401 {
		t.Fatalf("the old root key after recover-root: status %d, want 401", st)
	}
	if st := statusOf(t, "GET", url+"/v1/workspaces", newRoot); st != 200 {
		t.Fatalf("the new root key: status %d", st)
	}
	code, out = runBinary(t, []string{"KEYREG_ADDR=" + url, "KEYREG_TOKEN=" + newRoot}, "audit", "log", "--workspace", "system", "--json")
	if code != 0 {
		t.Fatalf("audit log: %s", out)
	}
	var hist client.History
	if err := json.Unmarshal([]byte(out), &hist); err != nil {
		t.Fatalf("audit log --json: %v: %s", err, out)
	}
	seen := map[string]bool{}
	for _, e := range hist.Events {
		var ev struct{ Type, Actor, Reason string }
		json.Unmarshal(e.Event, &ev)
		if strings.HasPrefix(ev.Actor, "operator:") && strings.Contains(ev.Actor, "@") && ev.Reason == "root key lost with a laptop, INC-7" {
			seen[ev.Type] = true
		}
	}
	if !seen["keyreg.key.revoked.v1"] || !seen["keyreg.key.created.v1"] {
		t.Fatalf("the audit log lacks recover-root's events with the operator and the reason: %s", out)
	}
}
