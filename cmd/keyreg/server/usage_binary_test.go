package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// usageInterval is the --usage-flush-interval of the usage tests: short, so that a use
// shows within a test's time.
const usageInterval = 200 * time.Millisecond

// TestKeyUsageBinary, on the real binary: a key verified three times (and once from an
// address its allowlist refuses) shows last_used_at and last_used_ip once the node has
// flushed, GET .../usage?days=1 counts 3 VALID and 1 IP_NOT_ALLOWED, the verifies
// appended nothing to the stream (the next write gets the sequence after the key's),
// every verify answer carries applied_seq = the sequence of the last write, a bad days
// is a problem naming the field, keyreg key show and key list show the use, and after a
// restart the use is still there and new verifies add to it.
func TestKeyUsageBinary(t *testing.T) {
	args := []string{"--usage-flush-interval", usageInterval.String()}
	n := nodetest.StartBinary(t, args...)
	root := n.Root
	n.JSON("POST", "/v1/workspaces", root, map[string]string{"id": "acme", "name": "Acme"}, 201, nil)
	var created wire.KeyWithSecret
	h := n.JSON("POST", "/v1/workspaces/acme/keys", root, map[string]any{
		"name": "billing", "permissions": []string{"users.track"}, "allowlist": []string{"10.0.0.0/8"}}, 201, &created)
	keySeq, err := strconv.ParseUint(h.Get(wire.SequenceHeader), 10, 64)
	if err != nil || keySeq == 0 {
		t.Fatalf("create key: %s %q", wire.SequenceHeader, h.Get(wire.SequenceHeader))
	}
	id := created.Key.ID

	verify := func(ip, want string) {
		t.Helper()
		var r wire.VerifyResponse
		n.JSON("POST", "/v1/verify", root, map[string]string{"key": created.Secret, "ip": ip, "permission": "users.track"}, 200, &r)
		if r.Code != want || r.KeyID != id {
			t.Fatalf("verify from %s: %+v, want %s", ip, r, want)
		}
		if r.AppliedSeq != keySeq {
			t.Fatalf("verify answered applied_seq %d, want %d (the last write's sequence)", r.AppliedSeq, keySeq)
		}
	}
	start := time.Now()
	for range 3 {
		verify("10.1.2.3", "VALID")
	}
	verify("192.0.2.7", "IP_NOT_ALLOWED")

	// The key shows its last use once the node has flushed (every usageInterval).
	var k wire.Key
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n.JSON("GET", "/v1/workspaces/acme/keys/"+id, root, nil, 200, &k)
		if k.LastUsedAt != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no last_used_at 30 s after the verifies: %+v", k)
		}
	}
	t.Logf("last_used_at shown %s after the first verify (flush interval %s)", time.Since(start).Round(time.Millisecond), usageInterval)
	if k.LastUsedAt.UnixNano()%int64(usageInterval) != 0 || k.LastUsedAt.Before(start.Add(-usageInterval)) || k.LastUsedAt.After(time.Now()) {
		t.Fatalf("last_used_at %s: want the start of a %s interval since %s", k.LastUsedAt, usageInterval, start)
	}

	// Daily counts: poll until the flushes hold all four verifies.
	wantCounts := func(n *nodetest.Node, valid, denied uint64) wire.KeyUsage {
		t.Helper()
		var u wire.KeyUsage
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			n.JSON("GET", "/v1/workspaces/acme/keys/"+id+"/usage?days=1", root, nil, 200, &u)
			if len(u.Days) == 1 && u.Days[0].Counts["VALID"] == valid && u.Days[0].Counts["IP_NOT_ALLOWED"] == denied {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("usage?days=1: %+v, want VALID %d and IP_NOT_ALLOWED %d", u, valid, denied)
			}
		}
		d := u.Days[0]
		if d.Date != time.Now().UTC().Format("2006-01-02") || d.Total != valid+denied || len(d.Counts) != 5 || d.Counts["REVOKED"] != 0 {
			t.Fatalf("usage?days=1: %+v", u)
		}
		return u
	}
	u := wantCounts(n, 3, 1)
	// The verifies appended nothing: the next write takes the sequence after the key's.
	h = n.JSON("POST", "/v1/workspaces", root, map[string]string{"id": "after", "name": "After"}, 201, nil)
	if seq := h.Get(wire.SequenceHeader); seq != strconv.FormatUint(keySeq+1, 10) {
		t.Fatalf("the write after the verifies got sequence %s, want %d: the verifies appended to the stream", seq, keySeq+1)
	}
	lastSeq, _ := strconv.ParseUint(h.Get(wire.SequenceHeader), 10, 64)
	if u.KeyID != id || u.Workspace != "acme" || u.LastUsedAt == nil || u.LastUsedIP == "" {
		t.Fatalf("usage: %+v", u)
	}
	n.JSON("GET", "/v1/workspaces/acme/keys/"+id, root, nil, 200, &k)
	if k.LastUsedIP != "192.0.2.7" {
		t.Fatalf("last_used_ip %q, want 192.0.2.7 (the latest verify's)", k.LastUsedIP)
	}
	var list struct{ Keys []wire.Key }
	n.JSON("GET", "/v1/workspaces/acme/keys", root, nil, 200, &list)
	for _, lk := range list.Keys {
		if lk.ID == id && (lk.LastUsedAt == nil || !lk.LastUsedAt.Equal(*k.LastUsedAt) || lk.LastUsedIP != k.LastUsedIP) {
			t.Fatalf("key list shows %+v, GET key %+v", lk, k)
		}
	}

	// Bad days: a problem naming the field.
	for _, bad := range []string{"0", "91", "x", "-1"} {
		st, hdr, body := n.Do("GET", "/v1/workspaces/acme/keys/"+id+"/usage?days="+bad, root, nil)
		var p struct{ Field, Value string }
		json.Unmarshal(body, &p)
		if st != http.StatusBadRequest || hdr.Get("Content-Type") != "application/problem+json" || p.Field != "days" || p.Value != bad {
			t.Fatalf("days=%s: %d %s %s", bad, st, hdr.Get("Content-Type"), body)
		}
	}

	// Reading the use needs keyreg.keys.read, as reading the key does.
	reader := func(perm string) string {
		var ks wire.KeyWithSecret
		h := n.JSON("POST", "/v1/workspaces/acme/keys", root, map[string]any{"name": perm, "permissions": []string{perm}}, 201, &ks)
		lastSeq, _ = strconv.ParseUint(h.Get(wire.SequenceHeader), 10, 64)
		return ks.Secret
	}
	n.JSON("GET", "/v1/workspaces/acme/keys/"+id+"/usage", reader("keyreg.verify"), nil, 403, nil)
	n.JSON("GET", "/v1/workspaces/acme/keys/"+id+"/usage", reader("keyreg.keys.read"), nil, 200, &u)
	if len(u.Days) != 7 {
		t.Fatalf("usage without days: %d days, want the default 7", len(u.Days))
	}

	// The CLI shows the use.
	show := cli(t, n, "key", "show", "-w", "acme", id, "--days", "1")
	for _, want := range []string{"Last used:", "from 192.0.2.7", "VALID", "IP_NOT_ALLOWED"} {
		if !strings.Contains(show, want) {
			t.Fatalf("keyreg key show --days 1 lacks %q:\n%s", want, show)
		}
	}
	if listed := cli(t, n, "key", "list", "-w", "acme"); !strings.Contains(listed, "LAST USED") || !strings.Contains(listed, k.LastUsedAt.UTC().Format(time.RFC3339)) {
		t.Fatalf("keyreg key list shows no last use:\n%s", listed)
	}

	// A restart keeps the use, and the node adds to it.
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	n2 := nodetest.StartBinaryWith(t, nodetest.BinaryOptions{DataDir: n.DataDir, Root: root, Args: args})
	if u2 := wantCounts(n2, 3, 1); u2.LastUsedAt == nil || !u2.LastUsedAt.Equal(*u.LastUsedAt) {
		t.Fatalf("after the restart: %+v, before %+v", u2, u)
	}
	var r wire.VerifyResponse
	n2.JSON("POST", "/v1/verify", root, map[string]string{"key": created.Secret, "ip": "10.1.2.3"}, 200, &r)
	if r.Code != "VALID" || r.AppliedSeq != lastSeq {
		t.Fatalf("verify after the restart: %+v, want VALID at applied_seq %d (the last write's sequence)", r, lastSeq)
	}
	wantCounts(n2, 4, 1)
}

