package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyreg/keyreg/events"
)

// A restore into an embedded cluster comes in two steps. keyreg restore --cluster-name,
// run on each node's new data dir, makes the backup's views the serving generation and
// stages the stream's snapshot in DATA/restore (pendingFile, written last, marks it).
// keyreg serve with the cluster flags then, once the cluster has a meta leader and before
// it would make an empty stream, restores the snapshot with the cluster's replicas
// through the JetStream restore API: the first node to ask does it (JetStream refuses a
// second restore of a stream that exists); the others find the stream, tagged with the
// backup's id, and every node removes its staged files once the stream holds the backup.

// restoreDir is the directory of a data dir where a restore into a cluster is staged.
const restoreDir = "restore"

// pendingFile, in restoreDir, says that a restore waits for keyreg serve.
const pendingFile = "PENDING.json"

// restoreMetaKey names the stream metadata that holds the id of the backup a cluster's
// stream was restored from.
const restoreMetaKey = "keyreg_restored_from"

// pendingRestore is a restore into an embedded cluster staged in a data dir.
type pendingRestore struct {
	ClusterName string `json:"cluster_name"`
	Backup      string `json:"backup"`     // the backup's id: its manifest's SHA-256 (the same on every node)
	StreamSeq   uint64 `json:"stream_seq"` // the restored stream holds at least this sequence
	dir         string
}

