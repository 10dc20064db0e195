package server_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

// scanner is a secret scanner's signing key, as GitHub's partner program uses.
type scanner struct {
	id  string
	key *ecdsa.PrivateKey
}

func newScanner(t *testing.T, id string) scanner {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return scanner{id: id, key: k}
}

// keysFile writes the public keys document of scanners and returns its path.
func keysFile(t *testing.T, scanners ...scanner) string {
	t.Helper()
	var doc struct {
		PublicKeys []map[string]any `json:"public_keys"`
	}
	for _, s := range scanners {
		der, err := x509.MarshalPKIXPublicKey(&s.key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		doc.PublicKeys = append(doc.PublicKeys, map[string]any{"key_identifier": s.id, "is_current": true,
			"key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))})
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sign returns the headers of body signed by s.
func (s scanner) sign(t *testing.T, body []byte) []string {
	t.Helper()
	d := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return []string{"Github-Public-Key-Identifier", s.id, "Github-Public-Key-Signature", base64.StdEncoding.EncodeToString(sig)}
}

type leakLabel struct {
	TokenHash string `json:"token_hash"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
}

// TestLeakedKeyReportBinary holds issue 15's leaked-key reports on the real binary: a
// report with a bad signature, an unknown key identifier or none is 401 and appends
// nothing; a correctly signed one labels a key's secret true_positive and an unknown
// token false_positive, appends keyreg.key.leaked.v1 and keyreg.key.revoked.v1 in one
// append (verify then says REVOKED), and the same report again appends nothing; a
// workspace that reports only gets the leak recorded and keeps its key; nothing the
// binary printed holds a reported token.
func TestLeakedKeyReportBinary(t *testing.T) {
	gh, other := newScanner(t, "gh-key-1"), newScanner(t, "gh-key-2")
	n := nodetest.StartBinary(t, "--leak-report-keys", keysFile(t, gh), "--log-level", "debug")
	n.JSON("POST", "/v1/workspaces", n.Root, map[string]any{"id": "acme", "name": "Acme"}, 201, nil)
	var k wire.KeyWithSecret
	n.JSON("POST", "/v1/workspaces/acme/keys", n.Root, map[string]any{"name": "leaky", "permissions": []string{"users.track"}}, 201, &k)
	var rnd [32]byte
	rand.Read(rnd[:])
	unknown := events.FormatSecret(rnd)
	body, _ := json.Marshal([]map[string]string{
		{"token": k.Secret, "type": "keyreg_api_key", "url": "https://github.com/acme/app/blob/main/config.yml", "source": "content"},
		{"token": unknown, "type": "keyreg_api_key", "url": "https://github.com/acme/app/blob/main/old.yml", "source": "content"},
	})
	// seqOf is the stream sequence a marker write reaches: one more than the last.
	marker := 0
	seqOf := func() uint64 {
		marker++
		h := n.JSON("POST", "/v1/workspaces/acme/permissions", n.Root, map[string]any{"name": "marker.m" + strconv.Itoa(marker), "description": "marker"}, 201, nil)
		s, err := strconv.ParseUint(h.Get("Keyreg-Sequence"), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := seqOf()
	tampered := bytes.Replace(body, []byte("main/config.yml"), []byte("main/konfig.yml"), 1) // still valid JSON
	for name, headers := range map[string][]string{
		"Unsigned":       nil,
		"OtherKey":       append(other.sign(t, body)[:1:1], "gh-key-1", other.sign(t, body)[2], other.sign(t, body)[3]),
		"UnknownKeyID":   other.sign(t, body),
		"TamperedBody":   gh.sign(t, body),
		"NotBase64":      {"Github-Public-Key-Identifier", "gh-key-1", "Github-Public-Key-Signature", "%%%"},
		"SignatureOnly":  gh.sign(t, body)[2:],
		"IdentifierOnly": gh.sign(t, body)[:2],
	} {
		sent := body
		if name == "TamperedBody" {
			sent = tampered
		}
		st, h, b := n.Do("POST", "/v1/leaked-keys", "", sent, headers...)
		if st != 401 || !strings.HasPrefix(h.Get("Content-Type"), "application/problem+json") {
			t.Errorf("%s: %d %s %s", name, st, h.Get("Content-Type"), b)
		}
	}
	huge := append([]byte("["), bytes.Repeat([]byte(" "), 1<<20)...) // over the body limit
	if st, _, b := n.Do("POST", "/v1/leaked-keys", "", append(huge, ']'), gh.sign(t, append(huge, ']'))...); st != 413 {
		t.Errorf("a report over the body limit: %d %s", st, b)
	}
	if after := seqOf(); after != before+1 {
		t.Fatalf("refused reports appended: the stream went from %d to %d", before, after-1)
	}

	var labels []leakLabel
	n.JSON("POST", "/v1/leaked-keys", "", body, 200, &labels, gh.sign(t, body)...)
	want := []leakLabel{{events.HashSecret(k.Secret), "keyreg_api_key", "true_positive"}, {events.HashSecret(unknown), "keyreg_api_key", "false_positive"}}
	if len(labels) != 2 || labels[0] != want[0] || labels[1] != want[1] {
		t.Fatalf("labels %+v, want %+v", labels, want)
	}
	var v wire.VerifyResponse
	n.JSON("POST", "/v1/verify", n.Root, map[string]any{"key": k.Secret, "ip": "203.0.113.9"}, 200, &v)
	if v.Code != "REVOKED" {
		t.Fatalf("verify after the report: %+v", v)
	}
	var hist auditPage
	n.JSON("GET", "/v1/workspaces/acme/keys/"+k.Key.ID+"/history", n.Root, nil, 200, &hist)
	evs := hist.decode(t)
	if got := shortTypes(evs); got != "key.created key.leaked key.revoked" {
		t.Fatalf("history: %s", got)
	}
	leak, rev := evs[1], evs[2]
	p, _ := leak.Payload()
	if l := p.(*events.KeyLeaked); l.URL != "https://github.com/acme/app/blob/main/config.yml" || l.Reporter != "gh-key-1" ||
		l.Source != "content" || !l.Revoked || l.SecretHash != events.HashSecret(k.Secret) {
		t.Fatalf("leaked event: %+v", l)
	}
	if rev.seq != leak.seq+1 || !strings.Contains(rev.Reason, "leaked") {
		t.Fatalf("revocation at %d (leak at %d), reason %q", rev.seq, leak.seq, rev.Reason)
	}
	// The same report again: the same answer, nothing appended.
	before = seqOf()
	n.JSON("POST", "/v1/leaked-keys", "", body, 200, &labels, gh.sign(t, body)...)
	if labels[0].Label != "true_positive" || labels[1].Label != "false_positive" {
		t.Fatalf("labels of the report sent again: %+v", labels)
	}
	if after := seqOf(); after != before+1 {
		t.Fatalf("the report sent again appended: %d to %d", before, after-1)
	}

	// A workspace that reports only.
	n.JSON("PUT", "/v1/workspaces/acme/leak-response", n.Root, map[string]any{"mode": "bogus"}, 400, nil)
	n.JSON("PUT", "/v1/workspaces/acme/leak-response", n.Root, map[string]any{"mode": "report_only"}, 200, nil)
	var k2 wire.KeyWithSecret
	n.JSON("POST", "/v1/workspaces/acme/keys", n.Root, map[string]any{"name": "kept", "permissions": []string{"users.track"}}, 201, &k2)
	body2, _ := json.Marshal([]map[string]string{{"token": k2.Secret, "type": "keyreg_api_key", "url": "https://gist.github.com/x/1", "source": "gist"}})
	n.JSON("POST", "/v1/leaked-keys", "", body2, 200, &labels, gh.sign(t, body2)...)
	if len(labels) != 1 || labels[0].Label != "true_positive" {
		t.Fatalf("report-only labels: %+v", labels)
	}
	n.JSON("POST", "/v1/verify", n.Root, map[string]any{"key": k2.Secret, "ip": "203.0.113.9"}, 200, &v)
	if v.Code != "VALID" {
		t.Fatalf("verify of a report-only workspace's leaked key: %+v", v)
	}
	n.JSON("GET", "/v1/workspaces/acme/keys/"+k2.Key.ID+"/history", n.Root, nil, 200, &hist)
	if got := shortTypes(hist.decode(t)); got != "key.created key.leaked" {
		t.Fatalf("report-only history: %s", got)
	}

	for _, s := range []string{k.Secret, k2.Secret, unknown} {
		if strings.Contains(n.Output.String(), s) {
			t.Fatalf("the binary printed a reported token")
		}
	}
}

// TestLeakedKeysOff holds that without --leak-report-keys the endpoint answers 404 with
// a detail that names the flag.
func TestLeakedKeysOff(t *testing.T) {
	n := nodetest.StartBinary(t)
	st, _, b := n.Do("POST", "/v1/leaked-keys", "", `[]`)
	if st != 404 || !strings.Contains(string(b), "--leak-report-keys") {
		t.Fatalf("%d %s", st, b)
	}
}
