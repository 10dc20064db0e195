package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
)

// startKillable runs `keyreg serve` (the real binary) with args, as nodetest.StartBinary
// does, for a test that kills it with SIGKILL: kill does, and the cleanup kills it if the
// test did not.
func startKillable(t *testing.T, args ...string) (n *nodetest.Node, kill func()) {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "root.key")
	out := &nodetest.SyncBuffer{}
	cmd := exec.Command(nodetest.Binary(t), append([]string{"serve", "--data", t.TempDir(), "--http", "127.0.0.1:0",
		"--nats-listen", "", "--bootstrap-key-file", keyFile}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	kill = func() {
		cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(time.Minute):
			t.Errorf("keyreg serve (pid %d) still there a minute after SIGKILL", cmd.Process.Pid)
		}
	}
	t.Cleanup(kill)
	n = &nodetest.Node{T: t, Output: out, HTTP: http.DefaultClient, Pid: cmd.Process.Pid}
	deadline := time.After(nodetest.StartTimeout)
	for n.Addr == "" {
		if _, after, ok := strings.Cut(out.String(), "http="); ok {
			n.Addr, _, _ = strings.Cut(after, " ")
			n.Addr = strings.TrimSpace(n.Addr)
			break
		}
		select {
		case <-exited:
			t.Fatalf("keyreg serve ended before it served: %s", out.String())
		case <-deadline:
			t.Fatalf("keyreg serve did not serve within %s: %s", nodetest.StartTimeout, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	n.URL = "http://" + n.Addr
	n.WaitReady()
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatalf("root key of the first node: %v\n%s", err, out.String())
	}
	n.Root = strings.TrimSpace(string(b))
	return n, kill
}

// keyreg runs the real binary as a client of addr with token and returns its stdout; a
// failure (non-zero exit) is returned with its stderr.
func keyreg(t *testing.T, addr, token string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodetest.Binary(t), args...)
	cmd.Env = append(os.Environ(), "KEYREG_ADDR="+addr, "KEYREG_TOKEN="+token)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("keyreg %s: %v: %s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out), nil
}

// keyHash returns "<name>+<hash>" of a verifier key: how verify names the key that signed.
func keyHash(vkey string) string {
	parts := strings.SplitN(vkey, "+", 3)
	return parts[0] + "+" + parts[1]
}

// TestAuditIdentityMovesWithTheSealer: two keyreg nodes (real binaries) on one NATS
// JetStream. Each registers its audit key in the log on start, and either publishes the
// same key set. Node A takes the sealer lease and seals; A is killed (SIGKILL); more is
// written on node B, whose audit export (sealed on demand, by B) verifies with the key
// set fetched before the kill, and fails with A's key alone, naming B's key.
func TestAuditIdentityMovesWithTheSealer(t *testing.T) {
	url := startNATS(t) // ryw_test.go
	common := []string{"--nats-url", url, "--replicas", "1"}
	a, killA := startKillable(t, append(common, "--seal-every-events", "2", "--seal-interval", "-1s")...)
	root := a.Root
	a.JSON("POST", "/v1/workspaces", root, map[string]any{"id": "acme", "name": "Acme"}, http.StatusCreated, nil)
	for i := range 3 {
		a.JSON("POST", "/v1/workspaces/acme/keys", root, map[string]any{"name": fmt.Sprint("a", i)}, http.StatusCreated, nil)
	}
	var pkA struct {
		VerifierKey string `json:"verifier_key"`
	}
	a.JSON("GET", "/v1/audit/pubkey", "", nil, http.StatusOK, &pkA)

	// A is the sealer: it took the lease first and seals every 2 events.
	sealedByA := waitCheckpoint(t, a, root, pkA.VerifierKey)
	t.Logf("node A sealed a checkpoint of %d events", sealedByA)

	b := nodetest.StartBinaryWith(t, nodetest.BinaryOptions{Root: root, Seal: true, Args: append(common, "--seal-every-events", "2", "--seal-interval", "-1s")})
	var pkB struct {
		VerifierKey  string   `json:"verifier_key"`
		VerifierKeys []string `json:"verifier_keys"`
	}
	b.JSON("GET", "/v1/audit/pubkey", "", nil, http.StatusOK, &pkB)
	if pkB.VerifierKey == pkA.VerifierKey {
		t.Fatal("the two nodes have the same audit key")
	}
	// The key set published before the kill, from either node: both keys.
	set, err := keyreg(t, a.URL, "", "audit", "pubkey")
	if err != nil {
		t.Fatal(err)
	}
	setB, err := keyreg(t, b.URL, "", "audit", "pubkey")
	if err != nil {
		t.Fatal(err)
	}
	keys := strings.Fields(set)
	if want := []string{pkA.VerifierKey, pkB.VerifierKey}; !slices.Equal(keys, want) || setB != set {
		t.Fatalf("key set from A %q, from B %q; want %q from both", set, setB, want)
	}
	dir := t.TempDir()
	setFile, onlyA := filepath.Join(dir, "keyreg.pub"), filepath.Join(dir, "a.pub")
	if err := os.WriteFile(setFile, []byte(set), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(onlyA, []byte(pkA.VerifierKey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	killA()
	for i := range 3 {
		b.JSON("POST", "/v1/workspaces/acme/keys", root, map[string]any{"name": fmt.Sprint("b", i)}, http.StatusCreated, nil)
	}
	export := filepath.Join(dir, "acme.jsonl")
	if _, err := keyreg(t, b.URL, root, "audit", "export", "-w", "acme", "-o", export); err != nil {
		t.Fatal(err)
	}
	out, err := keyreg(t, b.URL, "", "audit", "verify", export, "--pubkey", "@"+setFile, "--json")
	if err != nil {
		t.Fatalf("the export taken on B after A was killed does not verify with the key set published before: %v", err)
	}
	var rep struct {
		OK      bool `json:"ok"`
		Summary struct {
			Events   int    `json:"events"`
			TreeSize uint64 `json:"tree_size"`
			Signer   string `json:"signer"`
		} `json:"summary"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Summary.Events != 7 || rep.Summary.Signer != keyHash(pkB.VerifierKey) || rep.Summary.TreeSize <= sealedByA {
		t.Fatalf("verify: %s; want ok, 7 events, a checkpoint beyond A's %d signed by B (%s)", out, sealedByA, keyHash(pkB.VerifierKey))
	}
	_, err = keyreg(t, b.URL, "", "audit", "verify", export, "--pubkey", "@"+onlyA)
	if err == nil || !strings.Contains(err.Error(), "not signed by a trusted key") || !strings.Contains(err.Error(), keyHash(pkB.VerifierKey)) {
		t.Fatalf("verify with A's key alone: %v; want a failure naming B's key %s", err, keyHash(pkB.VerifierKey))
	}
}

// waitCheckpoint waits (bounded) until a checkpoint sealed on node n is in the log, checks
// it is signed with vkey, and returns its tree size.
func waitCheckpoint(t *testing.T, n *nodetest.Node, root, vkey string) uint64 {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var page struct {
			Events []struct {
				Event struct {
					Data struct {
						TreeSize uint64 `json:"tree_size"`
						Note     string `json:"note"`
					} `json:"data"`
				} `json:"event"`
			} `json:"events"`
		}
		n.JSON("GET", "/v1/workspaces/system/audit?type=checkpoint.sealed", root, nil, http.StatusOK, &page)
		if len(page.Events) > 0 {
			cp := page.Events[0].Event.Data
			if _, err := note.Open([]byte(cp.Note), note.VerifierList(v)); err != nil {
				t.Fatalf("the first checkpoint is not signed by the sealer's key %s: %v", vkey, err)
			}
			return cp.TreeSize
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint sealed within 30s: %s", n.Output.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
