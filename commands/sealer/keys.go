package sealer

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/mod/sumdb/note"
)

// The audit signing key: the private key in <data>/audit/signing.key (0600), the public
// one in verifier.key, both in golang.org/x/mod/sumdb/note key format.
const (
	// SignerName is the name of the audit key in its notes' signature lines.
	SignerName      = "keyreg"
	auditDir        = "audit"
	signingKeyFile  = "signing.key"
	verifierKeyFile = "verifier.key"
)

// LoadOrCreateSigningKey returns the audit signer kept under dataDir and its verifier
// key, making the key pair on first use: <data>/audit (0700) holds signing.key (0600, the
// private key) and verifier.key (0644). The verifier key is always derived from the
// private key, whatever verifier.key says.
func LoadOrCreateSigningKey(dataDir string) (note.Signer, string, error) {
	dir := filepath.Join(dataDir, auditDir)
	path := filepath.Join(dir, signingKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createSigningKey(dir, path); err != nil {
			return nil, "", fmt.Errorf("audit key: %w", err)
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, "", fmt.Errorf("audit key: %w", err)
	}
	skey := strings.TrimSpace(string(b))
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, "", fmt.Errorf("audit key %s: %w", path, err)
	}
	vkey, err := verifierKeyOf(skey)
	if err != nil {
		return nil, "", fmt.Errorf("audit key %s: %w", path, err)
	}
	vpath := filepath.Join(dir, verifierKeyFile)
	if have, err := os.ReadFile(vpath); err != nil || strings.TrimSpace(string(have)) != vkey {
		if err := writeFile(vpath, []byte(vkey+"\n"), 0o644, os.Rename); err != nil {
			return nil, "", fmt.Errorf("audit key: %w", err)
		}
	}
	return signer, vkey, nil
}

// createSigningKey writes a new signing key to path, unless one is there.
func createSigningKey(dir, path string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	skey, _, err := note.GenerateKey(rand.Reader, SignerName)
	if err != nil {
		return err
	}
	// A key made meanwhile (another process) is kept: the caller reads whichever is there.
	// The key is linked into place, which never replaces nor follows what is at path.
	if err := writeFile(path, []byte(skey+"\n"), 0o600, os.Link); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// ReadVerifierKey returns the audit verifier key of a data dir, derived from its signing
// key (or read from verifier.key when only that is there).
func ReadVerifierKey(dataDir string) (string, error) {
	dir := filepath.Join(dataDir, auditDir)
	if b, err := os.ReadFile(filepath.Join(dir, signingKeyFile)); err == nil {
		return verifierKeyOf(strings.TrimSpace(string(b)))
	}
	b, err := os.ReadFile(filepath.Join(dir, verifierKeyFile))
	if err != nil {
		return "", fmt.Errorf("no audit key in %s (it is made by the first keyreg serve): %w", dir, err)
	}
	vkey := strings.TrimSpace(string(b))
	if _, err := note.NewVerifier(vkey); err != nil {
		return "", fmt.Errorf("%s: %w", filepath.Join(dir, verifierKeyFile), err)
	}
	return vkey, nil
}

// verifierKeyOf derives the verifier key of a note signer key
// "PRIVATE+KEY+<name>+<hash>+<base64 of 0x01 and the ed25519 seed>".
func verifierKeyOf(skey string) (string, error) {
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return "", errors.New("not a note signer key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", errors.New("not an ed25519 note signer key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(parts[2], pub)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(vkey, parts[2]+"+"+parts[3]+"+") {
		return "", errors.New("signer key hash does not match its key")
	}
	return vkey, nil
}

// writeFile writes b to a new temporary file beside path (opened
// O_CREATE|O_EXCL|O_NOFOLLOW, then mode perm whatever the umask), syncs it, and moves it
// to path with place: os.Rename replaces what is there, os.Link fails with fs.ErrExist
// instead. The file appears whole or not at all.
func writeFile(path string, b []byte, perm os.FileMode, place func(oldpath, newpath string) error) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-"+rand.Text()[:12])
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := place(f.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
