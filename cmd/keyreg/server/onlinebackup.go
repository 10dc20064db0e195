package server

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
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

	"github.com/nats-io/nats.go"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
)

// OnlineFormat is the manifest format of an online backup (Node.Backup); an offline one
// (Backup) is format 1.
const OnlineFormat = 2

// The files of an online backup, besides the manifest.
const (
	backupSnapshot = "stream/" + events.StreamName + ".snapshot" // JetStream's snapshot (an S2-compressed tar)
	backupMeta     = "stream/meta.json"                          // the stream's config and state, for the restore
	backupViews    = "views"                                     // a Pebble checkpoint of the serving views
	backupVerifier = "audit/verifier.key"                        // the public key of the checkpoints sealed so far
)

// Backup writes an online backup of the serving node to w as a tar: a Pebble checkpoint
// of the serving views (views/), then a JetStream snapshot of the stream (stream/), the
// public verifier key of the audit checkpoints (audit/verifier.key), and last the
// manifest, with every file's checksum, the sequence the views had applied and the one
// the stream had reached. The views are taken first, so the stream holds all they applied;
// a restore catches them up with the rest. Writes go on meanwhile. It holds no secret: not
// the audit signing key (a restored node makes its own), nor the shared subscriber's
// password. It stages the files in the data dir first, so it fails (with nothing written
// to w) before sending anything, or sends the whole backup; one runs at a time
// (httpapi.ErrBackupRunning).
func (n *Node) Backup(ctx context.Context, w io.Writer) (Manifest, error) {
	if !n.backupMu.TryLock() {
		return Manifest{}, httpapi.ErrBackupRunning
	}
	defer n.backupMu.Unlock()
	if n.stream == nil || n.cfg.ReadOnly {
		return Manifest{}, fmt.Errorf("%w: a read-only server makes no backups", httpapi.ErrUnavailable)
	}
	// The staging directories of backups a crash interrupted go first.
	if old, _ := filepath.Glob(filepath.Join(n.cfg.DataDir, "backup-*")); len(old) > 0 {
		for _, d := range old {
			os.RemoveAll(d)
		}
	}
	stage, err := os.MkdirTemp(n.cfg.DataDir, "backup-")
	if err != nil {
		return Manifest{}, fmt.Errorf("backup: %w", err)
	}
	defer os.RemoveAll(stage)
	host, _ := os.Hostname()
	m := Manifest{Format: OnlineFormat, CreatedAt: time.Now().UTC(), Source: host + ":" + n.cfg.DataDir, Stream: events.StreamName}

	n.swapMu.RLock() // no swap of generations meanwhile
	v := n.current.Load()
	m.Generation = v.gen
	m.ViewsSeq, err = v.store.CheckpointTo(filepath.Join(stage, backupViews))
	n.swapMu.RUnlock()
	if err != nil {
		return Manifest{}, fmt.Errorf("backup: %w", err)
	}

	snap := filepath.Join(stage, filepath.FromSlash(backupSnapshot))
	if err := os.MkdirAll(filepath.Dir(snap), 0o700); err != nil {
		return Manifest{}, fmt.Errorf("backup: %w", err)
	}
	f, err := os.OpenFile(snap, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return Manifest{}, fmt.Errorf("backup: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	meta, st, err := snapshotStream(ctx, n.stream.conn, events.StreamName, bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("backup: %w", err)
	}
	m.StreamSeq, m.StreamMessages = st.LastSeq, st.Messages
	b, _ := json.MarshalIndent(meta, "", "  ")
	if err := os.WriteFile(filepath.Join(stage, filepath.FromSlash(backupMeta)), b, 0o600); err != nil {
		return Manifest{}, fmt.Errorf("backup: %w", err)
	}
	if n.audit != nil && n.audit.vkey != "" {
		p := filepath.Join(stage, filepath.FromSlash(backupVerifier))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return Manifest{}, fmt.Errorf("backup: %w", err)
		}
		if err := os.WriteFile(p, []byte(n.audit.vkey+"\n"), 0o600); err != nil {
			return Manifest{}, fmt.Errorf("backup: %w", err)
		}
	}

	tw := tar.NewWriter(w)
	err = filepath.WalkDir(stage, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(stage, path)
		bf, err := tarFile(tw, path, filepath.ToSlash(rel))
		m.Files = append(m.Files, bf)
		return err
	})
	if err != nil {
		return m, fmt.Errorf("backup: %w", err)
	}
	b, _ = json.MarshalIndent(m, "", "  ")
	hdr := &tar.Header{Name: ManifestFile, Mode: 0o600, Size: int64(len(b)), ModTime: m.CreatedAt, Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return m, fmt.Errorf("backup: %w", err)
	}
	if _, err := tw.Write(b); err != nil {
		return m, fmt.Errorf("backup: %w", err)
	}
	if err := tw.Close(); err != nil {
		return m, fmt.Errorf("backup: %w", err)
	}
	n.cfg.Logger.Info("online backup", "views_seq", m.ViewsSeq, "stream_seq", m.StreamSeq, "files", len(m.Files),
		"bytes", m.size(), "took", time.Since(m.CreatedAt).Round(time.Millisecond))
	return m, nil
}

