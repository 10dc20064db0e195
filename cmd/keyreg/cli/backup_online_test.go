package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsd "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog"
)

// TestOnlineBackupDuringWrites takes an online backup (keyreg backup --addr, the real
// binary) of a keyreg serve process while 8 writers keep changing keys, restores it
// (keyreg restore) into a new data dir and serves it: the restored stream is the source's,
// event for event with the same sequences, up to at least the backup's sequence; its views
// answer every key with the same JSON as the source's log folded at that sequence, and
// keyreg replay --verify finds them equal to a rebuild. The backup holds neither the audit
// signing key nor the root secret. The offline backup still works once the source stops.
func TestOnlineBackupDuringWrites(t *testing.T) {
	src := nodetest.StartBinaryWith(t, nodetest.BinaryOptions{Seal: true}) // checkpoints sealed while it writes, too
	src.JSON("POST", "/v1/workspaces", src.Root, map[string]any{"id": "acme", "name": "Acme"}, 201, nil)

	// 8 writers create keys and rename each, until stopped.
	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var k wire.KeyWithSecret
				if err := write(src, "POST", "/v1/workspaces/acme/keys", map[string]any{"name": fmt.Sprintf("w%d-%d", w, i)}, &k); err != nil {
					t.Error(err)
					return
				}
				acked.Add(1)
				if err := write(src, "PATCH", "/v1/workspaces/acme/keys/"+k.Key.ID, map[string]any{"name": fmt.Sprintf("w%d-%d renamed", w, i)}, nil); err != nil {
					t.Error(err)
					return
				}
				acked.Add(1)
			}
		}()
	}
	stopWriters := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	t.Cleanup(stopWriters)
	waitAcked(t, &acked, 100)

	// An audit export sealed by the source before the backup.
	early := filepath.Join(t.TempDir(), "early.jsonl")
	if r := runKeyreg(t, "audit", "export", "-w", "acme", "-o", early, "--addr", src.URL, "--token", src.Root); r.code != 0 {
		t.Fatalf("audit export: exit %d: %s", r.code, r.stderr)
	}

	bak := filepath.Join(t.TempDir(), "bak")
	before := acked.Load()
	r := runKeyreg(t, "backup", "--addr", src.URL, "--token", src.Root, "--to", bak)
	during := acked.Load() - before
	if r.code != 0 {
		t.Fatalf("keyreg backup --addr: exit %d: %s", r.code, r.stderr)
	}
	contains(t, "backup", r.stdout, "Backed up "+src.URL+" online to "+bak, "the stream up to sequence")
	waitAcked(t, &acked, acked.Load()+100) // the source goes on beyond the backup
	stopWriters()
	if t.Failed() {
		return
	}
	t.Logf("%d changes acknowledged while the backup ran, %d in all", during, acked.Load())

	var m server.Manifest
	b, err := os.ReadFile(filepath.Join(bak, server.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.Format != server.OnlineFormat || m.ViewsSeq == 0 || m.ViewsSeq > m.StreamSeq || m.Generation == "" {
		t.Fatalf("manifest: %s", b)
	}
	checkNoSecrets(t, bak, src)

	restored := filepath.Join(t.TempDir(), "restored")
	r = runKeyreg(t, "restore", "--from", bak, "--data", restored)
	if r.code != 0 {
		t.Fatalf("keyreg restore: exit %d: %s", r.code, r.stderr)
	}
	contains(t, "restore", r.stdout, "Restored", fmt.Sprintf("up to sequence %d", m.StreamSeq), "audit", "verifier.key")
	// The cut: where the restored stream ends, before a node serves it (and appends to it:
	// its own audit signer, for one).
	cut, _ := readStream(t, restored, 0)
	if cut < m.StreamSeq {
		t.Fatalf("the restored stream ends at %d, before the backup's stream sequence %d", cut, m.StreamSeq)
	}
	dst := nodetest.StartBinaryWith(t, nodetest.BinaryOptions{DataDir: restored, Root: src.Root})
	// The views start from the backup's checkpoint, not from nothing.
	// (The "views opened" line is written before the projector starts; "keyreg serving",
	// after, may already show a later checkpoint.)
	if want := fmt.Sprintf(`msg="views opened" generation=%s checkpoint=%d `, m.Generation, m.ViewsSeq); !strings.Contains(dst.Output.String(), want) {
		t.Fatalf("the restored node did not start from the views of the backup (%s):\n%s", want, dst.Output.String())
	}

	// Views: every key, as the restored node answers it now (what it appended since holds
	// no key of acme) and as the source's log folded at the cut answers it.
	got := listKeys(t, dst, "")
	want := listKeys(t, src, fmt.Sprintf("&as_of=%d", cut))
	if len(got) == 0 || len(got) != len(want) {
		t.Fatalf("the restored registry lists %d keys, the source %d at sequence %d", len(got), len(want), cut)
	}
	for id, w := range want {
		if !bytes.Equal(got[id], w) {
			t.Fatalf("key %s differs:\nrestored %s\nsource   %s", id, got[id], w)
		}
	}
	// Audit: the restored registry signs with a key of its own, recorded in its log beside
	// the source's; the key set it publishes verifies the export sealed by the source
	// before the backup, and one it seals itself.
	keys := filepath.Join(t.TempDir(), "keys")
	r = runKeyreg(t, "audit", "pubkey", "--all", "--addr", dst.URL)
	if r.code != 0 || os.WriteFile(keys, []byte(r.stdout), 0o600) != nil {
		t.Fatalf("audit pubkey: exit %d: %s", r.code, r.stderr)
	}
	n := 0
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(line, "keyreg+") {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("the restored registry publishes %d keys, want the source's and its own:\n%s", n, r.stdout)
	}
	late := filepath.Join(t.TempDir(), "late.jsonl")
	if r := runKeyreg(t, "audit", "export", "-w", "acme", "-o", late, "--addr", dst.URL, "--token", src.Root); r.code != 0 {
		t.Fatalf("audit export of the restored registry: exit %d: %s", r.code, r.stderr)
	}
	for _, f := range []string{early, late} {
		if r := runKeyreg(t, "audit", "verify", f, "--pubkey", "@"+keys); r.code != 0 {
			t.Fatalf("audit verify %s with the restored registry's keys: exit %d: %s%s", filepath.Base(f), r.code, r.stdout, r.stderr)
		}
	}
	if err := dst.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := src.Stop(); err != nil {
		t.Fatal(err)
	}

	// History: every event of the restored stream is the source's, at the same sequence.
	srcLast, srcRecs := readStream(t, src.DataDir, cut)
	dstLast, dstRecs := readStream(t, restored, cut)
	if uint64(len(dstRecs)) != cut || srcLast <= cut {
		t.Fatalf("restored stream ends at %d (%d events read up to the cut %d); the source at %d", dstLast, len(dstRecs), cut, srcLast)
	}
	for i := range dstRecs {
		s, d := srcRecs[i], dstRecs[i]
		if s.Seq != d.Seq || s.Subject != d.Subject || s.MsgID != d.MsgID || !s.Time.Equal(d.Time) || !bytes.Equal(s.Data, d.Data) {
			t.Fatalf("event %d differs:\nrestored %+v\nsource   %+v", i+1, d, s)
		}
	}
	contains(t, "replay --verify", runKeyreg(t, "replay", "--data", restored, "--verify").stdout, fmt.Sprintf("The views match the log (checkpoint %d)", dstLast))

	// The offline backup of the stopped source still works, and restores.
	off := filepath.Join(t.TempDir(), "offline")
	r = runKeyreg(t, "backup", "--data", src.DataDir, "--to", off)
	if r.code != 0 {
		t.Fatalf("offline backup: exit %d: %s", r.code, r.stderr)
	}
	contains(t, "offline backup", r.stdout, "Backed up "+src.DataDir)
	offRestored := filepath.Join(t.TempDir(), "off-restored")
	if r := runKeyreg(t, "restore", "--from", off, "--data", offRestored); r.code != 0 {
		t.Fatalf("offline restore: exit %d: %s", r.code, r.stderr)
	}
	if last, _ := readStream(t, offRestored, 0); last != srcLast {
		t.Fatalf("the offline backup's stream ends at %d, the source's at %d", last, srcLast)
	}
}

// TestOnlineBackupBadInput: a non-empty or impossible --to, a token without keyreg.admin
// (403, over HTTP too), --addr with --data, and a damaged or cut backup each fail with a
// clear message and leave nothing behind.
func TestOnlineBackupBadInput(t *testing.T) {
	src := nodetest.StartBinary(t)
	src.JSON("POST", "/v1/workspaces", src.Root, map[string]any{"id": "acme", "name": "Acme"}, 201, nil)
	var k wire.KeyWithSecret
	src.JSON("POST", "/v1/workspaces/acme/keys", src.Root, map[string]any{"name": "reader"}, 201, &k)

	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "x"), []byte("x"), 0o600)
	checkFails(t, runKeyreg(t, "backup", "--addr", src.URL, "--token", src.Root, "--to", full), 1, "--to "+full+" is not empty")
	file := filepath.Join(full, "x")
	checkFails(t, runKeyreg(t, "backup", "--addr", src.URL, "--token", src.Root, "--to", filepath.Join(file, "bak")), 1, "--to "+filepath.Join(file, "bak"))
	newDir := filepath.Join(t.TempDir(), "bak")
	checkFails(t, runKeyreg(t, "backup", "--addr", src.URL, "--token", k.Secret, "--to", newDir), 1, "403", "keyreg.admin")
	if _, err := os.Stat(newDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused backup left %s behind: %v", newDir, err)
	}
	checkFails(t, runKeyreg(t, "backup", "--addr", src.URL, "--data", t.TempDir(), "--to", newDir), 2, "not both")
	st, h, body := src.Do("GET", "/v1/admin/backup", k.Secret, nil)
	if st != 403 || !strings.HasPrefix(h.Get("Content-Type"), "application/problem+json") {
		t.Fatalf("GET /v1/admin/backup without keyreg.admin: %d %s %s", st, h.Get("Content-Type"), body)
	}

	// A backup cut short is refused whole, and nothing of it is kept.
	st, h, tarball := src.Do("GET", "/v1/admin/backup", src.Root, nil)
	if st != 200 || h.Get("Content-Type") != "application/x-tar" {
		t.Fatalf("GET /v1/admin/backup: %d %s", st, h.Get("Content-Type"))
	}
	for _, n := range []int{bytes.LastIndex(tarball, []byte(`"files"`)), len(tarball) / 2} {
		cut := filepath.Join(t.TempDir(), "cut")
		_, err := server.Unpack(bytes.NewReader(tarball[:n]), cut)
		if err == nil || !strings.Contains(err.Error(), "nothing was kept") {
			t.Fatalf("unpack of %d of %d bytes: %v", n, len(tarball), err)
		}
		if entries, _ := os.ReadDir(cut); len(entries) != 0 {
			t.Fatalf("a cut backup left %d entries in %s", len(entries), cut)
		}
	}

	// A damaged backup is refused by restore, which leaves an empty data dir.
	bak := filepath.Join(t.TempDir(), "bak")
	if _, err := server.Unpack(bytes.NewReader(tarball), bak); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(bak, "stream", events.StreamName+".snapshot")
	b, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	os.WriteFile(snap, b, 0o600)
	into := filepath.Join(t.TempDir(), "restored")
	checkFails(t, runKeyreg(t, "restore", "--from", bak, "--data", into), 1, "does not match the manifest")
	if entries, _ := os.ReadDir(into); len(entries) > 1 { // LOCK
		t.Fatalf("a refused restore left %d entries in %s", len(entries), into)
	}
}

