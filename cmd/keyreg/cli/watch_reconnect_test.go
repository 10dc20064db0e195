package cli

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// cutProxy forwards TCP connections to a backend that can change, and can cut every
// connection it holds: a network between keyreg watch and the server that drops.
type cutProxy struct {
	ln      net.Listener
	mu      sync.Mutex
	backend string
	down    bool // refuse (close at once) new connections
	conns   map[net.Conn]bool
}

func newCutProxy(t *testing.T, backend string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, backend: backend, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.cut(true) })
	go p.serve()
	return p
}

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		backend, down := p.backend, p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		s, err := net.DialTimeout("tcp", backend, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = true, true
		p.mu.Unlock()
		go func() { io.Copy(s, c); s.Close() }()
		go func() { io.Copy(c, s); c.Close() }()
	}
}

// cut closes every connection the proxy holds; down says whether new ones are refused
// from now on.
func (p *cutProxy) cut(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *cutProxy) setBackend(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backend = addr
}

// TestWatchReconnects holds "It reconnects by itself when the connection drops, after the
// last event printed": keyreg watch --json, through a connection that is cut (while
// changes are made) and a server that restarts (on another address behind the same
// one), prints every event of the workspace once, in order, and ends at --count.
func TestWatchReconnects(t *testing.T) {
	data := t.TempDir()
	srv := nodetest.Start(t, nodetest.Options{DataDir: data})
	h := harnessFor(srv)
	proxy := newCutProxy(t, srv.Addr)
	h.ok("workspace", "create", "acme", "--name", "Acme Inc")
	h.ok("key", "create", "-w", "acme", "--name", "k0")

	const total = 8 // the workspace, then seven keys
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr nodetest.SyncBuffer
	done := make(chan int, 1)
	env := map[string]string{"KEYREG_ADDR": "http://" + proxy.ln.Addr().String(), "KEYREG_TOKEN": h.env["KEYREG_TOKEN"]}
	go func() {
		done <- Run(ctx, []string{"watch", "-w", "acme", "--json", "--from-seq", "1", "--count", "8"},
			func(k string) string { return env[k] }, strings.NewReader(""), &stdout, &stderr)
	}()
	// waitFor waits (at most a minute) until cond holds on watch's stdout and stderr.
	waitFor := func(what string, cond func(out, errs string) bool) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); !cond(stdout.String(), stderr.String()); time.Sleep(10 * time.Millisecond) {
			select {
			case code := <-done:
				t.Fatalf("watch ended (exit %d) before %s: stdout %q stderr %q", code, what, stdout.String(), stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("watch: no %s within a minute: stdout %q stderr %q", what, stdout.String(), stderr.String())
			}
		}
	}
	lines := func(n int) func(string, string) bool {
		return func(out, _ string) bool { return strings.Count(out, "\n") >= n }
	}
	reconnecting := func(n int) func(string, string) bool {
		return func(_, errs string) bool { return strings.Count(errs, "reconnecting") >= n }
	}
	waitFor("the first two events", lines(2))

	// The connection drops and stays down while two keys are made.
	proxy.cut(true)
	waitFor("word of reconnecting", reconnecting(1))
	h.ok("key", "create", "-w", "acme", "--name", "k1")
	h.ok("key", "create", "-w", "acme", "--name", "k2")
	proxy.cut(false)
	waitFor("the events made while the connection was down", lines(4))

	// The server restarts, on another port behind the same address.
	before := strings.Count(stderr.String(), "reconnecting")
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor("word of reconnecting after the server stopped", reconnecting(before+1))
	srv2 := nodetest.Start(t, nodetest.Options{DataDir: data, Root: srv.Root})
	proxy.setBackend(srv2.Addr)
	h2 := harnessFor(srv2)
	for _, name := range []string{"k3", "k4", "k5", "k6"} {
		h2.ok("key", "create", "-w", "acme", "--name", name)
	}
	var code int
	select {
	case code = <-done:
	case <-ctx.Done():
		t.Fatalf("watch did not end at --count 8: stdout %q stderr %q", stdout.String(), stderr.String())
	}
	if code != 0 {
		t.Fatalf("watch: exit %d: %s", code, stderr.String())
	}

	var got []uint64
	for line := range strings.SplitSeq(strings.TrimSpace(stdout.String()), "\n") {
		var e wire.HistoryEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("watch --json line %q: %v", line, err)
		}
		got = append(got, e.Sequence)
	}
	want, _ := h2.watchJSON("--from-seq", "1", "--count", "8")
	if len(want) != total || !slices.Equal(got, want) {
		t.Fatalf("watch through a cut connection and a restart printed %v, want %v (each event of acme once, in order)", got, want)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("the test ran out of time")
	}
}
