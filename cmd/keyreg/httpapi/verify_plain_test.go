package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/projections/keyindex"
)

// plainEnv is an API on a real embedded JetStream log and real views whose clock stands
// still (the verify limiter's buckets never refill), with a few keys.
type plainEnv struct {
	api     *API
	secrets map[string]string // by name: verifier, admin, reader, mine, revoked, theirs
}

func newPlainEnv(t *testing.T) plainEnv {
	t.Helper()
	e := eventstest.StartEmbedded(t, t.TempDir())
	store, err := projections.Open("views", projections.Options{FS: vfs.NewMem(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	proj := projections.NewProjector(store, e.Log)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	done := make(chan struct{})
	go func() { proj.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; store.Close() })
	cmds := &commands.Handler{Log: e.Log}
	now := time.Now()
	env := plainEnv{secrets: map[string]string{}}
	env.api = New(Deps{Commands: cmds, Views: store, Waiter: proj, Log: e.Log, Logger: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return now }, VerifyFailureRate: 5, VerifyFailureBurst: 20})
	var last uint64
	for _, ws := range []string{"system", "acme", "beta"} {
		if _, err := cmds.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: ws, Name: ws}); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []struct {
		name, ws string
		perms    []string
	}{
		{"verifier", "acme", []string{string(PermVerify)}},
		{"admin", "system", []string{string(PermAdmin)}},
		{"reader", "acme", []string{string(PermKeysRead)}},
		{"mine", "acme", []string{"users.alias.new", "users.track"}},
		{"revoked", "acme", []string{"users.track"}},
		{"theirs", "beta", []string{"users.track"}},
	} {
		c := commands.CreateKey{Workspace: k.ws, Name: k.name, Permissions: k.perms}
		if !strings.HasPrefix(k.perms[0], "keyreg.") { // a key to verify, not a caller
			c.Allowlist = []string{"10.0.0.0/8", "2001:db8::/32"}
		}
		res, err := cmds.CreateKey(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		env.secrets[k.name], last = res.Secret, res.Seq
		if k.name == "revoked" {
			if res, err = cmds.RevokeKey(ctx, commands.RevokeKey{Workspace: k.ws, KeyID: res.ID}); err != nil {
				t.Fatal(err)
			}
			last = res.Seq
		}
	}
	if err := proj.WaitFor(ctx, last); err != nil {
		t.Fatal(err)
	}
	return env
}

// request is a verify request as a client sends it.
func (env plainEnv) request(token, body, contentType, accept string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/v1/verify", strings.NewReader(body))
	r.RemoteAddr = "192.0.2.1:4000"
	r.Header.Set("X-Request-Id", "req-1")
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	if accept != "" {
		r.Header.Set("Accept", accept)
	}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return r
}

// viaHuma serves r through the whole API, as a server does; a Content-Type with a charset
// keeps it off the plain path, so huma's handler answers.
func (env plainEnv) viaHuma(r *http.Request) *httptest.ResponseRecorder {
	r.Header.Set("Content-Type", "application/json; charset=utf-8")
	rec := httptest.NewRecorder()
	env.api.ServeHTTP(rec, r)
	return rec
}

// viaPlain offers r to the plain path alone, with its body read as API.ServeHTTP reads
// it, and reports whether that path answered.
func (env plainEnv) viaPlain(t *testing.T, r *http.Request, body string) (*httptest.ResponseRecorder, bool) {
	t.Helper()
	r = r.WithContext(context.WithValue(r.Context(), bodyKey{}, []byte(body)))
	op := env.api.OpenAPI().Paths["/v1/verify"].Post
	rec := httptest.NewRecorder()
	return rec, env.api.verifyPlain(humago.NewContext(op, r, rec))
}

func verifyBody(key, ip, perm string) string {
	b, _ := json.Marshal(wire.VerifyRequest{Key: key, IP: ip, Permission: perm})
	return string(b)
}

// TestVerifyPlainAnswersAsHuma: for every kind of answer (each verify code, each
// problem: 401, 403, 400 naming ip or permission, 429), the plain path answers a plain
// body byte for byte as huma's handler answers the same request, headers and status
// included.
func TestVerifyPlainAnswersAsHuma(t *testing.T) {
	env := newPlainEnv(t)
	s := env.secrets
	junk := events.FormatSecret([32]byte{1, 2, 3})
	cases := []struct {
		name, token, body, accept string
		status                    int
		code                      string // the verify code, or the problem's code
	}{
		{"Valid", s["verifier"], verifyBody(s["mine"], "10.1.2.3", "users.track"), "", 200, keyindex.CodeValid},
		{"ValidNoPermission", s["verifier"], `{"key":"` + s["mine"] + `","ip":"10.1.2.3"}`, "", 200, keyindex.CodeValid},
		{"ValidSpaced", s["verifier"], " {\n\t\"ip\" : \"2001:db8::7\" ,\r\n\"key\":\"" + s["mine"] + "\", \"permission\":\"\"}\n", "", 200, keyindex.CodeValid},
		{"AcceptJSON", s["verifier"], verifyBody(s["mine"], "::ffff:10.1.2.3", ""), "application/json", 200, keyindex.CodeValid},
		{"AcceptCBOR", s["verifier"], verifyBody(s["mine"], "10.1.2.3", ""), "application/cbor", 200, keyindex.CodeValid}, // no CBOR format: JSON
		{"AcceptAny", s["verifier"], verifyBody(s["mine"], "10.1.2.3", ""), "*/*", 200, keyindex.CodeValid},
		{"AdminOtherWorkspace", s["admin"], verifyBody(s["theirs"], "10.1.2.3", "users.track"), "", 200, keyindex.CodeValid},
		{"PermissionDenied", s["verifier"], verifyBody(s["mine"], "10.1.2.3", "users.delete"), "", 200, keyindex.CodePermissionDenied},
		{"IPNotAllowed", s["verifier"], verifyBody(s["mine"], "192.0.2.1", ""), "", 200, keyindex.CodeIPNotAllowed},
		{"Revoked", s["verifier"], verifyBody(s["revoked"], "10.1.2.3", ""), "", 200, keyindex.CodeRevoked},
		{"OtherWorkspace", s["verifier"], verifyBody(s["theirs"], "10.1.2.3", ""), "", 200, keyindex.CodeNotFound},
		{"Unknown", s["verifier"], verifyBody(junk, "10.1.2.3", ""), "", 200, keyindex.CodeNotFound},
		{"Malformed", s["verifier"], verifyBody("kr_short", "10.1.2.3", ""), "", 200, keyindex.CodeMalformed},
		{"EmptyKey", s["verifier"], verifyBody("", "10.1.2.3", ""), "", 200, keyindex.CodeMalformed},
		{"NoToken", "", verifyBody(s["mine"], "10.1.2.3", ""), "", 401, CodeUnauthorized},
		{"BadToken", "kr_nope", verifyBody(s["mine"], "10.1.2.3", ""), "", 401, CodeUnauthorized},
		{"RevokedToken", s["revoked"], verifyBody(s["mine"], "10.1.2.3", ""), "", 401, CodeUnauthorized},
		{"NoVerifyPermission", s["reader"], verifyBody(s["mine"], "10.1.2.3", ""), "", 403, CodeForbidden},
		{"BadIP", s["verifier"], verifyBody(s["mine"], "10.1.2.300", ""), "", 400, CodeInvalid},
		{"ZonedIP", s["verifier"], verifyBody(s["mine"], "fe80::1%eth0", ""), "", 400, CodeInvalid},
		{"BadPermission", s["verifier"], verifyBody(s["mine"], "10.1.2.3", "Users Track"), "", 400, CodeInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plain, ok := env.viaPlain(t, env.request(c.token, c.body, "application/json", c.accept), c.body)
			if !ok {
				t.Fatalf("the plain path declined %s", c.body)
			}
			full := env.viaHuma(env.request(c.token, c.body, "", c.accept))
			checkSameAnswer(t, plain, full)
			var got struct{ Code string }
			if err := json.Unmarshal(plain.Body.Bytes(), &got); err != nil || plain.Code != c.status || got.Code != c.code {
				t.Fatalf("answer %d %s, want %d with code %s", plain.Code, plain.Body, c.status, c.code)
			}
		})
	}
	t.Run("RateLimited", func(t *testing.T) {
		body := verifyBody(junk, "198.51.100.9", "")
		for i := 0; ; i++ {
			if i > 30 {
				t.Fatal("no 429 after 30 unknown keys from one address")
			}
			if rec := env.viaHuma(env.request(s["verifier"], body, "", "")); rec.Code == http.StatusTooManyRequests {
				break
			}
		}
		plain, ok := env.viaPlain(t, env.request(s["verifier"], body, "application/json", ""), body)
		if !ok || plain.Code != http.StatusTooManyRequests || plain.Header().Get("Retry-After") == "" {
			t.Fatalf("plain path: answered %v, %d %s", ok, plain.Code, plain.Body)
		}
		checkSameAnswer(t, plain, env.viaHuma(env.request(s["verifier"], body, "", "")))
	})
}

