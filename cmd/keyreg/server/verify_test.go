package server_test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

// serveVerifyBinary runs the real binary on a fresh data dir with no NATS listener and
// returns a node that only sends requests to it (its url and root secret); the process is
// stopped with SIGTERM at the end of the test.
func serveVerifyBinary(t *testing.T) *node {
	t.Helper()
	return startBinary(t).node
}

// binJunk returns the i-th well-formed secret that no key has.
func binJunk(i int) string { return events.FormatSecret(sha256.Sum256(fmt.Append(nil, "junk ", i))) }

// verifyAs posts a verify with registry key token and returns the answer's code, or the
// problem's status and code ("429 rate_limited") and its detail.
func verifyAs(n *node, token, secret, ip string) (code, detail string) {
	n.t.Helper()
	st, h, b := n.do("POST", "/v1/verify", token, map[string]any{"key": secret, "ip": ip})
	if st == 200 {
		var v wire.VerifyResponse
		if err := json.Unmarshal(b, &v); err != nil {
			n.t.Fatal(err)
		}
		return v.Code, ""
	}
	var p problemBody
	json.Unmarshal(b, &p)
	if st == 429 && h.Get("Retry-After") == "" {
		n.t.Fatalf("429 without Retry-After: %s", b)
	}
	return fmt.Sprint(st, " ", p.Code), p.Detail
}

// The default limit of failed verifies per end-user address group: 5 per second, bursts of
// 20 (README).
const failureRate, failureBurst = 5, 20

// checkLimited checks the answers to junk verifies for one address group against the
// token bucket, whatever the speed of the machine: the first failureBurst pass, and of all
// of them at most failureBurst plus failureRate a second of elapsed (the time from before
// the first request to after the last) do.
func checkLimited(t *testing.T, codes []string, elapsed time.Duration) {
	t.Helper()
	passed := 0
	for i, code := range codes {
		if code == "NOT_FOUND" {
			passed++
		} else if i < failureBurst {
			t.Fatalf("junk %d of a burst of %d: %s", i, failureBurst, code)
		}
	}
	if most := failureBurst + int(failureRate*elapsed.Seconds()) + 1; passed > most {
		t.Fatalf("%d of %d junk verifies in %v passed, at most %d may", passed, len(codes), elapsed, most)
	}
	t.Logf("%d of %d junk verifies in %v limited", len(codes)-passed, len(codes), elapsed)
}

// TestVerifyBinary, against the real binary: junk verifies from one caller for one
// end-user address get limited, but never the keys that are found, for that address or
// another; verify needs a registry key; a key of a workspace the caller may not verify is
// NOT_FOUND; IPv6 junk from many addresses of one /64 is limited as one.
func TestVerifyBinary(t *testing.T) {
	n := serveVerifyBinary(t)
	for _, ws := range []string{"acme", "beta"} {
		n.json("POST", "/v1/workspaces", n.root, map[string]any{"id": ws, "name": ws}, 201, nil)
	}
	key := func(ws string, perms ...string) wire.KeyWithSecret {
		t.Helper()
		var k wire.KeyWithSecret
		n.json("POST", "/v1/workspaces/"+ws+"/keys", n.root, map[string]any{"name": "k", "permissions": perms}, 201, &k)
		return k
	}
	gw := key("acme", "keyreg.verify").Secret
	valid := key("acme", "users.track")
	theirs := key("beta", "users.track")

	t.Run("JunkDoesNotBlockValid", func(t *testing.T) {
		var codes []string
		start := time.Now()
		for i := range 100 {
			switch code, _ := verifyAs(n, gw, binJunk(i), "198.51.100.7"); code {
			case "NOT_FOUND", "429 rate_limited":
				codes = append(codes, code)
			default:
				t.Fatalf("junk %d: %s", i, code)
			}
		}
		checkLimited(t, codes, time.Since(start))
		for _, ip := range []string{"203.0.113.9", "198.51.100.7"} {
			var v wire.VerifyResponse
			n.json("POST", "/v1/verify", gw, map[string]any{"key": valid.Secret, "ip": ip, "permission": "users.track"}, 200, &v)
			if !v.Valid || v.Code != "VALID" || v.KeyID != valid.Key.ID || v.AppliedSeq < valid.Key.Version {
				t.Fatalf("valid key from %s after the junk: %+v", ip, v)
			}
		}
		if code, _ := verifyAs(n, gw, valid.Secret, "198.51.100.7"); code != "VALID" {
			t.Fatalf("valid key again: %s", code)
		}
	})

	t.Run("NoRegistryKey", func(t *testing.T) {
		if code, _ := verifyAs(n, "", valid.Secret, "203.0.113.9"); code != "401 unauthorized" {
			t.Fatalf("verify without a registry key: %s", code)
		}
		if code, _ := verifyAs(n, valid.Secret, valid.Secret, "203.0.113.9"); code != "403 forbidden" {
			t.Fatalf("verify with a key lacking keyreg.verify: %s", code)
		}
	})

	t.Run("OtherWorkspace", func(t *testing.T) {
		if code, _ := verifyAs(n, gw, theirs.Secret, "203.0.113.10"); code != "NOT_FOUND" {
			t.Fatalf("acme's verifier, beta's key: %s", code)
		}
		if code, _ := verifyAs(n, n.root, theirs.Secret, "203.0.113.10"); code != "VALID" {
			t.Fatalf("keyreg.admin, beta's key: %s", code)
		}
	})

	t.Run("IPv6By64", func(t *testing.T) {
		caller := key("acme", "keyreg.verify").Secret // a fresh caller: its own limit is far
		var codes []string
		start := time.Now()
		for i := range 100 {
			ip := fmt.Sprintf("2001:db8:7:8:%x:%x::1", i*331, i) // a new address each time, one /64
			switch code, detail := verifyAs(n, caller, binJunk(i), ip); code {
			case "NOT_FOUND":
				codes = append(codes, code)
			case "429 rate_limited":
				if !strings.Contains(detail, "2001:db8:7:8::/64") {
					t.Fatalf("limited, but not for the /64: %s", detail)
				}
				codes = append(codes, code)
			default:
				t.Fatalf("junk %d from %s: %s", i, ip, code)
			}
		}
		checkLimited(t, codes, time.Since(start))
	})
}
