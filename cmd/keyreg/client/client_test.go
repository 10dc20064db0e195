package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// recorded is one request a test server saw.
type recorded struct {
	method, uri string
	header      http.Header
	body        string
}

// serve starts a server that records each request and answers status with body.
func serve(t *testing.T, status int, contentType, body string) (*httptest.Server, *[]recorded) {
	t.Helper()
	var seen []recorded
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen = append(seen, recorded{r.Method, r.RequestURI, r.Header.Clone(), string(b)})
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &seen
}

func TestRequests(t *testing.T) {
	srv, seen := serve(t, http.StatusOK, "application/json", `{"id":"K1","name":"n","version":7}`)
	c := client.New(srv.URL+"/", "kr_token", nil)
	ctx := context.Background()
	name := "n"
	k, err := c.UpdateKey(ctx, "acme", "K1", client.KeyUpdate{Name: &name, ClearExpiry: true},
		client.WriteOptions{IdempotencyKey: "idem-1", IfMatch: "6", Reason: "renewed"})
	if err != nil || k.ID != "K1" || k.Version != 7 {
		t.Fatalf("UpdateKey = %+v, %v", k, err)
	}
	var none []string
	if _, err := c.UpdateKey(ctx, "acme", "K1", client.KeyUpdate{Permissions: &none}, client.WriteOptions{IfMatch: `"6"`}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetKey(ctx, "acme", "a/b"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListKeys(ctx, "acme", "revoked"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.KeyHistory(ctx, "acme", "K1", 12, 50); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RotateKey(ctx, "acme", "K1", 24*time.Hour, client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}

	want := []struct{ method, uri, body, ifMatch string }{
		{"PATCH", "/v1/workspaces/acme/keys/K1", `{"expires_at":null,"name":"n"}`, `"6"`},
		{"PATCH", "/v1/workspaces/acme/keys/K1", `{"permissions":[]}`, `"6"`},
		{"GET", "/v1/workspaces/acme/keys/a%2Fb", "", ""},
		{"GET", "/v1/workspaces/acme/keys?limit=1000&status=revoked", "", ""},
		{"GET", "/v1/workspaces/acme/keys/K1/history?after=12&limit=50", "", ""},
		{"POST", "/v1/workspaces/acme/keys/K1/rotate", `{"grace_seconds":86400}`, ""},
	}
	if len(*seen) != len(want) {
		t.Fatalf("%d requests, want %d", len(*seen), len(want))
	}
	for i, w := range want {
		r := (*seen)[i]
		if r.method != w.method || r.uri != w.uri || r.body != w.body || r.header.Get("If-Match") != w.ifMatch {
			t.Errorf("request %d = %s %s %s If-Match %q, want %+v", i, r.method, r.uri, r.body, r.header.Get("If-Match"), w)
		}
		if got := r.header.Get("Authorization"); got != "Bearer kr_token" {
			t.Errorf("request %d: Authorization %q", i, got)
		}
		if ct := r.header.Get("Content-Type"); (w.body != "") != (ct == "application/json") {
			t.Errorf("request %d: Content-Type %q with body %q", i, ct, w.body)
		}
	}
	if h := (*seen)[0].header; h.Get("Idempotency-Key") != "idem-1" || h.Get("Keyreg-Reason") != "renewed" {
		t.Errorf("write headers = %v", h)
	}
}

// TestListFollowsPages lists from a server that answers in pages of two: the client
// asks for each page after the previous one's next and returns every item once.
func TestListFollowsPages(t *testing.T) {
	var afters, asOfs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		after := r.URL.Query().Get("after")
		afters = append(afters, after)
		asOfs = append(asOfs, r.URL.Query().Get("as_of"))
		w.Header().Set("Content-Type", "application/json")
		switch after {
		case "":
			io.WriteString(w, `{"identifiers":[{"id":"I1"},{"id":"I2"}],"next":"c2"}`)
		case "c2":
			io.WriteString(w, `{"identifiers":[{"id":"I3"},{"id":"I4"}],"next":"c4"}`)
		default:
			io.WriteString(w, `{"identifiers":[{"id":"I5"}]}`)
		}
	}))
	t.Cleanup(srv.Close)
	ids, err := client.New(srv.URL, "kr_token", nil).ListIdentifiers(context.Background(), "acme", "segment", "", client.AsOfSeq(9))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range ids {
		got = append(got, s.ID)
	}
	if strings.Join(got, ",") != "I1,I2,I3,I4,I5" || strings.Join(afters, ",") != ",c2,c4" {
		t.Fatalf("listed %v with after= %q", got, afters)
	}
	if strings.Join(asOfs, ",") != "9,9,9" {
		t.Fatalf("as_of= %q on the pages of a list as of sequence 9", asOfs)
	}
}

