package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/server"
)

// node is a keyreg server started in-process on a data dir, listening on a free port.
type node struct {
	t testing.TB
	*server.Node
	url     string
	dataDir string
	root    string // root secret, from the bootstrap file of the first start
	stderr  *bytes.Buffer
	cancel  context.CancelFunc
	done    chan error
}

// startNode starts a node on data (a fresh t.TempDir() when empty), with cfg changed by
// opts, and stops it at the end of the test.
func startNode(t testing.TB, data string, opts ...func(*server.Config)) *node {
	t.Helper()
	if data == "" {
		data = t.TempDir()
	}
	keyFile := filepath.Join(t.TempDir(), "root.key")
	stderr := &bytes.Buffer{}
	cfg := server.Config{
		DataDir: data, HTTPAddr: "127.0.0.1:0", BootstrapKeyFile: keyFile, Stderr: stderr,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ShutdownTimeout: 5 * time.Second,
		SealEveryEvents: -1, SealInterval: -1, // no checkpoints appended behind a test's back (see withSealer)
	}
	for _, o := range opts {
		o(&cfg)
	}
	ready := make(chan string, 1)
	cfg.Ready = func(addr string) { ready <- addr }
	ctx, cancel := context.WithCancel(context.Background())
	n, err := server.Open(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	tn := &node{t: t, Node: n, dataDir: data, stderr: stderr, cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := n.Serve(ctx, cfg)
		n.Close()
		tn.done <- err
	}()
	select {
	case addr := <-ready:
		tn.url = "http://" + addr
	case err := <-tn.done:
		t.Fatalf("serve: %v", err)
	}
	if b, err := os.ReadFile(keyFile); err == nil {
		tn.root = strings.TrimSpace(string(b))
	}
	t.Cleanup(tn.stop)
	tn.waitReady()
	return tn
}

func (n *node) waitReady() {
	n.t.Helper()
	for i := 0; i < 500; i++ {
		if st, _, _ := n.do("GET", "/readyz", "", nil); st == 200 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.t.Fatal("node not ready after 5s")
}

// stop shuts the node down (SIGTERM-like: ctx cancelled) and waits; calling it twice is
// harmless.
func (n *node) stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	n.cancel = nil
	if err := <-n.done; err != nil {
		n.t.Errorf("serve returned %v", err)
	}
}

func (n *node) lastSeq() uint64 {
	n.t.Helper()
	seq, err := n.Log.LastSeq(context.Background())
	if err != nil {
		n.t.Fatal(err)
	}
	return seq
}

// do sends a request; body may be nil, a string or []byte (sent as is), or a value
// encoded as JSON. headers come in name, value pairs.
func (n *node) do(method, path, token string, body any, headers ...string) (int, http.Header, []byte) {
	n.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			n.t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, n.url+path, r)
	if err != nil {
		n.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		n.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, out
}

// json sends a request, checks the status and decodes the answer into out (if not nil).
func (n *node) json(method, path, token string, body any, want int, out any, headers ...string) http.Header {
	n.t.Helper()
	st, h, b := n.do(method, path, token, body, headers...)
	if st != want {
		n.t.Fatalf("%s %s: status %d, want %d: %s", method, path, st, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			n.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return h
}

type problemBody struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Field  string `json:"field"`
	Value  string `json:"value"`
	Detail string `json:"detail"`
}

func ioNopCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }
