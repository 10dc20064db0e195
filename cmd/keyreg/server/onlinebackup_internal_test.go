package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
)

// TestBackupOneAtATime: while a backup runs, another is refused (409 over HTTP), and the
// staging directory a crashed backup left in the data dir is removed by the next one.
func TestBackupOneAtATime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "root.key")
	cfg := Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", BootstrapKeyFile: keyFile,
		Stderr: io.Discard, Logger: slog.New(slog.DiscardHandler), SealEveryEvents: -1, SealInterval: -1}
	n, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- n.Serve(sctx, cfg) }()
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	for !n.caught.Load() {
		select {
		case <-ctx.Done():
			t.Fatal("the views did not catch up")
		case <-time.After(10 * time.Millisecond):
		}
	}
	root, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	backup := func() *httptest.ResponseRecorder {
		req := httptest.NewRequestWithContext(ctx, "GET", "/v1/admin/backup", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(root)))
		rec := httptest.NewRecorder()
		n.API().ServeHTTP(rec, req)
		return rec
	}

	n.backupMu.Lock()
	if _, err := n.Backup(ctx, io.Discard); !errors.Is(err, httpapi.ErrBackupRunning) {
		t.Fatalf("a second backup: %v", err)
	}
	if rec := backup(); rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), "already running") {
		t.Fatalf("a second backup over HTTP: %d %s", rec.Code, rec.Body)
	}
	n.backupMu.Unlock()

	stale := filepath.Join(dir, "backup-1234")
	if err := os.MkdirAll(filepath.Join(stale, "views"), 0o700); err != nil {
		t.Fatal(err)
	}
	rec := backup()
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/x-tar" {
		t.Fatalf("backup: %d %s", rec.Code, rec.Body)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the stale staging directory is still there: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "backup-*")); len(left) > 0 {
		t.Fatalf("the backup left %v behind", left)
	}
	m, err := Unpack(rec.Body, filepath.Join(t.TempDir(), "bak"))
	if err != nil {
		t.Fatal(err)
	}
	if m.StreamSeq == 0 || m.ViewsSeq > m.StreamSeq {
		t.Fatalf("manifest: stream %d views %d", m.StreamSeq, m.ViewsSeq)
	}
}
