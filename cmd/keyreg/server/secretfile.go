package server

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ErrSecretFileExists means a secret file's path is already taken (by a file, a directory
// or a symlink): keyreg writes secrets only into files it makes itself, so it never puts a
// secret into a file that others may read, nor follows a symlink planted at the path.
var ErrSecretFileExists = errors.New("secret file already exists")

// secretFile is a secret file being made: a new temporary file (mode 0600, opened with
// O_CREATE|O_EXCL|O_NOFOLLOW) beside its final path, moved into place by commit with a
// hard link, which, unlike a rename, never replaces a file that appeared meanwhile.
//
// The root key (--bootstrap-key-file, keyreg admin recover-root) and the NATS subscriber
// password go through it; the audit signing key is written the same way (a new 0600 file
// linked into place) by commands/sealer, which may not import cmd.
type secretFile struct {
	path string
	tmp  *os.File
}

// createSecretFile checks that nothing is at path and opens the temporary file that
// commit moves there. Call it before minting the secret, so that a bad path fails before
// anything is made. It returns an error wrapping ErrSecretFileExists (and fs.ErrExist)
// when path is taken.
func createSecretFile(path string) (*secretFile, error) {
	if err := checkSecretPathFree(path); err != nil {
		return nil, err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-"+rand.Text()[:12])
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("secret file %s: %w", path, err)
	}
	return &secretFile{path: path, tmp: f}, nil
}

func checkSecretPathFree(path string) error {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return fmt.Errorf("%w: %s is already there; keyreg writes a secret only into a new file of its own (remove it or choose another path): %w",
			ErrSecretFileExists, path, fs.ErrExist)
	case errors.Is(err, fs.ErrNotExist):
		return nil
	default:
		return fmt.Errorf("secret file %s: %w", path, err)
	}
}

// commit writes b to the temporary file, syncs it, and links it at the final path (mode
// 0600). It fails, writing nothing at the path, if a file appeared there meanwhile.
func (s *secretFile) commit(b []byte) error {
	defer s.abort()
	f := s.tmp
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("secret file %s: %w", s.path, err)
	}
	if err := f.Chmod(0o600); err != nil { // whatever the umask
		return fmt.Errorf("secret file %s: %w", s.path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("secret file %s: %w", s.path, err)
	}
	if err := os.Link(f.Name(), s.path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return checkSecretPathFree(s.path)
		}
		return fmt.Errorf("secret file %s: %w", s.path, err)
	}
	if d, err := os.Open(filepath.Dir(s.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// abort removes the temporary file; it is safe after commit and on nil.
func (s *secretFile) abort() {
	if s == nil || s.tmp == nil {
		return
	}
	s.tmp.Close()
	os.Remove(s.tmp.Name())
	s.tmp = nil
}

// writeSecretFile writes b to a new secret file at path (see secretFile). It refuses, with
// an error wrapping ErrSecretFileExists, when anything is at path.
func writeSecretFile(path string, b []byte) error {
	s, err := createSecretFile(path)
	if err != nil {
		return err
	}
	return s.commit(b)
}
