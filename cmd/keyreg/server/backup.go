package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ManifestFile names the manifest at the top of a backup.
const ManifestFile = "MANIFEST.json"

// Manifest describes a backup: what it holds and each file's checksum.
type Manifest struct {
	Format     int          `json:"format"`
	CreatedAt  time.Time    `json:"created_at"`
	Source     string       `json:"source"`
	Generation string       `json:"generation"`
	Files      []BackupFile `json:"files"`
	// An online backup (format 2, Node.Backup) also names the stream, the sequence its
	// views had applied, and the stream's last sequence and message count when its
	// snapshot started (the restored stream holds at least those).
	Stream         string `json:"stream,omitempty"`
	ViewsSeq       uint64 `json:"views_seq,omitempty"`
	StreamSeq      uint64 `json:"stream_seq,omitempty"`
	StreamMessages uint64 `json:"stream_messages,omitempty"`
}

// BackupFile is one file of a backup.
type BackupFile struct {
	Path   string      `json:"path"`
	Size   int64       `json:"size"`
	Mode   fs.FileMode `json:"mode"`
	SHA256 string      `json:"sha256"`
}

// Backup copies a stopped registry's data dir to an empty (or new) directory to: the
// stream (nats/), the serving generation of the views (projections/), and the rest of the
// data dir (such as the audit signing key, kept 0600), with a manifest of checksums. It
// holds the data dir's lock, so it refuses to run beside keyreg serve.
func Backup(dataDir, to string) (Manifest, error) {
	unlock, err := lockDataDir(dataDir)
	if err != nil {
		return Manifest{}, err
	}
	defer unlock()
	if err := emptyDir(to); err != nil {
		return Manifest{}, err
	}
	cur, err := generations(Config{DataDir: dataDir}).Current()
	if err != nil {
		return Manifest{}, err
	}
	m := Manifest{Format: 1, CreatedAt: time.Now().UTC(), Source: dataDir, Generation: cur}
	err = filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dataDir, path)
		if skip(rel, cur) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := copyFile(path, filepath.Join(to, rel))
		if err != nil {
			return err
		}
		f.Path = filepath.ToSlash(rel)
		m.Files = append(m.Files, f)
		return nil
	})
	if err != nil {
		return Manifest{}, fmt.Errorf("backup: %w", err)
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(to, ManifestFile), b, 0o600); err != nil {
		return Manifest{}, fmt.Errorf("backup: %w", err)
	}
	return m, nil
}

// skip leaves out of a backup the lock, the views' temporary and stale directories, and
// the staging directories of online backups.
func skip(rel, currentGen string) bool {
	parts := strings.Split(filepath.ToSlash(rel), "/")
	switch {
	case rel == "LOCK", strings.HasPrefix(parts[0], "verify-"), strings.HasPrefix(parts[0], "backup-"):
		return true
	case parts[0] == "projections" && len(parts) >= 2 && parts[1] != "CURRENT" && parts[1] != currentGen:
		return true
	}
	return false
}

// Restore checks a backup's manifest and copies it into dataDir, which must be empty or
// absent. Every file's checksum is verified before and after the copy. An online backup
// (format 2) has its stream restored into the data dir's embedded NATS server and its
// views made the serving generation (see restoreOnline).
func Restore(from, dataDir string) (m Manifest, err error) {
	return RestoreWith(from, dataDir, RestoreOptions{})
}

// RestoreOptions change where RestoreWith puts an online backup's stream.
type RestoreOptions struct {
	// NATSURL, when set, is an existing NATS (cluster) to restore the stream into, with
	// Replicas replicas (0: 1), instead of the data dir's embedded server: the data dir
	// then gets only the views, for keyreg serve --nats-url. The stream must not exist
	// there yet. An offline backup (format 1) cannot be restored so.
	NATSURL  string
	Replicas int
	// ClusterName, when set, stages an online backup for a node of the embedded cluster
	// ClusterName (keyreg serve --cluster-name): the views become the serving generation
	// and the stream's snapshot waits in the data dir until keyreg serve, on the cluster's
	// first start, restores it with the cluster's replicas (see restorePending).
	ClusterName string
}

// RestoreWith is Restore with options.
func RestoreWith(from, dataDir string, o RestoreOptions) (m Manifest, err error) {
	b, err := os.ReadFile(filepath.Join(from, ManifestFile))
	if err != nil {
		return m, fmt.Errorf("restore: %s is not a keyreg backup: %w", from, err)
	}
	if err := json.Unmarshal(b, &m); err != nil || (m.Format != 1 && m.Format != OnlineFormat) {
		return m, fmt.Errorf("restore: bad manifest in %s", from)
	}
	if o.NATSURL != "" && m.Format != OnlineFormat {
		return m, fmt.Errorf("restore: %s is an offline backup (its stream is the embedded server's files): restore it without --nats-url", from)
	}
	if o.ClusterName != "" {
		if o.NATSURL != "" {
			return m, fmt.Errorf("restore: --cluster-name %s restores into an embedded cluster: not with --nats-url %s", o.ClusterName, o.NATSURL)
		}
		if err := checkName(o.ClusterName); err != nil {
			return m, fmt.Errorf("restore: --cluster-name %q: %w", o.ClusterName, err)
		}
		if m.Format != OnlineFormat {
			return m, fmt.Errorf("restore: %s is an offline backup: only an online backup (keyreg backup --addr) restores into a cluster (--cluster-name)", from)
		}
	}
	if err := emptyDir(dataDir); err != nil {
		return m, err
	}
	unlock, err := lockDataDir(dataDir)
	if err != nil {
		return m, err
	}
	defer unlock()
	defer func() {
		if err != nil { // leave no half-restored registry behind
			clearDir(dataDir)
		}
	}()
	if m.Format == OnlineFormat {
		return m, restoreOnline(from, dataDir, m, o)
	}
	for _, f := range m.Files {
		src := filepath.Join(from, filepath.FromSlash(f.Path))
		if strings.Contains(f.Path, "..") {
			return m, fmt.Errorf("restore: bad path %q in manifest", f.Path)
		}
		got, err := copyFile(src, filepath.Join(dataDir, filepath.FromSlash(f.Path)))
		if err != nil {
			return m, fmt.Errorf("restore: %w", err)
		}
		if got.SHA256 != f.SHA256 || got.Size != f.Size {
			return m, fmt.Errorf("restore: %s does not match the manifest (damaged backup)", f.Path)
		}
	}
	return m, nil
}

// emptyDir checks dir is absent or empty, and creates it.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		if e.Name() != "LOCK" {
			return fmt.Errorf("%s is not empty: give a new or empty directory", dir)
		}
	}
	return os.MkdirAll(dir, 0o700)
}

// copyFile copies src to dst with src's mode and returns dst's size and checksum.
func copyFile(src, dst string) (BackupFile, error) {
	in, err := os.Open(src)
	if err != nil {
		return BackupFile{}, err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return BackupFile{}, err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return BackupFile{}, err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, info.Mode().Perm())
	if err != nil {
		return BackupFile{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return BackupFile{Size: n, Mode: info.Mode().Perm(), SHA256: hex.EncodeToString(h.Sum(nil))}, err
}
