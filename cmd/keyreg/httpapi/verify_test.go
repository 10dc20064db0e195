package httpapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/projections"
)

// verifyEnv is an API on a real embedded JetStream log and real views whose clock stands
// still, so the verify limiter's buckets never refill and its counts are exact.
type verifyEnv struct {
	t    *testing.T
	cmds *commands.Handler
	proj *projections.Projector
	url  string
}

func newVerifyEnv(t *testing.T) *verifyEnv {
	t.Helper()
	e := eventstest.StartEmbedded(t, t.TempDir())
	store, proj := runViews(t, e.Log)
	ctx := context.Background()
	now := time.Now()
	api := httpapi.New(httpapi.Deps{
		Commands: &commands.Handler{Log: e.Log}, Views: store, Waiter: proj, Log: e.Log,
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now },
		VerifyFailureRate: 5, VerifyFailureBurst: 20,
	})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	env := &verifyEnv{t: t, cmds: &commands.Handler{Log: e.Log}, proj: proj, url: srv.URL}
	for _, ws := range []string{"system", "acme", "beta"} {
		if _, err := env.cmds.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: ws, Name: ws}); err != nil {
			t.Fatal(err)
		}
	}
	return env
}

// key creates a key in ws with perms and returns it, once the views have it.
func (env *verifyEnv) key(ws string, perms ...string) commands.Result {
	env.t.Helper()
	res, err := env.cmds.CreateKey(context.Background(), commands.CreateKey{Workspace: ws, Name: "k", Permissions: perms})
	if err != nil {
		env.t.Fatal(err)
	}
	if err := env.proj.WaitFor(waitCtx(env.t), res.Seq); err != nil {
		env.t.Fatal(err)
	}
	return res
}

// verify posts a verify request with token and returns the status, the Retry-After
// header and the body.
func (env *verifyEnv) verify(token, key, ip string) (int, string, []byte) {
	env.t.Helper()
	body, _ := json.Marshal(map[string]string{"key": key, "ip": ip})
	req, _ := http.NewRequest(http.MethodPost, env.url+"/v1/verify", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		env.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), b
}

// code verifies and returns the answer's code, or "429" when limited.
func (env *verifyEnv) code(token, key, ip string) string {
	env.t.Helper()
	st, retry, b := env.verify(token, key, ip)
	switch st {
	case http.StatusOK:
		var v wire.VerifyResponse
		if err := json.Unmarshal(b, &v); err != nil {
			env.t.Fatal(err)
		}
		return v.Code
	case http.StatusTooManyRequests:
		if retry == "" || !strings.Contains(string(b), `"rate_limited"`) {
			env.t.Fatalf("429 without Retry-After or code: %s", b)
		}
		return "429"
	}
	env.t.Fatalf("verify %s from %s: %d %s", key, ip, st, b)
	return ""
}

// junk returns the i-th well-formed secret that no key has.
func junk(i int) string { return events.FormatSecret(sha256.Sum256(fmt.Append(nil, "junk-", i))) }

// TestVerifyAuthorization: verify needs a registry key with keyreg.verify (or
// keyreg.admin), and a key of a workspace the caller may not verify answers exactly as an
// unknown one.
func TestVerifyAuthorization(t *testing.T) {
	env := newVerifyEnv(t)
	root := env.key("system", string(httpapi.PermAdmin)).Secret
	acme := env.key("acme", string(httpapi.PermVerify)).Secret
	sys := env.key("system", string(httpapi.PermVerify)).Secret // keyreg.verify in system is not admin
	reader := env.key("acme", string(httpapi.PermKeysRead)).Secret
	mine := env.key("acme", "users.track")
	theirs := env.key("beta", "users.track")

	if st, _, b := env.verify("", mine.Secret, "10.0.0.1"); st != http.StatusUnauthorized {
		t.Fatalf("without a registry key: %d %s", st, b)
	}
	if st, _, b := env.verify(reader, mine.Secret, "10.0.0.1"); st != http.StatusForbidden || !strings.Contains(string(b), "keyreg.verify") {
		t.Fatalf("with a key lacking keyreg.verify: %d %s", st, b)
	}
	if c := env.code(acme, mine.Secret, "10.0.0.1"); c != "VALID" {
		t.Fatalf("acme verifier, acme key: %s", c)
	}
	_, _, other := env.verify(acme, theirs.Secret, "10.0.0.1")
	_, _, unknown := env.verify(acme, junk(0), "10.0.0.1")
	if !bytes.Equal(other, unknown) || !strings.Contains(string(other), `"NOT_FOUND"`) {
		t.Fatalf("acme verifier, beta key: %s; unknown key: %s; want the same NOT_FOUND", other, unknown)
	}
	if c := env.code(sys, mine.Secret, "10.0.0.1"); c != "NOT_FOUND" {
		t.Fatalf("system verifier without keyreg.admin, acme key: %s", c)
	}
	var v wire.VerifyResponse
	json.Unmarshal(must(env.verify(root, theirs.Secret, "10.0.0.1")), &v)
	if !v.Valid || v.Workspace != "beta" || v.KeyID != theirs.ID || v.AppliedSeq < theirs.Seq {
		t.Fatalf("admin, beta key: %+v (key created at %d)", v, theirs.Seq)
	}

	// Another workspace's key counts against the limits as an unknown key does, so the
	// limiter tells nothing either.
	limited := 0
	for range 25 {
		if env.code(acme, theirs.Secret, "10.9.9.9") == "429" {
			limited++
		}
	}
	if limited != 5 {
		t.Fatalf("%d of 25 verifies of another workspace's key limited, want 5 (burst 20)", limited)
	}
}

