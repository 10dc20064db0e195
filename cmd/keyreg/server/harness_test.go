package server_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/server"
)

// node is a keyreg node started by nodetest (in-process, or the real binary with no
// *server.Node), with the names the tests of this package use.
type node struct {
	t testing.TB
	*server.Node
	url     string
	dataDir string
	root    string // root secret, from the bootstrap file of the first start
	stderr  *nodetest.SyncBuffer
	h       *nodetest.Node
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer = nodetest.SyncBuffer

// wrap gives a node of nodetest the names of this package.
func wrap(h *nodetest.Node) *node {
	return &node{t: h.T, Node: h.Node, url: h.URL, dataDir: h.DataDir, root: h.Root, stderr: h.Output, h: h}
}

// startNode starts a node in-process on data (a fresh t.TempDir() when empty), with cfg
// changed by opts and no sealer (see withSealer), and stops it at the end of the test.
func startNode(t testing.TB, data string, opts ...func(*server.Config)) *node {
	t.Helper()
	return wrap(nodetest.Start(t, nodetest.Options{DataDir: data, Config: opts}))
}

func (n *node) waitReady() { n.t.Helper(); n.h.WaitReady() }

// stop shuts the node down (SIGTERM-like: ctx cancelled) and waits; calling it twice is
// harmless.
func (n *node) stop() {
	if err := n.h.Stop(); err != nil {
		n.t.Errorf("stop: %v", err)
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
	return n.h.Do(method, path, token, body, headers...)
}

// json sends a request, checks the status and decodes the answer into out (if not nil).
func (n *node) json(method, path, token string, body any, want int, out any, headers ...string) http.Header {
	n.t.Helper()
	return n.h.JSON(method, path, token, body, want, out, headers...)
}

// waitReadyURL waits until a server's /readyz answers 200: its views have caught up.
func waitReadyURL(t testing.TB, url string) {
	t.Helper()
	(&nodetest.Node{T: t, URL: url, HTTP: http.DefaultClient, Output: &nodetest.SyncBuffer{}}).WaitReady()
}

type problemBody struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Field  string `json:"field"`
	Value  string `json:"value"`
	Detail string `json:"detail"`
}

func ioNopCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }
