package nodetest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// built is a program go build made once per test binary: its path, or the build's error.
type built struct {
	once sync.Once
	path string
	err  error
}

// get builds pkg (a package path, or a directory) with go build, run in the module's
// root, into a new temporary directory as name, the first time; then returns that path.
func (b *built) get(t testing.TB, pkg, name string) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "keyreg-"+name+"-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		_, here, _, _ := runtime.Caller(0) // cmd/keyreg/internal/nodetest/binary.go
		cmd := exec.Command("go", "build", "-o", b.path, pkg)
		cmd.Dir = filepath.Join(filepath.Dir(here), "..", "..", "..", "..") // the module's root
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

var keyregBinary built

// Binary builds the real keyreg binary once per test run and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	return keyregBinary.get(t, "./cmd/keyreg", "keyreg")
}

// BinaryOptions changes how StartBinaryWith runs `keyreg serve`.
type BinaryOptions struct {
	DataDir string // "" for a fresh t.TempDir()
	// Root is the root secret when DataDir was initialised before (a later start writes
	// no bootstrap key file).
	Root string
	// Args are more flags for serve; later ones win over the defaults (--data,
	// --http 127.0.0.1:0, --nats-listen "", --bootstrap-key-file, and sealing off).
	Args []string
	// Seal leaves the checkpoint sealer at its defaults.
	Seal bool
	// TLS trusts the --tls-cert given in Args: the node speaks HTTPS.
	TLS *x509.CertPool
}

// StartBinary runs `keyreg serve` on a fresh data dir with args added to the defaults of
// StartBinaryWith, and waits until it is ready.
func StartBinary(t testing.TB, args ...string) *Node {
	t.Helper()
	return StartBinaryWith(t, BinaryOptions{Args: args})
}

// StartBinaryWith runs `keyreg serve` (the real binary) as o says and waits until it is
// ready. Stop sends it SIGTERM; at the end of the test it is stopped so, and a non-zero
// exit or one that takes longer than StopTimeout fails the test.
func StartBinaryWith(t testing.TB, o BinaryOptions) *Node {
	t.Helper()
	bin := Binary(t)
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	keyFile := filepath.Join(t.TempDir(), "root.key")
	args := []string{"serve", "--data", o.DataDir, "--http", "127.0.0.1:0", "--nats-listen", "", "--bootstrap-key-file", keyFile}
	if !o.Seal {
		args = append(args, "--seal-every-events", "-1", "--seal-interval", "-1s")
	}
	out := &SyncBuffer{}
	cmd := exec.Command(bin, append(args, o.Args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()

	n := &Node{T: t, DataDir: o.DataDir, Output: out, HTTP: httpClient(o.TLS), Pid: cmd.Process.Pid}
	n.stopFn = func(sig os.Signal) error {
		cmd.Process.Signal(sig)
		select {
		case <-exited:
			return waitErr
		case <-time.After(StopTimeout):
			cmd.Process.Kill()
			<-exited
			return errors.New("keyreg serve did not stop within " + StopTimeout.String() + " of " + sig.String())
		}
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Errorf("keyreg serve after SIGTERM: %v\n%s", err, out.String())
		}
	})
	n.Addr = waitAddr(t, out, exited)
	n.URL = "http://" + n.Addr
	if o.TLS != nil {
		n.URL = "https://" + n.Addr
	}
	n.WaitReady()
	n.Root = o.Root
	if b, err := os.ReadFile(keyFile); err == nil {
		n.Root = strings.TrimSpace(string(b))
	}
	return n
}

// httpClient returns the client for a node: the default one, or one trusting roots.
func httpClient(roots *x509.CertPool) *http.Client {
	if roots == nil {
		return http.DefaultClient
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
}

// waitAddr waits until the binary logs the address it serves on (`http=host:port`).
func waitAddr(t testing.TB, out *SyncBuffer, exited <-chan struct{}) string {
	t.Helper()
	deadline := time.After(StartTimeout)
	for {
		if _, after, ok := strings.Cut(out.String(), "http="); ok {
			addr, _, _ := strings.Cut(after, " ")
			return strings.TrimSpace(addr)
		}
		select {
		case <-exited:
			t.Fatalf("keyreg serve ended before it served: %s", out.String())
		case <-deadline:
			t.Fatalf("keyreg serve did not serve within %s: %s", StartTimeout, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
