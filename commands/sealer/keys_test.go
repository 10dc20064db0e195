package sealer_test

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keyreg/keyreg/commands/sealer"
)

// TestSigningKeyFiles: the key pair is made on first use, private key 0600 in a 0700
// directory, and the same key is read back later.
func TestSigningKeyFiles(t *testing.T) {
	data := t.TempDir()
	s1, vkey, err := sealer.LoadOrCreateSigningKey(data)
	if err != nil {
		t.Fatal(err)
	}
	for path, mode := range map[string]os.FileMode{
		filepath.Join(data, "audit"):                 0o700 | os.ModeDir,
		filepath.Join(data, "audit", "signing.key"):  0o600,
		filepath.Join(data, "audit", "verifier.key"): 0o644,
	} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode() != mode {
			t.Errorf("%s: mode %v, %v; want %v", path, fi.Mode(), err, mode)
		}
	}
	s2, vkey2, err := sealer.LoadOrCreateSigningKey(data)
	if err != nil || vkey2 != vkey || s2.KeyHash() != s1.KeyHash() {
		t.Fatalf("second load: %s, %v; want %s", vkey2, err, vkey)
	}
	if got, err := sealer.ReadVerifierKey(data); err != nil || got != vkey {
		t.Fatalf("ReadVerifierKey = %q, %v", got, err)
	}
	msg, _ := note.Sign(&note.Note{Text: "hello\n"}, s1)
	v, _ := note.NewVerifier(vkey)
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(data, "audit", "verifier.key"))
	if string(b) != vkey+"\n" {
		t.Fatalf("verifier.key holds %q", b)
	}
	if left, _ := filepath.Glob(filepath.Join(data, "audit", ".*tmp*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// TestVerifierKeyFollowsSigningKey: a verifier.key that does not match the signing key is
// rewritten from it; with only verifier.key, ReadVerifierKey reads that.
func TestVerifierKeyFollowsSigningKey(t *testing.T) {
	data := t.TempDir()
	_, vkey, err := sealer.LoadOrCreateSigningKey(data)
	if err != nil {
		t.Fatal(err)
	}
	_, other, _ := note.GenerateKey(nil, sealer.SignerName)
	vpath := filepath.Join(data, "audit", "verifier.key")
	if err := os.WriteFile(vpath, []byte(other+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, got, err := sealer.LoadOrCreateSigningKey(data); err != nil || got != vkey {
		t.Fatalf("reload = %q, %v; want %q", got, err, vkey)
	}
	if b, _ := os.ReadFile(vpath); string(b) != vkey+"\n" {
		t.Fatalf("verifier.key not rewritten: %q", b)
	}
	os.Remove(filepath.Join(data, "audit", "signing.key"))
	if got, err := sealer.ReadVerifierKey(data); err != nil || got != vkey {
		t.Fatalf("ReadVerifierKey from verifier.key alone = %q, %v", got, err)
	}
	if _, err := sealer.ReadVerifierKey(t.TempDir()); err == nil {
		t.Fatal("ReadVerifierKey of an empty data dir succeeded")
	}
}
