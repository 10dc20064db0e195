package cli

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyreg/keyreg/cmd/keyreg/server"
)

// TestSubscriberCommands adds, lists and removes NATS subscribers with the CLI: the
// password is printed once, or only written to a new 0600 --creds-file whose path is
// printed; the credentials connect until the subscriber is removed; mistakes are one-line
// errors.
func TestSubscriberCommands(t *testing.T) {
	h := startServerWith(t, func(c *server.Config) { c.NATSListen = "127.0.0.1:0" })

	out := h.ok("subscriber", "add", "billing", "--max-consumers", "2")
	contains(t, "subscriber add", out, "Added NATS subscriber billing.", "user:          billing", "password:", "nats://127.0.0.1:",
		"inbox prefix:  _INBOX.billing", "consumers:     billing-1, billing-2")

	creds := filepath.Join(t.TempDir(), "fraud.nats.env")
	out = h.ok("subscriber", "add", "fraud", "--creds-file", creds)
	contains(t, "subscriber add --creds-file", out, "credentials:   "+creds)
	if strings.Contains(out, "password") {
		t.Errorf("--creds-file printed the password:\n%s", out)
	}
	info, err := os.Stat(creds)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("creds file: %v, mode %v; want 0600", err, info.Mode().Perm())
	}
	env := readEnvFile(t, creds)
	if env["NATS_USER"] != "fraud" || len(env["NATS_PASSWORD"]) < 40 || env["NATS_INBOX_PREFIX"] != "_INBOX.fraud" || !strings.HasPrefix(env["NATS_URL"], "nats://") {
		t.Fatalf("creds file holds %v", env)
	}
	connect := func() error {
		nc, err := nats.Connect(env["NATS_URL"], nats.UserInfo(env["NATS_USER"], env["NATS_PASSWORD"]),
			nats.CustomInboxPrefix(env["NATS_INBOX_PREFIX"]), nats.MaxReconnects(0), nats.Timeout(30*time.Second))
		if err == nil {
			nc.Close()
		}
		return err
	}
	if err := connect(); err != nil {
		t.Fatalf("the written credentials do not connect: %v", err)
	}

	// An existing --creds-file is refused before anything is added.
	h.fails(1, []string{"--creds-file", "exists"}, "subscriber", "add", "audit", "--creds-file", creds)
	out = h.ok("subscriber", "list")
	contains(t, "subscriber list", out, "billing", "fraud", "_INBOX.fraud")
	if strings.Contains(out, "audit") {
		t.Errorf("a refused --creds-file added the subscriber:\n%s", out)
	}

	h.fails(1, []string{"already exists"}, "subscriber", "add", "billing")
	h.fails(1, []string{"name", "Bad.Name"}, "subscriber", "add", "Bad.Name")
	h.fails(1, []string{"max_consumers"}, "subscriber", "add", "svc", "--max-consumers", "1000")

	out = h.ok("subscriber", "remove", "fraud", "--reason", "retired")
	contains(t, "subscriber remove", out, "Removed NATS subscriber fraud.")
	if err := connect(); err == nil {
		t.Fatal("a removed subscriber connected")
	}
	h.fails(1, []string{"not found"}, "subscriber", "remove", "fraud")
}

func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		env[k] = v
	}
	return env
}
