package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/server"
)

// harness runs the command line against a real keyreg server started in-process.
type harness struct {
	t   *testing.T
	env map[string]string // KEYREG_ADDR, KEYREG_TOKEN (the root key's secret)
}

// startServer starts a keyreg node in-process (nodetest.Start, the sealer on) on a fresh
// data dir and a free port, waits until its views serve, and stops it at the end of the
// test.
func startServer(t *testing.T) *harness { t.Helper(); return startServerWith(t, nil) }

// startServerWith is startServer with the config changed by opt (if not nil).
func startServerWith(t *testing.T, opt func(*server.Config)) *harness {
	t.Helper()
	return harnessFor(nodetest.Start(t, nodetest.Options{Seal: true, Config: []func(*server.Config){opt}}))
}

// harnessFor runs the command line against n as its root key.
func harnessFor(n *nodetest.Node) *harness {
	return &harness{t: n.T.(*testing.T), env: map[string]string{"KEYREG_ADDR": n.URL, "KEYREG_TOKEN": n.Root}}
}

// result is what one run of the command line did.
type result struct {
	code           int
	stdout, stderr string
}

// run runs keyreg with args and the harness's environment, and an empty stdin.
func (h *harness) run(args ...string) result { return h.runWith(h.env, "", args...) }

// runIn runs keyreg with stdin.
func (h *harness) runIn(stdin string, args ...string) result { return h.runWith(h.env, stdin, args...) }

// runWith runs keyreg with env (nil: empty) and stdin.
func (h *harness) runWith(env map[string]string, stdin string, args ...string) result {
	h.t.Helper()
	var stdout, stderr bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code := Run(context.Background(), args, getenv, strings.NewReader(stdin), &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// ok runs keyreg, fails the test unless it exits 0, and returns its stdout.
func (h *harness) ok(args ...string) string {
	h.t.Helper()
	r := h.run(args...)
	if r.code != 0 {
		h.t.Fatalf("keyreg %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// okJSON runs keyreg with --json, which must exit 0, and decodes its stdout into v.
func (h *harness) okJSON(v any, args ...string) {
	h.t.Helper()
	out := h.ok(append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		h.t.Fatalf("keyreg %s --json: %v in %q", strings.Join(args, " "), err, out)
	}
}

// fails runs keyreg and checks it exits with code and a one-line error on stderr that
// contains every one of want; it returns the result.
func (h *harness) fails(code int, want []string, args ...string) result {
	h.t.Helper()
	return h.check(h.run(args...), code, want, args)
}

func (h *harness) check(r result, code int, want []string, args []string) result {
	h.t.Helper()
	if r.code != code {
		h.t.Fatalf("keyreg %s: exit %d, want %d; stdout %q stderr %q", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	first, _, _ := strings.Cut(r.stderr, "\n")
	if !strings.HasPrefix(first, "keyreg: ") {
		h.t.Errorf("keyreg %s: stderr %q does not start with a keyreg: line", strings.Join(args, " "), r.stderr)
	}
	if (code == 1 || code == 2) && strings.Count(r.stderr, "\n") != 1 {
		h.t.Errorf("keyreg %s: stderr %q is not one line", strings.Join(args, " "), r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(first, w) {
			h.t.Errorf("keyreg %s: stderr %q lacks %q", strings.Join(args, " "), first, w)
		}
	}
	if tok := h.env["KEYREG_TOKEN"]; tok != "" && strings.Contains(r.stdout+r.stderr, tok) {
		h.t.Errorf("keyreg %s: the output shows the token", strings.Join(args, " "))
	}
	return r
}

// contains fails the test unless s holds every one of want.
func contains(t *testing.T, what, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, s)
		}
	}
}