func checkSameAnswer(t *testing.T, plain, full *httptest.ResponseRecorder) {
	t.Helper()
	if plain.Code != full.Code || !maps.EqualFunc(plain.Header(), full.Header(), slices.Equal) || !bytes.Equal(plain.Body.Bytes(), full.Body.Bytes()) {
		t.Fatalf("the plain path answers\n%d %v\n%s\nhuma answers\n%d %v\n%s", plain.Code, plain.Header(), plain.Body, full.Code, full.Header(), full.Body)
	}
}

// TestVerifyPlainDeclines: the plain path leaves alone (writes nothing) every request
// that is not a plain body taking a JSON answer, so huma's handler judges it; and huma's
// answers to such bodies still name the field.
func TestVerifyPlainDeclines(t *testing.T) {
	env := newPlainEnv(t)
	key := env.secrets["mine"]
	for name, c := range map[string]struct {
		body, contentType, accept string
		field                     string // for a body that huma refuses: the field its problem names
	}{
		"Duplicate":      {`{"key":"` + key + `","ip":"10.1.2.3","ip":"10.9.9.9"}`, "application/json", "", "ip"},
		"Escaped":        {`{"key":"` + key + `","ip":"10.1.2.\u0033"}`, "application/json", "", ""},
		"Unknown":        {`{"key":"` + key + `","ip":"10.1.2.3","extra":"x"}`, "application/json", "", "extra"},
		"CaseOfName":     {`{"Key":"` + key + `","ip":"10.1.2.3"}`, "application/json", "", ""}, // huma takes it: its matching ignores case
		"MissingIP":      {`{"key":"` + key + `"}`, "application/json", "", "ip"},
		"MissingKey":     {`{"ip":"10.1.2.3"}`, "application/json", "", "key"},
		"Null":           {`{"key":"` + key + `","ip":null}`, "application/json", "", "ip"},
		"Number":         {`{"key":"` + key + `","ip":10}`, "application/json", "", "ip"},
		"Nested":         {`{"key":"` + key + `","ip":{"v":"10.1.2.3"}}`, "application/json", "", "ip"},
		"Trailing":       {`{"key":"` + key + `","ip":"10.1.2.3"}x`, "application/json", "", "body"},
		"TwoObjects":     {`{"key":"` + key + `","ip":"10.1.2.3"}{}`, "application/json", "", "body"},
		"NotObject":      {`["` + key + `"]`, "application/json", "", "body"},
		"Empty":          {``, "application/json", "", ""},
		"Unterminated":   {`{"key":"` + key + `","ip":"10.1.2.3"`, "application/json", "", "body"},
		"NonASCII":       {`{"key":"` + key + `","ip":"10.1.2.3","permission":"usérs.track"}`, "application/json", "", "permission"},
		"ControlChar":    {"{\"key\":\"" + key + "\",\"ip\":\"10.1.2.3\t\"}", "application/json", "", "body"},
		"CharsetType":    {verifyBody(key, "10.1.2.3", ""), "application/json; charset=utf-8", "", ""},
		"OtherType":      {verifyBody(key, "10.1.2.3", ""), "application/cbor", "", ""},
		"TrailingComma":  {`{"key":"` + key + `","ip":"10.1.2.3",}`, "application/json", "", "body"},
		"MissingColon":   {`{"key" "` + key + `","ip":"10.1.2.3"}`, "application/json", "", "body"},
		"LeadingComma":   {`{,"key":"` + key + `","ip":"10.1.2.3"}`, "application/json", "", "body"},
		"EmptyObject":    {`{}`, "application/json", "", "ip"},
		"UnquotedString": {`{"key":` + key + `,"ip":"10.1.2.3"}`, "application/json", "", "body"},
	} {
		t.Run(name, func(t *testing.T) {
			rec, ok := env.viaPlain(t, env.request(env.secrets["verifier"], c.body, c.contentType, c.accept), c.body)
			if ok || rec.Body.Len() > 0 || len(rec.Header()) > 0 {
				t.Fatalf("the plain path took %q (%s): %d %v %s", c.body, c.contentType, rec.Code, rec.Header(), rec.Body)
			}
			if c.field == "" {
				return
			}
			full := env.viaHuma(env.request(env.secrets["verifier"], c.body, "", ""))
			var p struct{ Code, Field string }
			json.Unmarshal(full.Body.Bytes(), &p)
			if full.Code != http.StatusBadRequest || p.Field != c.field && !(c.field == "body" && p.Code == CodeMalformedJSON) {
				t.Fatalf("huma answers %d %s, want 400 naming %s", full.Code, full.Body, c.field)
			}
		})
	}
}

