// Package nodetest starts keyreg nodes for tests: in-process (Start, with the node's parts
// at hand) or as the real binary (StartBinary, a `keyreg serve` process). Both listen on
// 127.0.0.1 on a port chosen at run time, wait until the views serve (/readyz), and stop
// at the end of the test. The cli and server tests share it.
package nodetest

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/server"
)

// Deadlines of the harness's waits.
const (
	StartTimeout = 60 * time.Second // from start to serving and ready
	StopTimeout  = 60 * time.Second // from SIGTERM (or ctx cancelled) to the end
)

// Node is a keyreg node started by Start or StartBinary, and a client of its HTTP API.
type Node struct {
	T            testing.TB
	*server.Node              // the in-process node's parts; nil for a binary
	URL          string       // http://host:port (https:// for a binary with TLS)
	Addr         string       // the HTTP listener's host:port
	DataDir      string       // "" for a read-only node with no data dir
	Root         string       // the root secret, from the bootstrap key file of the first start
	Output       *SyncBuffer  // what the node printed: stderr in-process; stdout and stderr of a binary
	HTTP         *http.Client // trusts the certificate of a TLS binary
	Pid          int          // the binary's process id; 0 in-process

	stopOnce sync.Once
	stopErr  error
	stopFn   func(os.Signal) error
}

// Options changes how Start runs a node.
type Options struct {
	DataDir string // "" for a fresh t.TempDir()
	// Root is the root secret when DataDir was initialised before (a later start writes
	// no bootstrap key file).
	Root string
	// Seal runs the checkpoint sealer at its defaults; without it no checkpoint is
	// appended behind a test's back (exports still seal what they need).
	Seal bool
	// TLS trusts the TLSCertFile a Config sets: the node speaks HTTPS.
	TLS *x509.CertPool
	// Config changes the config last (nil ones are skipped). A read-only config is not
	// waited for: its views never report ready.
	Config []func(*server.Config)
}

// Start starts a node in-process (server.Open then Serve) as o says, waits until its
// views serve, and stops it at the end of the test. Its stderr (the root secret of a first
// start) is in Output; its log is discarded.
func Start(t testing.TB, o Options) *Node {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	keyFile := filepath.Join(t.TempDir(), "root.key")
	out := &SyncBuffer{}
	cfg := server.Config{
		DataDir: o.DataDir, HTTPAddr: "127.0.0.1:0", BootstrapKeyFile: keyFile, Stderr: out,
		Logger: slog.New(slog.DiscardHandler), ShutdownTimeout: 5 * time.Second,
	}
	if !o.Seal {
		cfg.SealEveryEvents, cfg.SealInterval = -1, -1
	}
	for _, f := range o.Config {
		if f != nil {
			f(&cfg)
		}
	}
	if cfg.ReadOnly {
		o.DataDir = ""
	}
	ready := make(chan string, 1)
	cfg.Ready = func(addr string) { ready <- addr }
	ctx, cancel := context.WithCancel(context.Background())
	nd, err := server.Open(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		err := nd.Serve(ctx, cfg)
		nd.Close()
		done <- err
	}()
	n := &Node{T: t, Node: nd, DataDir: o.DataDir, Output: out, HTTP: httpClient(o.TLS)}
	n.stopFn = func(os.Signal) error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(StopTimeout):
			return errors.New("the node did not stop within " + StopTimeout.String())
		}
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Errorf("stop the node: %v", err)
		}
	})
	select {
	case n.Addr = <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(StartTimeout):
		t.Fatalf("the node did not serve within %s", StartTimeout)
	}
	n.URL = "http://" + n.Addr
	if o.TLS != nil {
		n.URL = "https://" + n.Addr
	}
	n.Root = o.Root
	if b, err := os.ReadFile(keyFile); err == nil {
		n.Root = strings.TrimSpace(string(b))
	}
	if !cfg.ReadOnly {
		n.WaitReady()
	}
	return n
}

// Stop stops the node (in-process: its context cancelled; a binary: SIGTERM) and waits
// for it to end, at most StopTimeout; it returns how it ended (a binary's non-zero exit is
// an error). Calling it again returns the same.
func (n *Node) Stop() error { return n.StopWith(syscall.SIGTERM) }

// StopWith is Stop with the signal sent to a binary.
func (n *Node) StopWith(sig os.Signal) error {
	n.stopOnce.Do(func() { n.stopErr = n.stopFn(sig) })
	return n.stopErr
}

// WaitReady waits until the node answers /readyz with 200 (its views have caught up with
// the stream), at most StartTimeout.
func (n *Node) WaitReady() {
	n.T.Helper()
	deadline := time.Now().Add(StartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", n.URL+"/readyz", nil)
		resp, err := n.HTTP.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		if err == nil && resp.StatusCode == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			n.T.Fatalf("%s not ready within %s (%v): %s", n.URL, StartTimeout, err, n.Output.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Do sends a request to the node and returns the answer's status, headers and body. body
// may be nil, a string or []byte (sent as is), or a value sent as JSON; headers come in
// name, value pairs.
func (n *Node) Do(method, path, token string, body any, headers ...string) (int, http.Header, []byte) {
	n.T.Helper()
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
			n.T.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, n.URL+path, r)
	if err != nil {
		n.T.Fatal(err)
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
	resp, err := n.HTTP.Do(req)
	if err != nil {
		n.T.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		n.T.Fatal(err)
	}
	return resp.StatusCode, resp.Header, out
}

// JSON sends a request as Do does, fails the test unless the status is want, and decodes
// the answer into out (if not nil). It returns the answer's headers.
func (n *Node) JSON(method, path, token string, body any, want int, out any, headers ...string) http.Header {
	n.T.Helper()
	st, h, b := n.Do(method, path, token, body, headers...)
	if st != want {
		n.T.Fatalf("%s %s: status %d, want %d: %s", method, path, st, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			n.T.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return h
}

// SyncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