// cli runs the keyreg binary's client command args against n as the root key and
// returns its output; it fails the test on a non-zero exit.
func cli(t *testing.T, n *nodetest.Node, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodetest.Binary(t), args...)
	cmd.Env = append(cmd.Environ(), "KEYREG_ADDR="+n.URL, "KEYREG_TOKEN="+n.Root)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("keyreg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestKeyUsageCluster: on an embedded cluster of three real nodes, verifies of one key on
// every node add up: each node shows the sum of all three nodes' counts, and the latest
// use's address.
func TestKeyUsageCluster(t *testing.T) {
	c := nodetest.StartCluster(t, nodetest.ClusterOptions{Args: []string{"--usage-flush-interval", usageInterval.String()}})
	root := c.Root
	c.Nodes[0].JSON("POST", "/v1/workspaces", root, map[string]string{"id": "acme", "name": "Acme"}, 201, nil)
	var created wire.KeyWithSecret
	h := c.Nodes[0].JSON("POST", "/v1/workspaces/acme/keys", root, map[string]any{"name": "k", "allowlist": []string{"10.0.0.0/8"}}, 201, &created)
	seq := h.Get(wire.SequenceHeader)
	verify := func(n *nodetest.Node, ip, want string) {
		t.Helper()
		var r wire.VerifyResponse
		n.JSON("POST", "/v1/verify", root, map[string]string{"key": created.Secret, "ip": ip}, 200, &r, wire.MinSequenceHeader, seq)
		if r.Code != want {
			t.Fatalf("verify from %s: %+v, want %s", ip, r, want)
		}
	}
	verify(c.Nodes[0], "10.0.0.1", "VALID")
	verify(c.Nodes[0], "10.0.0.1", "VALID")
	verify(c.Nodes[1], "10.0.0.2", "VALID")
	verify(c.Nodes[2], "10.0.0.3", "VALID")
	verify(c.Nodes[2], "192.0.2.1", "IP_NOT_ALLOWED")
	for i, n := range c.Nodes {
		var u wire.KeyUsage
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			n.JSON("GET", "/v1/workspaces/acme/keys/"+created.Key.ID+"/usage?days=1", root, nil, 200, &u)
			if c := u.Days[0].Counts; c["VALID"] == 4 && c["IP_NOT_ALLOWED"] == 1 && u.LastUsedIP == "192.0.2.1" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: usage %+v, want VALID 4 and IP_NOT_ALLOWED 1 from the three nodes, last from 192.0.2.1", i+1, u)
			}
		}
	}
}