// TestVerifyPlainKnowsTheMiddlewares: the plain path runs callerMiddleware alone and
// skips the API's other middlewares, each of which does nothing for a plain verify body
// (registerVerify). A middleware added to the API must be weighed there first.
func TestVerifyPlainKnowsTheMiddlewares(t *testing.T) {
	a := New(Deps{})
	if n := len(a.huma.Middlewares()); n != 5 {
		t.Fatalf("the API has %d middlewares; the plain path of verify (registerVerify) knows of 5: caller, path ids, strict JSON, idempotency, min_seq", n)
	}
}

// FuzzParsePlainVerify: a body the plain decoder takes is one huma would take as it is:
// valid JSON, an object of the verify fields only, "key" and "ip" present, each a string,
// no key twice (checkStrictJSON), and encoding/json reads the same values.
func FuzzParsePlainVerify(f *testing.F) {
	for _, s := range []string{
		`{"key":"kr_x","ip":"10.0.0.1"}`, `{"key":"kr_x","ip":"10.0.0.1","permission":"a.b"}`,
		` { "ip" : "::1" , "key" : "" } `, `{"key":"a","key":"b","ip":"c"}`, `{"key":"\u0041","ip":"c"}`,
		`{"key":"a","ip":"c",}`, `{"key":"a","ip":"c"}}`, `{"key":"a","ip":"c"`, `{"key":"a" "ip":"c"}`,
		`{"KEY":"a","ip":"c"}`, `{"key":"a","ip":null}`, "{\"key\":\"a\",\"ip\":\"\xff\"}", `[]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		in, ok := parsePlainVerify(body)
		if !ok {
			return
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("took %q, which is not a JSON object: %v", body, err)
		}
		if p := checkStrictJSON(body, func(string) bool { return false }); p != nil {
			t.Fatalf("took %q, which checkStrictJSON refuses: %v", body, p)
		}
		want := map[string]any{"key": in.Key, "ip": in.IP}
		if _, has := m["permission"]; has || in.Permission != "" {
			want["permission"] = in.Permission
		}
		if !maps.Equal(m, want) {
			t.Fatalf("took %q as %+v; encoding/json reads %v", body, in, m)
		}
		var typed wire.VerifyRequest
		if err := json.Unmarshal(body, &typed); err != nil || typed != in {
			t.Fatalf("took %q as %+v; into wire.VerifyRequest: %+v %v", body, in, typed, err)
		}
	})
}

// FuzzAppendVerifyResponse: the plain path's answer is byte for byte huma's JSON encoding
// of wire.VerifyResponse whenever it does not decline (a value that needs escaping); and
// it declines nothing made of printable ASCII without quotes and backslashes.
func FuzzAppendVerifyResponse(f *testing.F) {
	f.Add(true, "VALID", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "acme", "users.track", "kpi.dau.data_series", uint64(42))
	f.Add(false, "NOT_FOUND", "", "", "", "", uint64(0))
	f.Add(false, "REVOKED", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "acme", "users.track", "", uint64(1)<<63)
	f.Add(true, "VALID", `a"b`, "acme", "", "", uint64(7))
	f.Add(true, "VALID", "k", `a\b`, "", "", uint64(7))
	f.Add(true, "VALID", "k", "<ws>&", "é", "", uint64(7))
	f.Add(true, "VALID", "k", "acme", "a.b", "\x00", uint64(7))
	f.Add(false, "VALID", "k", "acme", "\x7f", "", uint64(7))
	api := New(Deps{})
	f.Fuzz(func(t *testing.T, valid bool, code, keyID, ws, p1, p2 string, applied uint64) {
		r := keyindex.VerifyResult{Valid: valid, Code: code, KeyID: keyID, Workspace: events.Workspace(ws)}
		for _, p := range []string{p1, p2} {
			if p != "" {
				r.Permissions = append(r.Permissions, events.Permission(p))
			}
		}
		got, ok := appendVerifyResponse(nil, r, applied)
		out := wire.VerifyResponse{Valid: valid, Code: code, KeyID: keyID, Workspace: ws, AppliedSeq: applied}
		if valid {
			for _, p := range r.Permissions {
				out.Permissions = append(out.Permissions, string(p))
			}
		}
		var want bytes.Buffer
		if err := api.huma.Marshal(&want, "application/json", &out); err != nil {
			t.Fatal(err)
		}
		strs := code + keyID + ws
		if valid {
			strs += p1 + p2
		}
		plain := !strings.ContainsFunc(strs, func(r rune) bool { return r < 0x20 || r > 0x7e || r == '"' || r == '\\' })
		if plain != ok {
			t.Fatalf("%+v: declined %v, want %v", r, !ok, !plain)
		}
		if ok && !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("%+v: appends\n%s\nhuma encodes\n%s", r, got, want.Bytes())
		}
	})
}

// BenchmarkParsePlainVerify measures the plain decoder on a typical body.
func BenchmarkParsePlainVerify(b *testing.B) {
	body := []byte(fmt.Sprintf(`{"key":"%s","ip":"10.1.2.3","permission":"users.track"}`, events.FormatSecret([32]byte{9})))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := parsePlainVerify(body); !ok {
			b.Fatal("declined")
		}
	}
}

// FuzzIsPermission: isPermission, verify's shortcut, agrees with events.ParsePermission.
func FuzzIsPermission(f *testing.F) {
	for _, s := range []string{"users.track", "kpi.dau.data_series", "a.b", "a", "", ".a", "a.", "a..b", "A.b", "1a.b",
		"a._b", "a.b1_", "a.b\n", "a.b c", "é.b", strings.Repeat("a.", 64) + "b", strings.Repeat("a", 127) + ".b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, err := events.ParsePermission(s)
		if isPermission(s) != (err == nil) {
			t.Fatalf("isPermission(%q) = %v; ParsePermission: %v", s, isPermission(s), err)
		}
	})
}