// tarFile writes the file at path into tw as name, and returns its size and checksum.
func tarFile(tw *tar.Writer, path, name string) (BackupFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return BackupFile{}, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return BackupFile{}, err
	}
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: info.Size(), ModTime: info.ModTime(), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return BackupFile{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, h), f)
	if err == nil && n != info.Size() {
		err = fmt.Errorf("%s changed size while backed up", name)
	}
	return BackupFile{Path: name, Size: n, Mode: 0o600, SHA256: hex.EncodeToString(h.Sum(nil))}, err
}

func (m Manifest) size() int64 {
	var size int64
	for _, f := range m.Files {
		size += f.Size
	}
	return size
}

// Size is the total size of the backup's files, the manifest aside.
func (m Manifest) Size() int64 { return m.size() }

// Unpack reads an online backup (the tar Node.Backup writes, as GET /v1/admin/backup
// sends it) into to, which must be new or empty, and checks every file against the
// manifest. The manifest, the tar's last file, is written last: a backup cut short leaves
// no manifest, and Unpack removes what it wrote.
func Unpack(r io.Reader, to string) (m Manifest, err error) {
	if err := emptyDir(to); err != nil {
		return m, err
	}
	defer func() {
		if err != nil {
			clearDir(to)
			err = fmt.Errorf("%w; nothing was kept in %s", err, to)
		}
	}()
	got := map[string]BackupFile{}
	var manifest []byte
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return m, fmt.Errorf("backup: the backup broke off: %w", err)
		}
		if h.Typeflag != tar.TypeReg || !filepath.IsLocal(h.Name) || strings.Contains(h.Name, `\`) {
			return m, fmt.Errorf("backup: unexpected entry %q in the backup", h.Name)
		}
		if manifest != nil {
			return m, fmt.Errorf("backup: entry %q after the manifest", h.Name)
		}
		if h.Name == ManifestFile {
			if manifest, err = io.ReadAll(io.LimitReader(tr, 64<<20)); err != nil {
				return m, fmt.Errorf("backup: the backup broke off: %w", err)
			}
			continue
		}
		dst := filepath.Join(to, filepath.FromSlash(h.Name))
		bf, err := writeFrom(tr, dst)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return m, fmt.Errorf("backup: the backup broke off in %s", h.Name)
		}
		if err != nil {
			return m, fmt.Errorf("backup: %s: %w", h.Name, err)
		}
		got[h.Name] = bf
	}
	if manifest == nil {
		return m, errors.New("backup: the backup ended before its manifest (the server failed or stopped midway)")
	}
	if err := json.Unmarshal(manifest, &m); err != nil || m.Format != OnlineFormat {
		return m, errors.New("backup: the server sent a bad manifest")
	}
	if err := checkFiles(m, got); err != nil {
		return m, err
	}
	if err := os.WriteFile(filepath.Join(to, ManifestFile), manifest, 0o600); err != nil {
		return m, fmt.Errorf("backup: %w", err)
	}
	return m, nil
}

// checkFiles checks that got holds exactly the files of m, with their sizes and checksums.
func checkFiles(m Manifest, got map[string]BackupFile) error {
	if len(got) != len(m.Files) {
		return fmt.Errorf("backup: %d files, and the manifest lists %d (damaged backup)", len(got), len(m.Files))
	}
	for _, f := range m.Files {
		g, ok := got[f.Path]
		if !ok || g.Size != f.Size || g.SHA256 != f.SHA256 {
			return fmt.Errorf("backup: %s does not match the manifest (damaged backup)", f.Path)
		}
	}
	return nil
}

// writeFrom writes r into the new file dst (mode 0600) and returns its size and checksum.
func writeFrom(r io.Reader, dst string) (BackupFile, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return BackupFile{}, err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return BackupFile{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), r)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return BackupFile{Size: n, Mode: 0o600, SHA256: hex.EncodeToString(h.Sum(nil))}, err
}

// clearDir removes everything in dir but its LOCK.
func clearDir(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "LOCK" {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// restoreOnline restores an online backup (from, with manifest m) into dataDir, empty
// and locked: it checks every file, restores the stream into the data dir's embedded NATS
// server (with one replica) or into o.NATSURL, or stages it for an embedded cluster
// (o.ClusterName), and makes the views' checkpoint the serving generation. keyreg serve
// then catches the views up with the rest of the stream.
func restoreOnline(from, dataDir string, m Manifest, o RestoreOptions) error {
	got := map[string]BackupFile{}
	for _, f := range m.Files {
		if !filepath.IsLocal(filepath.FromSlash(f.Path)) {
			return fmt.Errorf("restore: bad path %q in manifest", f.Path)
		}
		bf, err := sumFile(filepath.Join(from, filepath.FromSlash(f.Path)))
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		got[f.Path] = bf
	}
	if err := checkFiles(m, got); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, want := range []string{backupSnapshot, backupMeta} {
		if _, ok := got[want]; !ok {
			return fmt.Errorf("restore: the backup has no %s", want)
		}
	}
	var meta streamMeta
	b, err := os.ReadFile(filepath.Join(from, filepath.FromSlash(backupMeta)))
	if err == nil {
		err = json.Unmarshal(b, &meta)
	}
	if err != nil {
		return fmt.Errorf("restore: %s: %w", backupMeta, err)
	}
	if o.ClusterName != "" {
		if err := stageClusterRestore(from, dataDir, m, o.ClusterName); err != nil {
			return err
		}
	} else if err := restoreStreamFrom(from, dataDir, m, meta, o); err != nil {
		return err
	}

	gens := generations(Config{DataDir: dataDir})
	gen := m.Generation
	if gen == "" {
		gen = "g000001"
	}
	for _, f := range m.Files {
		rel, ok := strings.CutPrefix(f.Path, backupViews+"/")
		if !ok {
			continue
		}
		if _, err := copyFile(filepath.Join(from, filepath.FromSlash(f.Path)), filepath.Join(gens.Dir(gen), filepath.FromSlash(rel))); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	if err := os.MkdirAll(gens.Dir(gen), 0o700); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := gens.Swap(gen); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// restoreStreamFrom restores the stream of the online backup in from (manifest m, stream
// config and state meta) into dataDir's embedded server, with one replica, or into
// o.NATSURL with o.Replicas.
func restoreStreamFrom(from, dataDir string, m Manifest, meta streamMeta, o RestoreOptions) (err error) {
	replicas := 1 // the embedded server
	if o.NATSURL != "" {
		replicas = max(o.Replicas, 1)
	}
	if meta.Config, err = withReplicas(meta.Config, replicas); err != nil {
		return fmt.Errorf("restore: %s: %w", backupMeta, err)
	}

	var nc *nats.Conn
	if o.NATSURL != "" {
		nc, err = nats.Connect(o.NATSURL, nats.Name("keyreg restore"))
		if err != nil {
			return fmt.Errorf("restore: connect to nats %s: %w", o.NATSURL, err)
		}
	} else {
		ns, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(dataDir, "nats")})
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		if nc, err = natsserver.ConnectInProcess(ns); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	defer nc.Close()
	snap, err := os.Open(filepath.Join(from, filepath.FromSlash(backupSnapshot)))
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer snap.Close()
	st, err := restoreStream(context.Background(), nc, events.StreamName, meta, snap)
	if errors.Is(err, errRestoreBroke) && o.NATSURL != "" {
		// A NATS cluster keeps the stream of a failed restore: delete it (it is this
		// restore's), so that the restore can be run again.
		if derr := deleteStream(context.Background(), nc); derr != nil {
			err = fmt.Errorf("%w; deleting the stream it left: %w", err, derr)
		}
	}
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if st.LastSeq < m.StreamSeq || st.LastSeq < m.ViewsSeq {
		return fmt.Errorf("restore: the restored stream ends at sequence %d, before the backup's %d (damaged backup)", st.LastSeq, max(m.StreamSeq, m.ViewsSeq))
	}
	return nil
}

// withReplicas returns a stream config (JSON) with num_replicas set to r.
func withReplicas(cfg json.RawMessage, r int) (json.RawMessage, error) {
	var c map[string]any
	d := json.NewDecoder(bytes.NewReader(cfg))
	d.UseNumber() // durations in nanoseconds stay exact
	if err := d.Decode(&c); err != nil {
		return nil, err
	}
	c["num_replicas"] = r
	return json.Marshal(c)
}

// sumFile returns the size and checksum of the file at path.
func sumFile(path string) (BackupFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return BackupFile{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return BackupFile{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, err
}

// nodeBackup serves httpapi.Backuper with a node's online backups.
type nodeBackup struct{ n *Node }

// Backup implements httpapi.Backuper.
func (b nodeBackup) Backup(ctx context.Context, w io.Writer) error {
	_, err := b.n.Backup(ctx, w)
	return err
}
