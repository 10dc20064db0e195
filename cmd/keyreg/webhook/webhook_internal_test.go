package webhook

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
)

// TestSignStandardWebhooksVector reproduces the test vector the Standard Webhooks
// reference libraries publish: a receiver's library accepts what keyreg signs.
func TestSignStandardWebhooksVector(t *testing.T) {
	key, err := DecodeSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}

// TestNewSecret: whsec_ and the base64 of 32 random bytes, different each time.
func TestNewSecret(t *testing.T) {
	a, b := NewSecret(), NewSecret()
	ka, err := DecodeSecret(a)
	if err != nil || len(ka) != 32 || a == b {
		t.Fatalf("secrets %q %q: %v, %d bytes", a, b, err, len(ka))
	}
	for _, bad := range []string{"", "whsec_", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!"} {
		if _, err := DecodeSecret(bad); err == nil {
			t.Errorf("DecodeSecret(%q) = %v", bad, err)
		}
	}
}

// TestBackoff: doubling from min, capped at max, given up once the next attempt would
// come more than retryFor after the first; with the defaults, about a day of attempts.
func TestBackoff(t *testing.T) {
	var got []time.Duration
	for attempt := 1; ; attempt++ {
		d, ok := Backoff(time.Second, 5*time.Second, 20*time.Second, attempt)
		if !ok {
			break
		}
		got = append(got, d)
	}
	// 1+2+4+5+5 = 17 s; one more 5 s pause would end at 22 s, past 20 s.
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	if len(got) != len(want) {
		t.Fatalf("pauses %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pauses %v, want %v", got, want)
		}
	}
	var total time.Duration
	attempts := 1
	for ; ; attempts++ {
		d, ok := Backoff(DefaultRetryMin, DefaultRetryMax, DefaultRetryFor, attempts)
		if !ok {
			break
		}
		total += d
	}
	if total > DefaultRetryFor || total < DefaultRetryFor-DefaultRetryMax {
		t.Fatalf("default schedule: %d attempts over %s, want about %s", attempts, total, DefaultRetryFor)
	}
	t.Logf("default schedule: %d attempts over %s", attempts, total)
}

// TestRefused lists the addresses deliveries may not reach.
func TestRefused(t *testing.T) {
	for _, s := range []string{"127.0.0.1", "127.8.9.10", "::1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "fd00::1",
		"169.254.169.254", "fe80::1", "0.0.0.0", "::", "224.0.0.1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "100.64.0.1", "0.1.2.3"} {
		if Refused(netip.MustParseAddr(s)) == "" {
			t.Errorf("%s is not refused", s)
		}
	}
	for _, s := range []string{"203.0.113.7", "8.8.8.8", "2001:db8::1", "2606:4700::1111"} {
		if why := Refused(netip.MustParseAddr(s)); why != "" {
			t.Errorf("%s is refused: %s", s, why)
		}
	}
}

// TestCheckURL: at registration, literal addresses and localhost names that are refused
// are refused with a ValidationError of field url; --webhook-allow-private lets them.
func TestCheckURL(t *testing.T) {
	ctx := context.Background()
	for _, u := range []string{"http://127.0.0.1:8080/x", "http://[::1]/x", "http://localhost/x", "http://api.localhost./x",
		"https://192.168.0.10/x", "http://169.254.169.254/latest", "http://[::ffff:169.254.169.254]/"} {
		var ve *events.ValidationError
		if err := (Guard{}).CheckURL(ctx, u); !errors.As(err, &ve) || ve.Field != "url" || ve.Value != u {
			t.Errorf("CheckURL(%s) = %v, want a refusal of field url", u, err)
		}
		if err := (Guard{AllowPrivate: true}).CheckURL(ctx, u); err != nil {
			t.Errorf("with AllowPrivate, CheckURL(%s) = %v", u, err)
		}
	}
	if err := (Guard{}).CheckURL(ctx, "https://203.0.113.7/hook"); err != nil {
		t.Errorf("a public address: %v", err)
	}
}

// TestClientRefusesPrivateAfterResolution: the delivery client checks the address it
// connects to after DNS resolution, so a name that resolves to a loopback address at
// delivery time (DNS rebinding) reaches nothing; with AllowPrivate it does. Redirects are
// not followed.
func TestClientRefusesPrivateAfterResolution(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/target", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	byName := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) // resolved at dial time

	_, err := newClient(Guard{}, 5*time.Second).Post(byName+"/hook", "application/json", nil)
	var refused *errRefusedAddr
	if !errors.As(err, &refused) {
		t.Fatalf("POST %s through the guard: %v, want a refused connection", byName, err)
	}
	if hits.Load() != 0 {
		t.Fatalf("the receiver got %d requests", hits.Load())
	}

	open := newClient(Guard{AllowPrivate: true}, 5*time.Second)
	resp, err := open.Post(byName+"/hook", "application/json", nil)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("with AllowPrivate: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = open.Post(srv.URL+"/redirect", "application/json", nil)
	if err != nil || resp.StatusCode != http.StatusFound || hits.Load() != 2 {
		t.Fatalf("a redirect: %v %v, %d requests (want the 302 itself, not followed)", resp, err, hits.Load())
	}
	resp.Body.Close()
}