func must(st int, _ string, b []byte) []byte {
	if st != http.StatusOK {
		panic(fmt.Sprintf("status %d: %s", st, b))
	}
	return b
}

// TestVerifyLimits: answers that find no key are limited per end-user address (IPv6 by
// /64) and per caller, and only those: a key that is found is always answered, from the
// limited address and by the limited caller.
func TestVerifyLimits(t *testing.T) {
	env := newVerifyEnv(t)
	gw := env.key("acme", string(httpapi.PermVerify)).Secret
	valid := env.key("acme", "users.track")
	revoked := env.key("acme")
	res, err := env.cmds.RevokeKey(context.Background(), commands.RevokeKey{Workspace: "acme", KeyID: revoked.ID})
	if err != nil {
		t.Fatal(err)
	}
	if err := env.proj.WaitFor(waitCtx(t), res.Seq); err != nil {
		t.Fatal(err)
	}

	t.Run("PerAddress", func(t *testing.T) {
		for i := range 20 { // the burst
			if c := env.code(gw, junk(i), "198.51.100.7"); c != "NOT_FOUND" {
				t.Fatalf("junk %d: %s", i, c)
			}
		}
		if c := env.code(gw, "kr_short", "198.51.100.7"); c != "429" {
			t.Fatalf("junk past the burst: %s", c)
		}
		st, retry, b := env.verify(gw, junk(99), "198.51.100.7")
		if st != http.StatusTooManyRequests || retry != "1" || !strings.Contains(string(b), "198.51.100.7/32") {
			t.Fatalf("limited: %d Retry-After %q %s", st, retry, b)
		}
		if c := env.code(gw, junk(99), "::ffff:198.51.100.7"); c != "429" {
			t.Fatalf("the same address IPv4-mapped: %s", c)
		}
		// Found keys are answered from the limited address.
		for _, c := range []struct{ secret, want string }{{valid.Secret, "VALID"}, {revoked.Secret, "REVOKED"}} {
			if got := env.code(gw, c.secret, "198.51.100.7"); got != c.want {
				t.Fatalf("found key from the limited address: %s, want %s", got, c.want)
			}
		}
		if c := env.code(gw, junk(0), "198.51.100.8"); c != "NOT_FOUND" {
			t.Fatalf("junk from the next address: %s", c)
		}
	})

	t.Run("IPv6By64", func(t *testing.T) {
		for i := range 20 {
			ip := fmt.Sprintf("2001:db8:1:2:%x::%x", i*977, i+1) // a different address each time, one /64
			if c := env.code(gw, junk(i), ip); c != "NOT_FOUND" {
				t.Fatalf("junk %d from %s: %s", i, ip, c)
			}
		}
		_, _, b := env.verify(gw, junk(0), "2001:db8:1:2:ffff:ffff:ffff:ffff")
		if !strings.Contains(string(b), "2001:db8:1:2::/64") {
			t.Fatalf("junk from a new address of the same /64: %s", b)
		}
		if c := env.code(gw, valid.Secret, "2001:db8:1:2::99"); c != "VALID" {
			t.Fatalf("valid key from the limited /64: %s", c)
		}
		if c := env.code(gw, junk(0), "2001:db8:1:3::1"); c != "NOT_FOUND" {
			t.Fatalf("junk from the next /64: %s", c)
		}
	})

	t.Run("PerCaller", func(t *testing.T) {
		caller := env.key("acme", string(httpapi.PermVerify)).Secret
		for i := range 100 { // the caller's burst: 5 times an address's
			ip := fmt.Sprintf("10.0.%d.%d", i/200, i%200+1)
			if c := env.code(caller, junk(i), ip); c != "NOT_FOUND" {
				t.Fatalf("junk %d from %s: %s", i, ip, c)
			}
		}
		st, _, b := env.verify(caller, junk(0), "10.1.0.1")
		if st != http.StatusTooManyRequests || !strings.Contains(string(b), "for this caller") {
			t.Fatalf("junk past the caller's burst, from a fresh address: %d %s", st, b)
		}
		if c := env.code(caller, valid.Secret, "10.1.0.2"); c != "VALID" {
			t.Fatalf("valid key from the limited caller: %s", c)
		}
		other := env.key("acme", string(httpapi.PermVerify)).Secret
		if c := env.code(other, junk(0), "10.1.0.3"); c != "NOT_FOUND" {
			t.Fatalf("junk by another caller: %s", c)
		}
	})
}

// TestVerifyClient: the typed client sends its registry key and returns applied_seq.
func TestVerifyClient(t *testing.T) {
	env := newVerifyEnv(t)
	gw := env.key("acme", string(httpapi.PermVerify)).Secret
	k := env.key("acme", "users.track")
	ctx := context.Background()
	v, err := client.New(env.url, gw, nil).Verify(ctx, k.Secret, "203.0.113.7", "users.track")
	if err != nil || !v.Valid || v.AppliedSeq < k.Seq {
		t.Fatalf("Verify: %+v %v (key at %d)", v, err, k.Seq)
	}
	_, err = client.New(env.url, "", nil).Verify(ctx, k.Secret, "203.0.113.7", "")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
		t.Fatalf("Verify without a token: %v", err)
	}
}
