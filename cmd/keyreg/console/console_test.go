package console_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// browser drives one headless Chromium tab against a keyreg serve.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string
}

// newBrowser starts Debian's chromium (the test fails without it: apt-get install -y
// chromium) and opens one tab; it stops with the test.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Fatal("no chromium on PATH: the console's browser tests need it (Debian: apt-get install -y chromium)")
	}
	root, cancelRoot := context.WithTimeout(context.Background(), 3*time.Minute) // the whole browser, a guard against hangs
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.WindowSize(1280, 900))
	alloc, cancelAlloc := chromedp.NewExecAllocator(root, opts...)
	ctx, cancelTab := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelTab(); cancelAlloc(); cancelRoot() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser (no timeout of its own: it would end the browser)
		t.Fatalf("start chromium: %v", err)
	}
	shots, err := os.MkdirTemp(os.TempDir(), "keyreg-console-shots-")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots of the console's views: %s", shots)
	return &browser{t: t, ctx: ctx, shots: shots}
}

const stepTimeout = 20 * time.Second

// do runs steps within stepTimeout; what names them in a failure.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// run runs an action that returns a value, within stepTimeout.
func run[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// until waits until the JavaScript expression is truthy.
func until(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(stepTimeout))
}

// eval evaluates a JavaScript expression (awaiting a promise) into a T.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	return run(b, "evaluate "+expr, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// shot saves a screenshot of the whole page as name.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	png := run(b, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) cookies() []*network.Cookie {
	b.t.Helper()
	res := run(b, "get cookies", func(ctx context.Context, t *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, t, network.GetCookies, network.GetCookiesParams{})
	})
	return res.Cookies
}

// text is the text of the element sel selects ("" if none), read at once (a live update
// may replace the element between two queries).
func text(b *browser, sel string) string {
	b.t.Helper()
	return eval[string](b, `document.querySelector(`+jsString(sel)+`)?.innerText ?? ""`)
}

func css(s string) chromedp.CSS { return chromedp.CSS(s) }

func jsString(s string) string { return strconv.Quote(s) }

// auditCount is how many events the workspace's audit log holds.
func auditCount(n *nodetest.Node, ws string) int {
	n.T.Helper()
	var page struct {
		Events []wire.HistoryEntry `json:"events"`
	}
	n.JSON("GET", "/v1/workspaces/"+ws+"/audit?limit=1000", n.Root, nil, 200, &page)
	return len(page.Events)
}

// applied is the last stream sequence the node's views applied (GET /readyz).
func applied(n *nodetest.Node) uint64 {
	n.T.Helper()
	var h struct {
		Checkpoint uint64 `json:"checkpoint"`
	}
	n.JSON("GET", "/readyz", "", nil, 200, &h)
	return h.Checkpoint
}

func verify(n *nodetest.Node, secret, ip, perm string) string {
	n.T.Helper()
	var v wire.VerifyResponse
	n.JSON("POST", "/v1/verify", n.Root, wire.VerifyRequest{Key: secret, IP: ip, Permission: perm}, 200, &v)
	return v.Code
}

func keyByName(n *nodetest.Node, ws, name string) (wire.Key, bool) {
	n.T.Helper()
	var page struct {
		Keys []wire.Key `json:"keys"`
	}
	n.JSON("GET", "/v1/workspaces/"+ws+"/keys?limit=1000", n.Root, nil, 200, &page)
	for _, k := range page.Keys {
		if k.Name == name {
			return k, true
		}
	}
	return wire.Key{}, false
}

// step runs one step of a test as a subtest, and stops the test when it fails: the steps
// build on each other.
func step(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, f) {
		t.FailNow()
	}
}

