package server_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// slowRequest opens a connection to addr and sends a POST whose headers announce 100
// body bytes, then only the first one, and holds the connection.
func slowRequest(t *testing.T, addr, token, extraHeader string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /v1/workspaces HTTP/1.1\r\nHost: keyreg\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n%sContent-Length: 100\r\n\r\n{", token, extraHeader)
	return c
}

// getJSON sends a request that must answer before ctx ends.
func getJSON(ctx context.Context, t *testing.T, method, url, token string, out any) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, method, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s did not answer: %v", method, url, err)
	}
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// TestSlowBodyDoesNotHoldSwap: clients that send 1 of 100 body bytes and hold on (with
// and without an Idempotency-Key) hold no lock: an online rebuild swaps in its views,
// and /healthz and verify answer, while they are still connected.
func TestSlowBodyDoesNotHoldSwap(t *testing.T) {
	// A read timeout longer than the test: only holding no lock lets the swap through.
	n := startNode(t, "", func(c *server.Config) { c.ReadTimeout = 10 * time.Minute })
	f := newFixture(t, n, "acme")
	k := f.createKey(map[string]any{"name": "k"})
	addr := strings.TrimPrefix(n.url, "http://")
	slow := []net.Conn{slowRequest(t, addr, n.root, ""), slowRequest(t, addr, n.root, "Idempotency-Key: slow-1\r\n")}
	n.json("GET", "/healthz", "", nil, 200, nil) // a round trip after the slow requests were sent

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rebuild(t, n)
	if code := getJSON(ctx, t, "GET", n.url+"/healthz", "", nil); code != 200 {
		t.Fatalf("healthz: %d", code)
	}
	if v := f.verify(k.Secret, "10.0.0.1", ""); v.Code != "VALID" {
		t.Fatalf("verify after the swap: %s", v.Code)
	}
	// The slow clients were connected all along: their requests have not been answered.
	for _, c := range slow {
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if b, err := c.Read(make([]byte, 1)); b != 0 || !os.IsTimeout(err) {
			t.Fatalf("a slow request was answered or closed before the end of the test: %v", err)
		}
	}
}

// TestSlowBodyTimesOut: a request whose body does not arrive within the read timeout is
// answered 408 and its connection closed.
func TestSlowBodyTimesOut(t *testing.T) {
	n := startNode(t, "", func(c *server.Config) { c.ReadTimeout = 500 * time.Millisecond })
	c := slowRequest(t, strings.TrimPrefix(n.url, "http://"), n.root, "")
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("the slow connection was not closed: %v", err)
	}
	if !strings.HasPrefix(string(b), "HTTP/1.1 408") || !strings.Contains(string(b), "application/problem+json") {
		t.Fatalf("a body that did not arrive in time: %q", b)
	}
}