// write sends a write to n (not from the test's goroutine: it returns errors) and decodes
// the answer into out (if not nil).
func write(n *nodetest.Node, method, path string, body, out any) error {
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, n.URL+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+n.Root)
	resp, err := n.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// waitAcked waits until the writers have had n changes acknowledged (or failed).
func waitAcked(t *testing.T, acked *atomic.Int64, n int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for acked.Load() < n && !t.Failed() {
		select {
		case <-ctx.Done():
			t.Fatalf("only %d of %d changes acknowledged", acked.Load(), n)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// runKeyreg runs the real binary with args, without the environment's KEYREG_ variables.
func runKeyreg(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodetest.Binary(t), args...)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "KEYREG_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("keyreg %s: %v", strings.Join(args, " "), err)
	}
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// checkFails checks r exited with code and a one-line error holding every one of want.
func checkFails(t *testing.T, r result, code int, want ...string) {
	t.Helper()
	if r.code != code || !strings.HasPrefix(r.stderr, "keyreg: ") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("exit %d, want %d; stderr %q", r.code, code, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr %q lacks %q", r.stderr, w)
		}
	}
}

// checkNoSecrets fails if a file of the backup in dir holds the source's audit signing key
// or root secret, or is named after the signing key. (The stream snapshot is compressed,
// but the stream never holds a secret.)
func checkNoSecrets(t *testing.T, dir string, src *nodetest.Node) {
	t.Helper()
	signing, err := os.ReadFile(filepath.Join(src.DataDir, "audit", "signing.key"))
	if err != nil || len(bytes.TrimSpace(signing)) == 0 {
		t.Fatalf("the source's signing key: %v", err)
	}
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(path)
		if strings.Contains(d.Name(), "signing") || bytes.Contains(b, bytes.TrimSpace(signing)) || bytes.Contains(b, []byte(src.Root)) {
			t.Errorf("the backup's %s holds a secret", path)
		}
		return nil
	})
}

