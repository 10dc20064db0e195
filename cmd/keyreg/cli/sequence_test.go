package cli

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// seqProxy is a reverse proxy in front of a real node that records, per request, the
// Keyreg-Min-Sequence it carried.
type seqProxy struct {
	mu   sync.Mutex
	sent []string // "METHOD path min-seq"
}

func (p *seqProxy) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.sent
	p.sent = nil
	return s
}

// TestSequenceCarriedBetweenRuns: a write's --json output holds the sequence it reached;
// the next invocation to that address sends it with its reads (and --min-seq N sends N);
// the file that keeps it is mode 0600 and holds no secret; a kept sequence the server
// refuses as beyond its stream (a server started anew on the address) is dropped and the
// read still answers.
func TestSequenceCarriedBetweenRuns(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	target, _ := url.Parse(n.URL)
	p := &seqProxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.sent = append(p.sent, r.Method+" "+r.URL.Path+" "+r.Header.Get(wire.MinSequenceHeader))
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	cache := t.TempDir()
	h := &harness{t: t, env: map[string]string{"KEYREG_ADDR": srv.URL, "KEYREG_TOKEN": n.Root, "KEYREG_CACHE_DIR": cache}}

	var ws struct {
		ID       string `json:"id"`
		Sequence uint64 `json:"sequence"`
	}
	h.okJSON(&ws, "workspace", "create", "acme", "--name", "Acme")
	if ws.ID != "acme" || ws.Sequence == 0 {
		t.Fatalf("workspace create --json: %+v, want the sequence", ws)
	}
	p.take()
	h.ok("key", "list", "-w", "acme")
	if got, want := p.take(), []string{"GET /v1/workspaces/acme/keys " + strconv.FormatUint(ws.Sequence, 10)}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("a read after the write sent %q, want %q", got, want)
	}

	var k struct {
		Secret   string              `json:"secret"`
		Key      struct{ ID string } `json:"key"`
		Sequence uint64              `json:"sequence"`
	}
	h.okJSON(&k, "key", "create", "-w", "acme", "--name", "ci")
	if k.Sequence <= ws.Sequence || k.Secret == "" {
		t.Fatalf("key create --json: sequence %d after %d", k.Sequence, ws.Sequence)
	}
	p.take()
	h.ok("key", "show", "-w", "acme", k.Key.ID)
	h.ok("key", "show", "-w", "acme", k.Key.ID, "--min-seq", "1")
	want := []string{"GET /v1/workspaces/acme/keys/" + k.Key.ID + " " + strconv.FormatUint(k.Sequence, 10),
		"GET /v1/workspaces/acme/keys/" + k.Key.ID + " 1"}
	if got := p.take(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("reads sent %q, want %q", got, want)
	}

	file := filepath.Join(cache, seqFile)
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the sequence file: %v %v, want mode 0600", fi, err)
	}
	b, _ := os.ReadFile(file)
	if strings.Contains(string(b), k.Secret) || strings.Contains(string(b), n.Root) || strings.Contains(string(b), "kr_") {
		t.Fatalf("the sequence file holds a secret: %s", b)
	}

	// A server started anew on the address: its stream ends far below the kept sequence.
	os.WriteFile(file, []byte(`{"`+srv.URL+`":{"seq":999999,"at":"`+time.Now().UTC().Format(time.RFC3339)+`"}}`), 0o600)
	h.ok("key", "show", "-w", "acme", k.Key.ID)
	if got := p.take(); len(got) != 2 || !strings.HasSuffix(got[0], " 999999") || !strings.HasSuffix(got[1], k.Key.ID+" ") {
		t.Fatalf("a read with a kept sequence beyond the stream sent %q, want it refused, then sent without", got)
	}
	h.ok("key", "show", "-w", "acme", k.Key.ID)
	if got := p.take(); len(got) != 1 || !strings.HasSuffix(got[0], k.Key.ID+" ") {
		t.Fatalf("the refused sequence is still kept: %q", got)
	}
}