// TestConsole drives the web console in Chromium against a real keyreg serve, through
// every "Must show" item of issue 14, saving a screenshot of each main view.
func TestConsole(t *testing.T) {
	n := nodetest.StartBinary(t)
	n.JSON("POST", "/v1/workspaces", n.Root, map[string]any{"id": "acme", "name": "Acme"}, 201, nil)
	n.JSON("POST", "/v1/workspaces/acme/identifiers", n.Root, map[string]any{"kind": "segment", "name": "Summer sale"}, 201, nil)
	b := newBrowser(t)

	// The page's headers: a strict CSP and the usual others.
	st, h, _ := n.Do("GET", "/", "", nil)
	if st != 200 {
		t.Fatalf("GET /: %d", st)
	}
	csp := h.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") ||
		!strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q does not forbid inline script and framing", csp)
	}
	for name, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"} {
		if got := h.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}

	step(t, "sign in", func(t *testing.T) {
		b.t = t
		b.do("open the sign-in page", chromedp.Navigate(n.URL+"/"), chromedp.WaitVisible(css("#signin-secret")))
		// The browser enforces the CSP: an injected inline script does not run.
		if ran := eval[bool](b, `(() => { const s = document.createElement("script"); s.textContent = "window.inlineRan = true"; document.body.append(s); return window.inlineRan === true; })()`); ran {
			t.Error("an inline script ran: the CSP does not forbid it")
		}
		b.shot("01-sign-in")
		b.do("a wrong key", chromedp.SendKeys(css("#signin-secret"), "kr_notakey"), chromedp.Click(css(`#signin-form button[type=submit]`)),
			until(`document.querySelector("#signin-error").textContent.length > 0`))
		b.do("sign in", chromedp.SetValue(css("#signin-secret"), n.Root), chromedp.Click(css(`#signin-form button[type=submit]`)),
			chromedp.WaitVisible(css("#keys-view")), until(`document.querySelector("#workspace").value === "acme"`),
			until(`document.querySelector("#live").textContent === "live"`))
		var session *network.Cookie
		for _, c := range b.cookies() {
			if c.Name == "keyreg_session" {
				session = c
			}
		}
		if session == nil {
			t.Fatal("no keyreg_session cookie after sign-in")
		}
		if !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict || session.Session || session.Expires <= float64(time.Now().Unix()) {
			t.Errorf("session cookie: HttpOnly %v, SameSite %q, session-only %v, expires %v; want HttpOnly, Strict, expiring",
				session.HTTPOnly, session.SameSite, session.Session, session.Expires)
		}
		stored := eval[string](b, `JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie + document.querySelector("#signin-secret").value`)
		if strings.Contains(stored, "kr_") || strings.Contains(stored, session.Value) {
			t.Errorf("the browser keeps the key or the session id where script reads it: %s", stored)
		}
	})

	step(t, "labels and keyboard", func(t *testing.T) {
		b.t = t
		// Every field of every view and dialog has a label.
		unlabelled := eval[[]string](b, `[...document.querySelectorAll("input, select, textarea")]
			.filter(e => e.type !== "hidden" && e.labels.length === 0 && !e.getAttribute("aria-label")).map(e => e.id || e.outerHTML)`)
		if len(unlabelled) > 0 {
			t.Errorf("fields without a label: %v", unlabelled)
		}
		// The sections and the create dialog work from the keyboard alone.
		b.do("open Identification with Enter", chromedp.Focus(css(`#nav a[href="#apps"]`)), chromedp.KeyEvent(kb.Enter),
			chromedp.WaitVisible(css("#apps-view")), until(`document.activeElement === document.querySelector("#apps-title")`))
		b.do("back to the keys with Enter", chromedp.Focus(css(`#nav a[href="#keys"]`)), chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible(css("#keys-view")))
		b.do("open the create dialog with Enter", chromedp.Focus(css("#key-new")), chromedp.KeyEvent(kb.Enter),
			chromedp.WaitVisible(css("#create-name")), until(`document.activeElement === document.querySelector("#create-name")`))
		b.do("Tab to the first permission, Space ticks it", chromedp.KeyEvent(kb.Tab),
			until(`document.activeElement.type === "checkbox"`), chromedp.KeyEvent(" "), until(`document.activeElement.checked === true`))
		b.do("Escape closes it", chromedp.KeyEvent(kb.Escape), chromedp.WaitNotVisible(css("#create-dialog")))
	})

	var secret string
	step(t, "create a key", func(t *testing.T) {
		b.t = t
		b.do("open the create dialog", chromedp.Click(css("#key-new")), chromedp.WaitVisible(css("#create-name")),
			until(`document.querySelectorAll("#create-permissions input[type=checkbox]").length > 10`))
		b.do("fill it in", chromedp.SendKeys(css("#create-name"), "billing-export"),
			chromedp.Click(css("#create-perm-users-track")), chromedp.Click(css("#create-perm-users-export-ids")),
			chromedp.SendKeys(css("#create-allowlist"), "10.20.0.0/16, 192.168.7.0/24, 2001:db8:42::/48"))
		b.shot("02-create-key")
		b.do("create", chromedp.Click(css(`#create-form button[type=submit]`)), chromedp.WaitVisible(css("#secret-dialog[open] #secret-value")),
			until(`document.querySelector("#secret-value").value.startsWith("kr_")`))
		secret = run(b, "read the secret", chromedp.Value(css("#secret-value")))
		if w := text(b, "#secret-dialog .warning"); !strings.Contains(w, "shown this once") {
			t.Errorf("secret dialog warning: %q", w)
		}
		if text(b, "#secret-copy") != "Copy" {
			t.Error("no copy button by the secret")
		}
		b.shot("03-secret-once")
		b.do("close it", chromedp.Click(css(`#secret-dialog [data-close]`)), chromedp.WaitNotVisible(css("#secret-dialog")),
			until(`document.querySelector("#secret-value").value === ""`),
			until(`document.querySelector('tr[data-name="billing-export"]') !== null`))
		if html := eval[string](b, `document.documentElement.outerHTML + document.querySelector("#secret-value").value`); strings.Contains(html, secret) {
			t.Error("the secret is still in the page after its dialog closed")
		}
		row := text(b, `tr[data-name="billing-export"]`)
		for _, want := range []string{"10.20.0.0/16", "192.168.7.0/24", "2001:db8:42::/48", "users.track", "users.export.ids", "active"} {
			if !strings.Contains(row, want) {
				t.Errorf("key row %q lacks %q", row, want)
			}
		}
		b.shot("04-keys")
		if got := verify(n, secret, "10.20.3.4", "users.track"); got != "VALID" {
			t.Errorf("verify from an allowed address: %s, want VALID", got)
		}
		if got := verify(n, secret, "2001:db8:42::7", "users.export.ids"); got != "VALID" {
			t.Errorf("verify from an allowed IPv6 address: %s, want VALID", got)
		}
		if got := verify(n, secret, "10.21.0.1", "users.track"); got != "IP_NOT_ALLOWED" {
			t.Errorf("verify from another address: %s, want IP_NOT_ALLOWED", got)
		}
	})

	step(t, "invalid subnet", func(t *testing.T) {
		b.t = t
		events, seq := auditCount(n, "acme"), applied(n)
		b.do("create with 10.0.0.0/33", chromedp.Click(css("#key-new")), chromedp.WaitVisible(css("#create-name")),
			chromedp.SendKeys(css("#create-name"), "bad-subnet"), chromedp.SendKeys(css("#create-allowlist"), "10.1.0.0/16, 10.0.0.0/33"),
			chromedp.Click(css(`#create-form button[type=submit]`)),
			until(`document.querySelector("#create-allowlist-error").textContent.includes("10.0.0.0/33")`))
		if inv := run(b, "marked invalid", chromedp.AttributeValue(css("#create-allowlist"), "aria-invalid")); inv.Value != "true" {
			t.Errorf("allowlist field aria-invalid %q, want true", inv.Value)
		}
		if other := eval[string](b, `document.querySelector("#create-error").textContent + document.querySelector("#create-name-error").textContent`); other != "" {
			t.Errorf("the error shows elsewhere than at the allowlist field: %q", other)
		}
		b.shot("05-invalid-subnet")
		b.do("cancel", chromedp.Click(css(`#create-form [data-close]`)), chromedp.WaitNotVisible(css("#create-dialog")))
		if got := auditCount(n, "acme"); got != events {
			t.Errorf("audit log: %d events after the refused create, %d before", got, events)
		}
		if got := applied(n); got != seq {
			t.Errorf("stream: at sequence %d after the refused create, %d before", got, seq)
		}
		if _, ok := keyByName(n, "acme", "bad-subnet"); ok {
			t.Error("the refused key exists")
		}
	})

	var key wire.Key
	var beforeEdit time.Time
	step(t, "edit the allowlist", func(t *testing.T) {
		b.t = t
		key, _ = keyByName(n, "acme", "billing-export")
		beforeEdit = time.Now().UTC()
		b.do("edit", chromedp.Click(css(`tr[data-name="billing-export"] [data-action=edit]`)), chromedp.WaitVisible(css("#edit-allowlist")),
			chromedp.SetValue(css("#edit-allowlist"), "10.20.0.0/16\n2001:db8:42::/48\n172.16.0.0/12"),
			chromedp.SendKeys(css("#edit-reason"), "partner office moved – Zürich"),
			chromedp.Click(css(`#edit-form button[type=submit]`)), chromedp.WaitNotVisible(css("#edit-dialog")),
			until(`document.querySelector('tr[data-name="billing-export"]')?.textContent.includes("172.16.0.0/12")`))
		b.do("open the timeline", chromedp.Click(css(`tr[data-name="billing-export"] a[href^="#key/"]`)),
			chromedp.WaitVisible(css(`#timeline li[data-type="keyreg.key.allowlist_updated.v1"]`)))
		entry := `#timeline li[data-type="keyreg.key.allowlist_updated.v1"]`
		added := text(b, entry+" .chip.added")
		removed := text(b, entry+" .chip.removed")
		if added != "172.16.0.0/12" || removed != "192.168.7.0/24" {
			t.Errorf("timeline: added %q, removed %q; want 172.16.0.0/12 and 192.168.7.0/24", added, removed)
		}
		if actor := text(b, entry+" .actor"); actor != key.CreatedBy {
			t.Errorf("timeline actor %q, want the root key %q", actor, key.CreatedBy)
		}
		if ip := text(b, entry+" .actorip"); ip != "127.0.0.1" {
			t.Errorf("timeline: from %q, want 127.0.0.1", ip)
		}
		if why := text(b, entry+" .why"); !strings.Contains(why, "partner office moved – Zürich") {
			t.Errorf("timeline reason %q", why)
		}
		b.shot("06-timeline")

		// As of a moment before the edit: the old allowlist.
		b.do("as of before the edit", chromedp.SetValue(css("#asof-input"), beforeEdit.Format(time.RFC3339Nano)), chromedp.Click(css(`#asof-form button[type=submit]`)),
			chromedp.WaitVisible(css("#asof-allowlist")))
		old := text(b, "#asof-allowlist")
		if !strings.Contains(old, "192.168.7.0/24") || strings.Contains(old, "172.16.0.0/12") {
			t.Errorf("as of %s the allowlist shows %q; want the old one (192.168.7.0/24, no 172.16.0.0/12)", beforeEdit.Format(time.RFC3339Nano), old)
		}
		b.shot("07-as-of")
		// The same from the timeline's button on the creation.
		b.do("as of the creation", chromedp.Click(css(`#timeline li[data-type="keyreg.key.created.v1"] [data-action=asof]`)),
			until(`document.querySelector("#asof-input").value === `+jsString(strconv.FormatUint(key.Version, 10))))
	})

	step(t, "identifiers", func(t *testing.T) {
		b.t = t
		const name = "Été 2026 – Ünïcödé"
		b.do("register a segment", chromedp.Click(css(`#nav a[href="#identifiers"]`)), chromedp.WaitVisible(css("#id-name")),
			chromedp.SetValue(css("#id-kind"), "segment"), chromedp.SendKeys(css("#id-name"), name),
			chromedp.Click(css(`#id-form button[type=submit]`)), until(`document.querySelector("#id-chosen-name").textContent === `+jsString(name)))
		var list struct {
			Identifiers []wire.Identifier `json:"identifiers"`
		}
		n.JSON("GET", "/v1/workspaces/acme/identifiers?kind=segment", n.Root, nil, 200, &list)
		id := ""
		for _, i := range list.Identifiers {
			if i.Name == name {
				id = i.ID
			}
		}
		if id == "" {
			t.Fatalf("segment %q not registered: %+v", name, list.Identifiers)
		}
		b.do("search été", chromedp.Reload(), chromedp.WaitVisible(css("#id-search")), chromedp.SendKeys(css("#id-search"), "été"),
			until(`document.querySelectorAll("#id-results button").length === 1 && document.querySelector("#id-results button").textContent === `+jsString(name)),
			chromedp.Click(css("#id-results button")), until(`document.querySelector("#id-chosen-value").textContent === `+jsString(id)))
		if text(b, "#id-chosen-copy") != "Copy" {
			t.Error("no copy button by the chosen identifier")
		}
		b.shot("08-additional-identifiers")

		b.do("register an app", chromedp.Click(css(`#nav a[href="#apps"]`)), chromedp.WaitVisible(css("#app-name")),
			chromedp.SendKeys(css("#app-name"), "Shop Android"), chromedp.SetValue(css("#app-platform"), "android"),
			chromedp.Click(css(`#app-form button[type=submit]`)), until(`document.querySelector("#apps-list").textContent.includes("Shop Android")`))
		b.shot("09-identification")
		b.do("rename it", chromedp.Click(css(`#apps-list li[data-name="Shop Android"] [data-action=rename]`)), chromedp.WaitVisible(css("#rename-name")),
			chromedp.SetValue(css("#rename-name"), "Shop for Android"), chromedp.Click(css(`#rename-form button[type=submit]`)),
			until(`document.querySelector('#apps-list li[data-name="Shop for Android"]') !== null`))
		b.do("retire it", chromedp.Click(css(`#apps-list li[data-name="Shop for Android"] [data-action=retire]`)), chromedp.WaitVisible(css("#confirm-yes")),
			chromedp.Click(css("#confirm-yes")), until(`document.querySelector("#apps-list li") === null`))
		var apps struct {
			Identifiers []wire.Identifier `json:"identifiers"`
		}
		n.JSON("GET", "/v1/workspaces/acme/identifiers?kind=app", n.Root, nil, 200, &apps)
		if len(apps.Identifiers) != 0 {
			t.Errorf("active apps after retiring the only one: %+v", apps.Identifiers)
		}
	})

	step(t, "workspace switcher", func(t *testing.T) {
		b.t = t
		pick := func(ws string) string {
			return `(() => { const s = document.querySelector("#workspace"); s.value = ` + jsString(ws) + `; s.dispatchEvent(new Event("change")); return true; })()`
		}
		eval[bool](b, pick("system"))
		b.do("keys of system", chromedp.Click(css(`#nav a[href="#keys"]`)), until(`document.querySelector('tr[data-name="root"]') !== null`))
		eval[bool](b, pick("acme"))
		b.do("keys of acme", until(`document.querySelector('tr[data-name="billing-export"]') !== null && document.querySelector('tr[data-name="root"]') === null`),
			until(`document.querySelector("#live").textContent === "live"`))
	})

	step(t, "live", func(t *testing.T) {
		b.t = t
		b.do("open the keys", chromedp.Click(css(`#nav a[href="#keys"]`)), chromedp.WaitVisible(css("#keys-view")),
			until(`document.querySelector("#live").textContent === "live"`))
		eval[bool](b, `window.notReloaded = true`)
		edit := `tr[data-name="billing-export"] [data-action=edit]`
		b.do("focus a key's Edit button", chromedp.Focus(css(edit)))
		n.JSON("POST", "/v1/workspaces/acme/keys", n.Root, map[string]any{"name": "made-elsewhere", "permissions": []string{"users.track"}}, 201, nil)
		b.do("the new key shows", until(`document.querySelector('tr[data-name="made-elsewhere"]') !== null`))
		if !eval[bool](b, `window.notReloaded === true`) {
			t.Error("the page reloaded")
		}
		// A keyboard user keeps their place: the focus stays on the same button.
		if !eval[bool](b, `document.activeElement === document.querySelector(`+jsString(edit)+`)`) {
			t.Errorf("the live update moved the focus to %s", eval[string](b, `document.activeElement.outerHTML.slice(0, 120)`))
		}
	})

	step(t, "CSRF", func(t *testing.T) {
		b.t = t
		var cookie string
		for _, c := range b.cookies() {
			if c.Name == "keyreg_session" {
				cookie = c.Value
			}
		}
		before := applied(n)
		// From the page, with its cookie but without the token.
		status := eval[int](b, `fetch("/v1/workspaces/acme/identifiers", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({kind: "segment", name: "csrf-1"})}).then(r => r.status)`)
		if status != http.StatusForbidden {
			t.Errorf("a write from the page without the CSRF token: %d, want 403", status)
		}
		// From elsewhere with the cookie: no token, or cross-site.
		body := map[string]any{"kind": "segment", "name": "csrf-2"}
		if st, _, b := n.Do("POST", "/v1/workspaces/acme/identifiers", "", body, "Cookie", "keyreg_session="+cookie); st != http.StatusForbidden {
			t.Errorf("a write with the cookie and no token: %d %s, want 403", st, b)
		}
		if st, _, b := n.Do("POST", "/v1/workspaces/acme/identifiers", "", body, "Cookie", "keyreg_session="+cookie, "Sec-Fetch-Site", "cross-site"); st != http.StatusForbidden {
			t.Errorf("a cross-site write with the cookie: %d %s, want 403", st, b)
		}
		if st, _, b := n.Do("POST", "/v1/workspaces/acme/identifiers", "", body, "Cookie", "keyreg_session="+cookie, "Origin", "https://evil.example"); st != http.StatusForbidden {
			t.Errorf("a write from another origin with the cookie: %d %s, want 403", st, b)
		}
		if got := applied(n); got != before {
			t.Errorf("refused writes appended events: stream at %d, was %d", got, before)
		}
		// A read with the cookie works (the session is good).
		if st, _, b := n.Do("GET", "/v1/workspaces/acme/keys", "", nil, "Cookie", "keyreg_session="+cookie); st != http.StatusOK {
			t.Errorf("a read with the session cookie: %d %s", st, b)
		}
	})

	step(t, "rotate", func(t *testing.T) {
		b.t = t
		b.do("rotate", chromedp.Click(css(`#nav a[href="#keys"]`)), chromedp.WaitVisible(css(`tr[data-name="made-elsewhere"] [data-action=rotate]`)),
			chromedp.Click(css(`tr[data-name="made-elsewhere"] [data-action=rotate]`)), chromedp.WaitVisible(css("#rotate-grace")),
			chromedp.SetValue(css("#rotate-grace"), "600"), chromedp.SendKeys(css("#rotate-reason"), "yearly rotation"),
			chromedp.Click(css(`#rotate-form button[type=submit]`)), chromedp.WaitVisible(css("#secret-dialog[open] #secret-value")),
			until(`document.querySelector("#secret-value").value.startsWith("kr_")`))
		rotated := run(b, "the new secret", chromedp.Value(css("#secret-value")))
		b.do("close it", chromedp.Click(css(`#secret-dialog [data-close]`)), chromedp.WaitNotVisible(css("#secret-dialog")))
		if got := verify(n, rotated, "192.0.2.1", "users.track"); got != "VALID" {
			t.Errorf("verify the rotated secret: %s, want VALID", got)
		}
		b.do("the timeline shows it", chromedp.Click(css(`tr[data-name="made-elsewhere"] a[href^="#key/"]`)),
			chromedp.WaitVisible(css(`#timeline li[data-type="keyreg.key.secret_rotated.v1"]`)))
		if details := text(b, "#key-details"); !strings.Contains(details, "Old secret valid until") {
			t.Errorf("key details after a rotation with grace: %q", details)
		}
		if why := text(b, `#timeline li[data-type="keyreg.key.secret_rotated.v1"]`); !strings.Contains(why, "yearly rotation") || !strings.Contains(why, "old secret valid until") {
			t.Errorf("rotation in the timeline: %q", why)
		}
	})

	step(t, "revoke", func(t *testing.T) {
		b.t = t
		b.do("revoke", chromedp.Click(css(`#nav a[href="#keys"]`)), chromedp.WaitVisible(css(`tr[data-name="billing-export"] [data-action=revoke]`)),
			chromedp.Click(css(`tr[data-name="billing-export"] [data-action=revoke]`)), chromedp.WaitVisible(css("#revoke-reason")),
			chromedp.SendKeys(css("#revoke-reason"), "contract ended"), chromedp.Click(css("#revoke-confirm")),
			chromedp.Click(css(`#revoke-form button[type=submit]`)), chromedp.WaitNotVisible(css("#revoke-dialog")),
			until(`document.querySelector('tr[data-name="billing-export"] .status')?.textContent === "revoked"`))
		b.shot("10-revoked")
		if got := verify(n, secret, "10.20.3.4", "users.track"); got != "REVOKED" {
			t.Errorf("verify after revoking: %s, want REVOKED", got)
		}
		b.do("the timeline shows it", chromedp.Click(css(`tr[data-name="billing-export"] a[href^="#key/"]`)),
			chromedp.WaitVisible(css(`#timeline li[data-type="keyreg.key.revoked.v1"]`)))
		if why := text(b, `#timeline li[data-type="keyreg.key.revoked.v1"] .why`); !strings.Contains(why, "contract ended") {
			t.Errorf("revocation reason %q", why)
		}
	})

	step(t, "audit", func(t *testing.T) {
		b.t = t
		b.do("open the audit log", chromedp.Click(css(`#nav a[href="#audit"]`)), chromedp.WaitVisible(css("#audit-view")),
			until(`document.querySelectorAll("#audit-table tbody tr").length > 3`),
			chromedp.SetValue(css("#audit-key"), key.ID), chromedp.SetValue(css("#audit-type"), "keyreg.key.allowlist_updated.v1"),
			chromedp.Click(css(`#audit-form button[type=submit]`)), until(`document.querySelectorAll("#audit-table tbody tr").length === 1`))
		if row := text(b, "#audit-table tbody tr"); !strings.Contains(row, "172.16.0.0/12") || !strings.Contains(row, "partner office moved") {
			t.Errorf("filtered audit row %q", row)
		}
		href := run(b, "csv link", chromedp.AttributeValue(css("#export-csv"), "href")).Value
		if !strings.Contains(href, "format=csv") || !strings.Contains(href, "key="+key.ID) {
			t.Errorf("CSV export link %q", href)
		}
		csv := eval[string](b, `fetch(document.querySelector("#export-csv").href).then(r => r.ok ? r.text() : "HTTP " + r.status)`)
		if !strings.Contains(csv, key.ID) || !strings.Contains(csv, "allowlist_updated") {
			t.Errorf("the CSV download: %.300q", csv)
		}
		jsonl := eval[string](b, `fetch(document.querySelector("#export-jsonl").href).then(r => r.ok ? r.text() : "HTTP " + r.status)`)
		if !strings.Contains(jsonl, `"checkpoint"`) {
			t.Errorf("the JSON Lines download has no checkpoint: %.300q", jsonl)
		}
		b.do("checkpoint status", chromedp.Click(css(`#audit-form button[type=submit]`)), chromedp.Reload(), chromedp.WaitVisible(css("#audit-view")),
			until(`document.querySelector("#checkpoint-status")?.textContent.includes("tree size")`))
		b.shot("11-audit")
	})

	step(t, "narrow screen and sign out", func(t *testing.T) {
		b.t = t
		b.do("narrow", chromedp.EmulateViewport(390, 844), chromedp.Click(css(`#nav a[href="#keys"]`)),
			until(`document.querySelector('tr[data-name="made-elsewhere"]') !== null`))
		if over := eval[bool](b, `document.documentElement.scrollWidth > window.innerWidth + 1`); over {
			t.Error("the keys page scrolls sideways on a narrow screen")
		}
		b.shot("12-keys-narrow")
		b.do("sign out", chromedp.ResetViewport(), chromedp.Click(css("#signout")), chromedp.WaitVisible(css("#signin-secret")))
		if slices.ContainsFunc(b.cookies(), func(c *network.Cookie) bool { return c.Name == "keyreg_session" }) {
			t.Error("the session cookie is still set after sign-out")
		}
	})
}