// TestReadOptions: AsOf, AsOfSeq and AsOfTime send as_of on the reads of keys and
// identifiers, and a read without them sends none.
func TestReadOptions(t *testing.T) {
	srv, seen := serve(t, http.StatusOK, "application/json", `{}`)
	c := client.New(srv.URL, "kr_token", nil)
	ctx := context.Background()
	at := time.Date(2026, 3, 1, 12, 0, 0, 500, time.FixedZone("", 3600))
	for _, read := range []func() error{
		func() error { _, err := c.GetKey(ctx, "acme", "K1", client.AsOfSeq(42)); return err },
		func() error { _, err := c.GetKey(ctx, "acme", "K1", client.AsOf("")); return err },
		func() error { _, err := c.GetIdentifier(ctx, "acme", "I1", client.AsOfTime(at)); return err },
		func() error {
			_, err := c.ListKeys(ctx, "acme", "active", client.AsOf("2026-03-01T11:00:00Z"))
			return err
		},
		func() error {
			_, err := c.KeysPage(ctx, "acme", client.KeyQuery{Page: client.Page{After: "K1", Limit: 2}}, client.AsOfSeq(7))
			return err
		},
		func() error {
			_, err := c.IdentifiersPage(ctx, "acme", client.IdentifierQuery{Kind: "app"}, client.AsOfSeq(1), client.AsOfSeq(8))
			return err
		},
	} {
		if err := read(); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"/v1/workspaces/acme/keys/K1?as_of=42",
		"/v1/workspaces/acme/keys/K1",
		"/v1/workspaces/acme/identifiers/I1?as_of=2026-03-01T12%3A00%3A00.0000005%2B01%3A00",
		"/v1/workspaces/acme/keys?as_of=2026-03-01T11%3A00%3A00Z&limit=1000&status=active",
		"/v1/workspaces/acme/keys?after=K1&as_of=7&limit=2",
		"/v1/workspaces/acme/identifiers?as_of=8&kind=app",
	}
	if len(*seen) != len(want) {
		t.Fatalf("%d requests, want %d", len(*seen), len(want))
	}
	for i, w := range want {
		if got := (*seen)[i].uri; got != w {
			t.Errorf("request %d = %s, want %s", i, got, w)
		}
	}
}

func TestHeaderChecks(t *testing.T) {
	srv, seen := serve(t, http.StatusOK, "application/json", `{}`)
	c := client.New(srv.URL, "", nil)
	_, err := c.RevokeKey(context.Background(), "acme", "K1", client.WriteOptions{Reason: "two\nlines"})
	if err == nil || !strings.Contains(err.Error(), "Keyreg-Reason") {
		t.Errorf("RevokeKey with a two-line reason: %v", err)
	}
	if _, err := c.RotateKey(context.Background(), "acme", "K1", 1500*time.Millisecond, client.WriteOptions{}); err == nil {
		t.Error("RotateKey with a grace of 1.5s: no error")
	}
	if _, err := c.Verify(context.Background(), "kr_x", "203.0.113.7", ""); err != nil {
		t.Fatal(err)
	}
	if len(*seen) != 1 || (*seen)[0].header.Get("Authorization") != "" {
		t.Errorf("requests = %+v, want one request without Authorization (no token)", *seen)
	}
}

func TestProblem(t *testing.T) {
	srv, _ := serve(t, http.StatusBadRequest, "application/problem+json",
		`{"title":"Bad Request","status":400,"code":"invalid_input","detail":"invalid allowlist \"10.0.0.0/33\": not an IP address or CIDR prefix","field":"allowlist","value":"10.0.0.0/33"}`)
	_, err := client.New(srv.URL, "kr_token", nil).PutAllowlist(context.Background(), "acme", "K1", []string{"10.0.0.0/33"}, client.WriteOptions{})
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 400 || e.Problem.Field != "allowlist" || e.Problem.Value != "10.0.0.0/33" {
		t.Fatalf("err = %#v", err)
	}
	if got, want := err.Error(), `400 invalid_input: invalid allowlist "10.0.0.0/33": not an IP address or CIDR prefix`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestErrorText(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  client.Error
		want string
	}{
		{"FieldNotInDetail", client.Error{Status: 400, Problem: wire.Problem{Code: "invalid_input", Detail: "expected one of a, b", Field: "status", Value: "x"}},
			`400 invalid_input: expected one of a, b (field status "x")`},
		{"NoCode", client.Error{Status: 502, Problem: wire.Problem{Detail: "<html>\n<b>Bad gateway</b>\n</html>"}},
			"502 bad_gateway: <html> <b>Bad gateway</b> </html>"},
		{"RetryIn", client.Error{Status: 429, Problem: wire.Problem{Code: "rate_limited", Detail: "too many failed verifies", RetryIn: 3}},
			"429 rate_limited: too many failed verifies (retry in 3s)"},
		{"Empty", client.Error{Status: 503}, "503 service_unavailable: Service Unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNotAProblem(t *testing.T) {
	srv, _ := serve(t, http.StatusBadGateway, "text/html", "<h1>upstream down</h1>")
	_, err := client.New(srv.URL, "kr_token", nil).ListWorkspaces(context.Background())
	if err == nil || err.Error() != "502 bad_gateway: <h1>upstream down</h1>" {
		t.Errorf("err = %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	_, err := client.New(addr, "kr_token", nil).ListWorkspaces(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "cannot reach keyreg at http://"+addr+": ") || strings.Contains(err.Error(), "kr_token") {
		t.Errorf("err = %v", err)
	}
}

func TestDecode(t *testing.T) {
	body, _ := json.Marshal(wire.KeyWithSecret{Key: wire.Key{ID: "K1", Allowlist: []string{"203.0.113.0/24"}}, Secret: "kr_s"})
	srv, _ := serve(t, http.StatusCreated, "application/json", string(body))
	ks, err := client.New(srv.URL, "kr_token", nil).CreateKey(context.Background(), "acme", client.CreateKeyRequest{Name: "n"}, client.WriteOptions{})
	if err != nil || ks.Key.ID != "K1" || ks.Secret != "kr_s" || ks.Key.Allowlist[0] != "203.0.113.0/24" {
		t.Errorf("CreateKey = %+v, %v", ks, err)
	}
}

func ExampleError() {
	err := &client.Error{Status: 400, Problem: wire.Problem{
		Code: "invalid_input", Detail: `invalid allowlist "10.0.0.0/33": not an IP address or CIDR prefix`,
		Field: "allowlist", Value: "10.0.0.0/33",
	}}
	fmt.Println(err)
	// Output: 400 invalid_input: invalid allowlist "10.0.0.0/33": not an IP address or CIDR prefix
}