// listKeys returns the JSON of every key of acme by id, as n lists them (query is added to
// each page's URL).
func listKeys(t *testing.T, n *nodetest.Node, query string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for after, pages := "", 0; pages == 0 || after != ""; pages++ {
		var list struct {
			Keys []json.RawMessage
			Next string
		}
		n.JSON("GET", "/v1/workspaces/acme/keys?limit=500&after="+after+query, n.Root, nil, 200, &list)
		for _, k := range list.Keys {
			var id struct{ ID string }
			if err := json.Unmarshal(k, &id); err != nil {
				t.Fatal(err)
			}
			out[id.ID] = k
		}
		after = list.Next
	}
	return out
}

// readStream opens the stream of a stopped node's data dir and returns its last sequence
// and its records up to seq.
func readStream(t *testing.T, dataDir string, upTo uint64) (uint64, []events.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := server.OpenStream(ctx, server.Config{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	last, err := s.Log.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var recs []events.Record
	for seq := uint64(1); seq <= min(upTo, last); seq++ {
		r, err := s.Log.Get(ctx, seq)
		if err != nil {
			t.Fatalf("%s: event %d: %v", dataDir, seq, err)
		}
		recs = append(recs, r)
	}
	return last, recs
}

// TestOnlineBackupRestoreIntoNATS restores an online backup's stream into an existing NATS
// server (keyreg restore --nats-url, as for a cluster that keyreg serve --nats-url uses)
// and the views into a data dir: keyreg serve --nats-url on them answers every key as the
// source does, and the stream there is the source's, event for event.
func TestOnlineBackupRestoreIntoNATS(t *testing.T) {
	src := nodetest.StartBinaryWith(t, nodetest.BinaryOptions{Seal: true})
	src.JSON("POST", "/v1/workspaces", src.Root, map[string]any{"id": "acme", "name": "Acme"}, 201, nil)
	for i := range 20 {
		src.JSON("POST", "/v1/workspaces/acme/keys", src.Root, map[string]any{"name": fmt.Sprintf("k%d", i)}, 201, nil)
	}
	bak := filepath.Join(t.TempDir(), "bak")
	if r := runKeyreg(t, "backup", "--addr", src.URL, "--token", src.Root, "--to", bak); r.code != 0 {
		t.Fatalf("keyreg backup: exit %d: %s", r.code, r.stderr)
	}
	want := listKeys(t, src, "")
	if err := src.Stop(); err != nil {
		t.Fatal(err)
	}
	srcLast, srcRecs := readStream(t, src.DataDir, 1<<62)

	ns, err := natsd.NewServer(&natsd.Options{Host: "127.0.0.1", Port: natsd.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	url := ns.ClientURL()

	views := filepath.Join(t.TempDir(), "views")
	checkFails(t, runKeyreg(t, "restore", "--from", bak, "--data", views, "--replicas", "1"), 2, "--replicas needs --nats-url")
	r := runKeyreg(t, "restore", "--from", bak, "--data", views, "--nats-url", url, "--replicas", "1")
	if r.code != 0 {
		t.Fatalf("keyreg restore --nats-url: exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(views, "nats")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("restore --nats-url made an embedded stream in the data dir: %v", err)
	}
	// The stream exists there now: a second restore is refused, and leaves its data dir empty.
	again := filepath.Join(t.TempDir(), "again")
	checkFails(t, runKeyreg(t, "restore", "--from", bak, "--data", again, "--nats-url", url, "--replicas", "1"), 1, "restore stream KEYREG")

	dst := nodetest.StartBinaryWith(t, nodetest.BinaryOptions{DataDir: views, Root: src.Root, Args: []string{"--nats-url", url, "--replicas", "1"}})
	var m server.Manifest
	if b, err := os.ReadFile(filepath.Join(bak, server.ManifestFile)); err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("manifest: %v", err)
	}
	// (The "views opened" line is written before the projector starts; "keyreg serving",
	// after, may already show a later checkpoint.)
	if want := fmt.Sprintf(`msg="views opened" generation=%s checkpoint=%d `, m.Generation, m.ViewsSeq); !strings.Contains(dst.Output.String(), want) {
		t.Fatalf("the restored node did not start from the views of the backup (%s):\n%s", want, dst.Output.String())
	}
	got := listKeys(t, dst, "")
	if len(got) != len(want) || len(got) != 20 {
		t.Fatalf("restored %d keys, the source has %d", len(got), len(want))
	}
	for id, w := range want {
		if !bytes.Equal(got[id], w) {
			t.Fatalf("key %s differs:\nrestored %s\nsource   %s", id, got[id], w)
		}
	}
	if err := dst.Stop(); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log, err := natslog.Open(ctx, nc, natslog.Options{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range srcRecs {
		d, err := log.Get(ctx, s.Seq)
		if err != nil {
			t.Fatalf("event %d: %v", s.Seq, err)
		}
		if s.Subject != d.Subject || s.MsgID != d.MsgID || !s.Time.Equal(d.Time) || !bytes.Equal(s.Data, d.Data) {
			t.Fatalf("event %d differs:\nrestored %+v\nsource   %+v", s.Seq, d, s)
		}
	}
	if last, err := log.LastSeq(ctx); err != nil || last < srcLast {
		t.Fatalf("the restored stream ends at %d (%v), the source at %d", last, err, srcLast)
	}
}