// TestSessionEndsWithKey: a console session works only while its key does: revoking the
// key ends it, and sign-out forgets it.
func TestSessionEndsWithKey(t *testing.T) {
	n := nodetest.StartBinary(t)
	n.JSON("POST", "/v1/workspaces", n.Root, map[string]any{"id": "acme", "name": "Acme"}, 201, nil)
	var k wire.KeyWithSecret
	n.JSON("POST", "/v1/workspaces/acme/keys", n.Root, map[string]any{"name": "reviewer", "permissions": []string{"keyreg.keys.read", "keyreg.audit.read"}}, 201, &k)

	st, h, body := n.Do("POST", "/console/session", "", map[string]string{"secret": k.Secret})
	if st != http.StatusOK {
		t.Fatalf("sign in: %d %s", st, body)
	}
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == "keyreg_session" {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.MaxAge <= 0 {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, expiring", cookie)
	}
	if strings.Contains(string(body), k.Secret) || strings.Contains(cookie.Value, k.Secret) {
		t.Error("the sign-in answer gives the key back")
	}
	read := func() int {
		st, _, _ := n.Do("GET", "/v1/workspaces/acme/keys", "", nil, "Cookie", "keyreg_session="+cookie.Value)
		return st
	}
	if st := read(); st != http.StatusOK {
		t.Fatalf("read with the session: %d", st)
	}
	if st, _, b := n.Do("POST", "/console/session", "", map[string]string{"secret": "kr_wrong"}); st != http.StatusUnauthorized {
		t.Errorf("sign in with a wrong key: %d %s, want 401", st, b)
	}
	if st, _, b := n.Do("POST", "/console/session", "", map[string]string{"secret": k.Secret}, "Sec-Fetch-Site", "cross-site"); st != http.StatusForbidden {
		t.Errorf("a cross-site sign-in: %d %s, want 403", st, b)
	}
	n.JSON("DELETE", "/v1/workspaces/acme/keys/"+k.Key.ID, n.Root, nil, 200, nil)
	if st := read(); st != http.StatusUnauthorized {
		t.Errorf("read with the session of a revoked key: %d, want 401", st)
	}

	// Sign-out forgets the session.
	var k2 wire.KeyWithSecret
	n.JSON("POST", "/v1/workspaces/acme/keys", n.Root, map[string]any{"name": "reviewer-2", "permissions": []string{"keyreg.keys.read"}}, 201, &k2)
	_, h, body = n.Do("POST", "/console/session", "", map[string]string{"secret": k2.Secret})
	var info struct {
		CSRF string `json:"csrf"`
	}
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatal(err)
	}
	id := ""
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == "keyreg_session" {
			id = c.Value
		}
	}
	// The reason for a change comes percent-encoded (a browser sends only Latin-1 headers):
	// one line of UTF-8, else 400 naming the field.
	st, _, body = n.Do("POST", "/v1/workspaces/acme/identifiers", "", map[string]any{"kind": "segment", "name": "x"},
		"Cookie", "keyreg_session="+id, "X-Keyreg-Csrf", info.CSRF, "X-Keyreg-Reason-Encoded", "two%0Alines")
	var p wire.Problem
	json.Unmarshal(body, &p)
	if st != http.StatusBadRequest || p.Field != "reason" || p.Value != "two%0Alines" {
		t.Errorf("a reason of two lines: %d %s, want 400 naming the field reason", st, body)
	}
	if st, _, b := n.Do("DELETE", "/console/session", "", nil, "Cookie", "keyreg_session="+id); st != http.StatusForbidden {
		t.Errorf("sign-out without the CSRF token: %d %s, want 403", st, b)
	}
	if st, _, b := n.Do("DELETE", "/console/session", "", nil, "Cookie", "keyreg_session="+id, "X-Keyreg-Csrf", info.CSRF); st != http.StatusNoContent {
		t.Errorf("sign-out: %d %s", st, b)
	}
	if st, _, _ := n.Do("GET", "/v1/workspaces/acme/keys", "", nil, "Cookie", "keyreg_session="+id); st != http.StatusUnauthorized {
		t.Errorf("read after sign-out: %d, want 401", st)
	}
	// A stale cookie does not get in the way of public endpoints or of a bearer token.
	if st, _, b := n.Do("GET", "/healthz", "", nil, "Cookie", "keyreg_session="+id); st != http.StatusOK {
		t.Errorf("GET /healthz with a stale session cookie: %d %s", st, b)
	}
	if st, _, b := n.Do("GET", "/v1/workspaces/acme/keys", n.Root, nil, "Cookie", "keyreg_session="+id); st != http.StatusOK {
		t.Errorf("a bearer request with a stale session cookie: %d %s", st, b)
	}
}

// TestStaticFiles: the console's files carry the security headers, and no directory is
// listed.
func TestStaticFiles(t *testing.T) {
	n := nodetest.StartBinary(t)
	for _, path := range []string{"/", "/console/console.css", "/console/js/app.js"} {
		st, h, b := n.Do("GET", path, "", nil)
		if st != http.StatusOK || len(b) == 0 {
			t.Errorf("GET %s: %d", path, st)
		}
		if !strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: headers %v", path, h)
		}
	}
	if st, h, _ := n.Do("GET", "/console/js/app.js", "", nil); !strings.HasPrefix(h.Get("Content-Type"), "text/javascript") {
		t.Errorf("app.js: %d, Content-Type %q", st, h.Get("Content-Type"))
	}
	for _, path := range []string{"/console/", "/console/js/"} {
		if st, _, b := n.Do("GET", path, "", nil); st != http.StatusNotFound {
			t.Errorf("GET %s: %d %.100s, want 404", path, st, b)
		}
	}
	if st, _, _ := n.Do("POST", "/", "", "{}"); st != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", st)
	}
}
