package cli

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/commands/sealer"
)

// keyName returns "<name>+<hash>" of a verifier key, as verify names a signer.
func keyName(vkey string) string {
	parts := strings.SplitN(vkey, "+", 3)
	return parts[0] + "+" + parts[1]
}

// TestAuditSignerSet: the node's key is registered and published; a key file with
// several keys (and comments) verifies an export, and one without the signer's key fails
// naming it; a node given a second key publishes both; retiring the first (admin only)
// takes it out of the set: exports verify with the new set, the new export fails with the
// old set, and a checkpoint signed with the retired key is rejected by the new set. The
// node, restarted with its retired key, seals nothing: its export answers 503.
func TestAuditSignerSet(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{Seal: true})
	h := harnessFor(n)
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	h.ok("workspace", "create", "acme", "--name", "Acme")
	h.ok("key", "create", "-w", "acme", "--name", "k1")

	k1, err := sealer.ReadVerifierKey(n.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	set1 := h.ok("audit", "pubkey")
	if set1 != k1+"\n" {
		t.Fatalf("audit pubkey = %q, want the node's key %q", set1, k1)
	}
	contains(t, "audit signer list", h.ok("audit", "signer", "list"), k1, "-")
	e1 := filepath.Join(dir, "e1.jsonl")
	h.ok("audit", "export", "-w", "acme", "-o", e1)

	_, other, err := note.GenerateKey(rand.Reader, sealer.SignerName)
	if err != nil {
		t.Fatal(err)
	}
	multi := write("multi.pub", "# keyreg audit keys\n"+other+"\n\n"+k1+"\n")
	contains(t, "verify with a multi-key file", h.ok("audit", "verify", e1, "--pubkey", "@"+multi), "OK", keyName(k1))
	h.fails(1, []string{"FAILED", "not signed by a trusted key", keyName(k1)}, "audit", "verify", e1, "--pubkey", "@"+write("other.pub", other+"\n"))
	h.fails(2, []string{"--pubkey", "line 2"}, "audit", "verify", e1, "--pubkey", "@"+write("bad.pub", k1+"\nnot a key\n"))

	// A second key for the node (as a new node would bring): both are published.
	oldKey := filepath.Join(dir, "k1.signing.key")
	if err := os.Rename(filepath.Join(n.DataDir, "audit", "signing.key"), oldKey); err != nil {
		t.Fatal(err)
	}
	root := n.Root
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	n = nodetest.Start(t, nodetest.Options{DataDir: n.DataDir, Root: root, Seal: true})
	h = harnessFor(n)
	k2, err := sealer.ReadVerifierKey(n.DataDir)
	if err != nil || k2 == k1 {
		t.Fatalf("second key %q, %v", k2, err)
	}
	if got := h.ok("audit", "pubkey"); got != k1+"\n"+k2+"\n" {
		t.Fatalf("audit pubkey = %q, want both keys", got)
	}

	// Retire the first: admin only; it leaves the set.
	h.fails(1, []string{"401"}, "audit", "signer", "retire", k1, "--token", "kr_bogus")
	var reader struct {
		Secret string `json:"secret"`
	}
	h.okJSON(&reader, "key", "create", "-w", "acme", "--name", "reader", "--permission", "keyreg.audit.read")
	h.fails(1, []string{"403"}, "audit", "signer", "retire", k1, "--token", reader.Secret)
	h.ok("audit", "signer", "retire", k1, "--reason", "rotation")
	set2 := h.ok("audit", "pubkey")
	if set2 != k2+"\n" {
		t.Fatalf("audit pubkey after retiring k1 = %q, want %q", set2, k2)
	}
	var list struct {
		Signers []client.AuditSigner `json:"signers"`
	}
	h.okJSON(&list, "audit", "signer", "list")
	if len(list.Signers) != 2 || list.Signers[0].VerifierKey != k1 || list.Signers[0].RetiredSeq == 0 || list.Signers[1].RetiredSeq != 0 {
		t.Fatalf("audit signer list: %+v", list.Signers)
	}
	h.ok("audit", "signer", "retire", k1) // again: nothing changes
	h.fails(1, []string{"404"}, "audit", "signer", "retire", other)

	h.ok("key", "create", "-w", "acme", "--name", "k2")
	e2 := filepath.Join(dir, "e2.jsonl")
	h.ok("audit", "export", "-w", "acme", "-o", e2)
	set2File, set1File := write("set2.pub", set2), write("set1.pub", set1)
	contains(t, "verify the new export with the new set", h.ok("audit", "verify", e2, "--pubkey", "@"+set2File), "OK", keyName(k2))
	h.fails(1, []string{"not signed by a trusted key", keyName(k2)}, "audit", "verify", e2, "--pubkey", "@"+set1File)
	h.fails(1, []string{"not signed by a trusted key", keyName(k1)}, "audit", "verify", e1, "--pubkey", "@"+set2File)

	// A checkpoint signed with the retired key after its retirement (the new export
	// signed again with it) is rejected by the set the log vouches for.
	skey, err := os.ReadFile(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		t.Fatal(err)
	}
	forged := write("forged.jsonl", resign(t, e2, signer))
	h.fails(1, []string{"not signed by a trusted key", keyName(k1)}, "audit", "verify", forged, "--pubkey", "@"+set2File)

	// The whole set (--all), k1 with its retirement: k1 is vouched for up to it, so the
	// export it signed before verifies and its later checkpoint fails; k2's verifies.
	all := h.ok("audit", "pubkey", "--all")
	lines := strings.Split(strings.TrimSpace(all), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], k1+" retired=") || lines[1] != k2 {
		t.Fatalf("audit pubkey --all = %q", all)
	}
	allFile := write("all.pub", all)
	contains(t, "verify k1's export with --all", h.ok("audit", "verify", e1, "--pubkey", "@"+allFile), "OK", keyName(k1))
	contains(t, "verify k2's export with --all", h.ok("audit", "verify", e2, "--pubkey", "@"+allFile), "OK", keyName(k2))
	h.fails(1, []string{"FAILED", keyName(k1), "retired at stream sequence"}, "audit", "verify", forged, "--pubkey", "@"+allFile)
	// Without the bounds (the key set from before the retirement), the forged export
	// passes: that is why a retirement must reach reviewers as a new key set.
	h.ok("audit", "verify", forged, "--pubkey", "@"+set1File)

	// The node given its retired key back seals nothing: its export cannot be signed.
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(oldKey, filepath.Join(n.DataDir, "audit", "signing.key")); err != nil {
		t.Fatal(err)
	}
	n = nodetest.Start(t, nodetest.Options{DataDir: n.DataDir, Root: root, Seal: true})
	h = harnessFor(n)
	h.ok("key", "create", "-w", "acme", "--name", "k3")
	h.fails(1, []string{"503", "does not vouch", "retired"}, "audit", "export", "-w", "acme", "-o", filepath.Join(dir, "e3.jsonl"))
	if got := h.ok("audit", "pubkey"); got != set2 {
		t.Fatalf("audit pubkey from the node with the retired key = %q, want %q", got, set2)
	}
}

// resign returns the export in file with its checkpoint note and statement signed again
// by signer alone.
func resign(t *testing.T, file string, signer note.Signer) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var tr map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &tr); err != nil {
		t.Fatal(err)
	}
	sign := func(msg string) string {
		text, _, _ := strings.Cut(msg, "\n\n")
		out, err := note.Sign(&note.Note{Text: text + "\n"}, signer)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	cp := tr["checkpoint"].(map[string]any)
	cp["note"] = sign(cp["note"].(string))
	tr["statement"] = sign(tr["statement"].(string))
	last, err := json.Marshal(tr)
	if err != nil {
		t.Fatal(err)
	}
	lines[len(lines)-1] = string(last)
	return strings.Join(lines, "\n") + "\n"
}