// stageClusterRestore stages the stream of the online backup in from (manifest m) in
// dataDir/restore for keyreg serve on the embedded cluster clusterName, checking every
// file it copies against the manifest.
func stageClusterRestore(from, dataDir string, m Manifest, clusterName string) error {
	manifest, err := os.ReadFile(filepath.Join(from, ManifestFile))
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	dir := filepath.Join(dataDir, restoreDir)
	for _, f := range m.Files {
		if f.Path != backupSnapshot && f.Path != backupMeta {
			continue
		}
		got, err := copyFile(filepath.Join(from, filepath.FromSlash(f.Path)), filepath.Join(dir, filepath.FromSlash(f.Path)))
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if got.SHA256 != f.SHA256 || got.Size != f.Size {
			return fmt.Errorf("restore: %s does not match the manifest (damaged backup)", f.Path)
		}
	}
	sum := sha256.Sum256(manifest)
	p := pendingRestore{ClusterName: clusterName, Backup: hex.EncodeToString(sum[:16]), StreamSeq: max(m.StreamSeq, m.ViewsSeq)}
	b, _ := json.MarshalIndent(p, "", "  ")
	if err := writeFileSync(filepath.Join(dir, pendingFile), append(b, '\n')); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// readPendingRestore returns the restore staged in dataDir, or nil if there is none.
func readPendingRestore(dataDir string) (*pendingRestore, error) {
	dir := filepath.Join(dataDir, restoreDir)
	b, err := os.ReadFile(filepath.Join(dir, pendingFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("staged restore: %w", err)
	}
	p := &pendingRestore{dir: dir}
	if err := json.Unmarshal(b, p); err != nil || p.Backup == "" {
		return nil, fmt.Errorf("staged restore: bad %s", filepath.Join(dir, pendingFile))
	}
	return p, nil
}

// checkPendingRestore fails when cfg's data dir holds a staged restore that cfg would not
// carry out: a server on its own, or --nats-url, would make an empty stream instead, and a
// node of another cluster is not the one the restore was staged for.
func checkPendingRestore(cfg Config) error {
	if cfg.DataDir == "" {
		return nil
	}
	p, err := readPendingRestore(cfg.DataDir)
	switch {
	case err != nil || p == nil:
		return err
	case !cfg.clustered():
		return fmt.Errorf("%s holds a restore staged for the embedded cluster %s (keyreg restore --cluster-name): start it with keyreg serve --cluster-name %s, --cluster-listen and --cluster-peers",
			cfg.DataDir, p.ClusterName, p.ClusterName)
	case cfg.ClusterName != p.ClusterName:
		return fmt.Errorf("--cluster-name %s: %s holds a restore staged for the cluster %s", cfg.ClusterName, cfg.DataDir, p.ClusterName)
	}
	return nil
}

// streamInfo is the part of a stream's info that a restore checks.
type streamInfo struct {
	Config struct {
		Metadata map[string]string `json:"metadata"`
	} `json:"config"`
	State streamState `json:"state"`
}

// errNoStream is the stream info's answer when the stream does not exist.
var errNoStream = errors.New("no stream")

// jsStreamNotFound is JetStream's error code for a stream that does not exist.
const jsStreamNotFound = 10059

// keyregStreamInfo asks JetStream for the info of the KEYREG stream (errNoStream when it
// does not exist).
func keyregStreamInfo(ctx context.Context, nc *nats.Conn) (streamInfo, error) {
	var resp struct {
		Error *jsAPIError `json:"error"`
		streamInfo
	}
	msg, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.INFO."+events.StreamName, nil)
	if err != nil {
		return resp.streamInfo, fmt.Errorf("stream info: %w", err)
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return resp.streamInfo, fmt.Errorf("stream info: bad answer: %w", err)
	}
	if resp.Error != nil {
		if resp.Error.ErrCode == jsStreamNotFound {
			return resp.streamInfo, errNoStream
		}
		return resp.streamInfo, fmt.Errorf("stream info: %w", resp.Error)
	}
	return resp.streamInfo, nil
}

// restorePending takes one step of the staged restore p on a cluster whose meta leader
// exists: while the stream does not exist, the node of the meta leader (leader: this
// node's server is it) restores it with replicas (the meta leader makes the restored
// stream's first leader on its own server, which then takes the snapshot from this node's
// in-process connection, and one node at a time asks); once the stream
// holds the backup (it has the backup's tag and reaches its sequence), it removes the
// staged files and reports done. A stream that exists without the backup's tag fails
// the start: the restore is for a cluster on new data dirs. Any other error is for
// trying again (the cluster may not have enough nodes up for the replicas yet).
func restorePending(ctx context.Context, nc *nats.Conn, p *pendingRestore, replicas int, leader bool) (done bool, fatal, err error) {
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	info, err := keyregStreamInfo(ictx, nc)
	cancel()
	switch {
	case errors.Is(err, errNoStream) && !leader:
		return false, nil, errors.New("the stream is not restored yet (the node of the JetStream meta leader restores it)")
	case errors.Is(err, errNoStream):
		return false, nil, restoreStaged(ctx, nc, p, replicas)
	case err != nil:
		return false, nil, err
	case info.Config.Metadata[restoreMetaKey] != p.Backup:
		return false, fmt.Errorf("the cluster already has a stream %s, not restored from this backup (%s): a restore brings up a cluster on new data dirs",
			events.StreamName, p.dir), nil
	case info.State.LastSeq < p.StreamSeq:
		return false, nil, fmt.Errorf("the stream is being restored (at sequence %d of %d)", info.State.LastSeq, p.StreamSeq)
	}
	if err := os.RemoveAll(p.dir); err != nil {
		return false, fmt.Errorf("staged restore: %w", err), nil
	}
	return true, nil, nil
}

// restoreStaged restores the staged snapshot of p with replicas, the stream tagged with
// the backup's id.
func restoreStaged(ctx context.Context, nc *nats.Conn, p *pendingRestore, replicas int) error {
	var meta streamMeta
	b, err := os.ReadFile(filepath.Join(p.dir, filepath.FromSlash(backupMeta)))
	if err == nil {
		err = json.Unmarshal(b, &meta)
	}
	if err != nil {
		return fmt.Errorf("staged restore: %s: %w", backupMeta, err)
	}
	if meta.Config, err = withReplicas(meta.Config, replicas); err == nil {
		meta.Config, err = withMetadata(meta.Config, restoreMetaKey, p.Backup)
	}
	if err != nil {
		return fmt.Errorf("staged restore: %s: %w", backupMeta, err)
	}
	snap, err := os.Open(filepath.Join(p.dir, filepath.FromSlash(backupSnapshot)))
	if err != nil {
		return fmt.Errorf("staged restore: %w", err)
	}
	defer snap.Close()
	_, err = restoreStream(ctx, nc, events.StreamName, meta, snap)
	if errors.Is(err, errRestoreBroke) {
		// JetStream keeps the stream of a failed restore on a cluster (it is this
		// restore's: JetStream took no other): delete it, so that the next try starts
		// afresh.
		if derr := deleteStream(ctx, nc); derr != nil {
			err = fmt.Errorf("%w; deleting the stream it left: %w", err, derr)
		}
	}
	return err
}

// deleteStream deletes the KEYREG stream (if it exists), trying for a while while
// JetStream does not answer.
func deleteStream(ctx context.Context, nc *nats.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var resp struct {
			Error   *jsAPIError `json:"error"`
			Success bool        `json:"success"`
		}
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := nc.RequestWithContext(rctx, "$JS.API.STREAM.DELETE."+events.StreamName, nil)
		rcancel()
		if err == nil {
			if err = json.Unmarshal(msg.Data, &resp); err == nil && resp.Error != nil {
				err = resp.Error
			}
		}
		if (err == nil && resp.Success) || (resp.Error != nil && resp.Error.ErrCode == jsStreamNotFound) {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// withMetadata returns a stream config (JSON) with metadata key set to value.
func withMetadata(cfg json.RawMessage, key, value string) (json.RawMessage, error) {
	var c map[string]json.RawMessage
	if err := json.Unmarshal(cfg, &c); err != nil {
		return nil, err
	}
	md := map[string]string{}
	if raw, ok := c["metadata"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &md); err != nil {
			return nil, err
		}
	}
	md[key] = value
	c["metadata"], _ = json.Marshal(md)
	return json.Marshal(c)
}