// TestEventStreamOutlivesTimeouts: an event stream keeps delivering after the read and
// write timeouts of ordinary requests have passed.
func TestEventStreamOutlivesTimeouts(t *testing.T) {
	n := startNode(t, "", func(c *server.Config) { c.ReadTimeout, c.WriteTimeout = 300*time.Millisecond, 300*time.Millisecond })
	f := newFixture(t, n, "acme")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", n.url+"/v1/workspaces/acme/events", nil)
	req.Header.Set("Authorization", "Bearer "+n.root)
	req.Header.Set("Last-Event-ID", fmt.Sprint(n.lastSeq()))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("event stream: status %d", resp.StatusCode)
	}
	time.Sleep(time.Second) // past both timeouts
	k := f.createKey(map[string]any{"name": "after the timeouts"})
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.Contains(sc.Text(), k.Key.ID) {
			return
		}
	}
	t.Fatalf("the event stream ended before the key's event: %v", sc.Err())
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key to dir and
// returns their paths and a pool that trusts it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "keyreg test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLSListeners: given a certificate, the HTTP API speaks HTTPS only and the NATS
// listener requires TLS of subscribers.
func TestTLSListeners(t *testing.T) {
	data := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	n := nodetest.Start(t, nodetest.Options{DataDir: data, TLS: pool, Config: []func(*server.Config){func(c *server.Config) {
		c.NATSListen, c.NATSSubscriberUser = "127.0.0.1:0", "subscriber"
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
	}}})
	nd, addr, root := n.Node, n.Addr, n.Root
	tlsClient := &http.Client{Timeout: 30 * time.Second, Transport: n.HTTP.Transport}
	req, _ := http.NewRequest("GET", "https://"+addr+"/v1/workspaces", nil)
	req.Header.Set("Authorization", "Bearer "+root)
	resp, err := tlsClient.Do(req)
	if err != nil {
		t.Fatalf("HTTPS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("HTTPS: status %d, tls %v", resp.StatusCode, resp.TLS != nil)
	}
	plain := &http.Client{Timeout: 30 * time.Second}
	if resp, err := plain.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP answered 200 on a TLS listener")
		}
	}

	url := nd.NATSURL()
	if !strings.HasPrefix(url, "tls://") {
		t.Fatalf("NATS URL %s is not tls://", url)
	}
	pw, err := os.ReadFile(filepath.Join(data, server.NATSSubscriberPasswordFile))
	if err != nil {
		t.Fatal(err)
	}
	user := nats.UserInfo(server.DefaultNATSSubscriberUser, strings.TrimSpace(string(pw)))
	nc, err := nats.Connect(url, user, nats.Secure(&tls.Config{RootCAs: pool}), nats.Timeout(10*time.Second))
	if err != nil {
		t.Fatalf("NATS over TLS: %v", err)
	}
	sub, err := nc.SubscribeSync("keyreg.>")
	if err != nil || nc.Flush() != nil {
		t.Fatalf("subscribe over TLS: %v", err)
	}
	req, _ = http.NewRequest("POST", "https://"+addr+"/v1/workspaces", strings.NewReader(`{"id":"acme","name":"Acme"}`))
	req.Header.Set("Authorization", "Bearer "+root)
	req.Header.Set("Content-Type", "application/json")
	if resp, err = tlsClient.Do(req); err != nil || resp.StatusCode != 201 {
		t.Fatalf("create workspace over HTTPS: %v %v", resp, err)
	}
	resp.Body.Close()
	if m, err := sub.NextMsg(10 * time.Second); err != nil || !strings.HasPrefix(m.Subject, "keyreg.acme.") {
		t.Fatalf("event over NATS TLS: %v %v", m, err)
	}
	nc.Close()
	if nc, err := nats.Connect(strings.Replace(url, "tls://", "nats://", 1), user, nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a plain NATS connection was accepted on the TLS listener")
	}
}

// TestTrustedProxies: X-Forwarded-For gives the client address (allowlist, actorip) only
// from a trusted proxy; from any other peer it is ignored.
func TestTrustedProxies(t *testing.T) {
	proxy := netip.MustParseAddr("127.0.0.2") // loopback: Linux routes all of 127/8
	n := startNode(t, "", func(c *server.Config) { c.TrustedProxies = []netip.Prefix{netip.PrefixFrom(proxy, 32)} })
	f := newFixture(t, n, "acme")
	k := f.createKey(map[string]any{"name": "allowlisted", "allowlist": []string{"203.0.113.7"},
		"permissions": []string{"keyreg.keys.read", "keyreg.keys.write"}})
	viaProxy := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: proxy.AsSlice()}}).DialContext}}
	direct := &http.Client{Timeout: 30 * time.Second}
	send := func(c *http.Client, method, xff string, body string) (int, []byte) {
		t.Helper()
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, n.url+"/v1/workspaces/acme/keys", r)
		req.Header.Set("Authorization", "Bearer "+k.Secret)
		req.Header.Set("Content-Type", "application/json")
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for _, tc := range []struct {
		name   string
		client *http.Client
		xff    string
		want   int
	}{
		{"trusted proxy forwards the allowlisted address", viaProxy, "198.51.100.9, 203.0.113.7", 200},
		{"trusted proxy, client-written address left of another", viaProxy, "203.0.113.7, 198.51.100.9", 403},
		{"trusted proxy without the header", viaProxy, "", 403},
		{"untrusted peer claims the allowlisted address", direct, "203.0.113.7", 403},
	} {
		if st, b := send(tc.client, "GET", tc.xff, ""); st != tc.want {
			t.Errorf("%s: status %d, want %d: %s", tc.name, st, tc.want, b)
		}
	}
	st, b := send(viaProxy, "POST", "203.0.113.7", `{"name":"made via the proxy"}`)
	if st != 201 {
		t.Fatalf("create via the proxy: %d %s", st, b)
	}
	var made wire.KeyWithSecret
	json.Unmarshal(b, &made)
	var hist struct{ Events []wire.HistoryEntry }
	n.json("GET", "/v1/workspaces/acme/keys/"+made.Key.ID+"/history", f.writer, nil, 200, &hist)
	if len(hist.Events) == 0 {
		t.Fatal("no history")
	}
	var ev struct{ ActorIP string }
	json.Unmarshal(hist.Events[0].Event, &ev)
	if ev.ActorIP != "203.0.113.7" {
		t.Fatalf("actorip %q, want the forwarded 203.0.113.7", ev.ActorIP)
	}
}
