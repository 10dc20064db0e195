package client_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// TestReadYourWrites: the client remembers the highest Keyreg-Sequence a write was
// answered with (or it was given) and sends it as Keyreg-Min-Sequence on its reads (GET,
// verify, audit export), never on writes; SetReadYourWrites(false) stops that; a read the
// server refuses with 400 naming the header (a sequence beyond its stream) is sent again
// without it, and the sequence is forgotten.
func TestReadYourWrites(t *testing.T) {
	var mu sync.Mutex
	var sent []string // "METHOD path min-seq" per request
	answerSeq := "0"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		min := r.Header.Get(wire.MinSequenceHeader)
		mu.Lock()
		sent = append(sent, r.Method+" "+r.URL.Path+" "+min)
		seq := answerSeq
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
		if min == "900" {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"status":400,"code":"invalid_input","field":"`+wire.MinSequenceHeader+`","value":"900","detail":"beyond the stream"}`)
			return
		}
		if r.Method != http.MethodGet && r.URL.Path != "/v1/verify" {
			w.Header().Set(wire.SequenceHeader, seq)
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"K1","version":1}`)
	}))
	t.Cleanup(srv.Close)
	c := client.New(srv.URL, "kr_token", nil)
	ctx := context.Background()
	step := func(seq string, f func() error) {
		t.Helper()
		mu.Lock()
		answerSeq = seq
		mu.Unlock()
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	step("", func() error { _, err := c.GetKey(ctx, "acme", "K1"); return err })
	step("42", func() error { _, err := c.RevokeKey(ctx, "acme", "K1", client.WriteOptions{}); return err })
	step("", func() error { _, err := c.GetKey(ctx, "acme", "K1"); return err })
	step("7", func() error { _, err := c.RevokeKey(ctx, "acme", "K1", client.WriteOptions{}); return err }) // lower: kept 42
	step("", func() error { _, err := c.Verify(ctx, "kr_x", "10.0.0.1", ""); return err })
	step("", func() error { _, err := c.AuditExport(ctx, "acme", client.AuditQuery{}, "", io.Discard); return err })
	c.SetReadYourWrites(false)
	step("", func() error { _, err := c.GetKey(ctx, "acme", "K1"); return err })
	c.SetReadYourWrites(true)
	c.ObserveSequence(900) // say, of a stream since restored from an older backup
	step("", func() error { _, err := c.GetKey(ctx, "acme", "K1"); return err })
	if c.Sequence() != 0 {
		t.Errorf("a sequence refused as beyond the stream is still remembered: %d", c.Sequence())
	}
	want := []string{
		"GET /v1/workspaces/acme/keys/K1 ",
		"DELETE /v1/workspaces/acme/keys/K1 ",
		"GET /v1/workspaces/acme/keys/K1 42",
		"DELETE /v1/workspaces/acme/keys/K1 ",
		"POST /v1/verify 42",
		"GET /v1/workspaces/acme/audit/export 42",
		"GET /v1/workspaces/acme/keys/K1 ",
		"GET /v1/workspaces/acme/keys/K1 900",
		"GET /v1/workspaces/acme/keys/K1 ",
	}
	if len(sent) != len(want) {
		t.Fatalf("requests:\n%q\nwant\n%q", sent, want)
	}
	for i := range want {
		if sent[i] != want[i] {
			t.Errorf("request %d: %q, want %q", i, sent[i], want[i])
		}
	}
}
