package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

// HTTPOptions size a `keyreg bench --http` run.
type HTTPOptions struct {
	// Addr is an existing server to drive (host:port or an http:// URL) with Token, a
	// key holding keyreg.admin; empty: RunHTTP starts `keyreg serve` (Exe) on a fresh
	// data dir under Dir, listening on 127.0.0.1 on a port chosen at run time.
	Addr, Token string
	Exe         string // the keyreg binary; "" for os.Executable()
	Dir         string // the child's data dir and the raw-append stream go under it
	Writes      int    // writes of each run from many clients; 0 means 2000
	SoloWrites  int    // writes of each run from 1 client; 0 means 500
	Clients     int    // concurrent writers; 0 means 64
	Keys        int    // keys the concurrent writers update; 0 means 256
	SoloKeys    int    // keys the 1-client run updates in turn; 0 means 16
	// VerifyClients and Verifies size the verify run and its bare-handler baseline (0:
	// 16 clients, 20000 requests).
	VerifyClients, Verifies int
	// PeerScript, when set, is a script (../shared/peer/postgres-peer.sh) whose output
	// lines "..., N clients: tps = X" are reported beside the HTTP writes of N clients.
	PeerScript string
	// ServeArgs are more flags for the child `keyreg serve`.
	ServeArgs []string
	// Log, when set, receives the child's output; PeerOut the peer script's.
	Log, PeerOut io.Writer
}

func (o *HTTPOptions) defaults() {
	for _, d := range []struct {
		v   *int
		def int
	}{{&o.Writes, 2000}, {&o.SoloWrites, 500}, {&o.Clients, 64},
		{&o.Keys, 256}, {&o.SoloKeys, 16}, {&o.VerifyClients, 16}, {&o.Verifies, 20000}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.PeerOut == nil {
		o.PeerOut = io.Discard
	}
}

// HTTPResult is one figure of RunHTTP beside the baseline it is compared with.
type HTTPResult struct {
	Name     string        `json:"what"`
	Count    int           `json:"count"`
	Unit     string        `json:"unit"`
	Took     time.Duration `json:"took_ns"`
	P50      time.Duration `json:"p50_ns,omitempty"`
	P99      time.Duration `json:"p99_ns,omitempty"`
	BaseName string        `json:"baseline,omitempty"` // "" when there is none
	BaseRate float64       `json:"baseline_rate,omitempty"`
	BaseP99  time.Duration `json:"baseline_p99_ns,omitempty"`
}

// Rate is Count per second.
func (r HTTPResult) Rate() float64 { return float64(r.Count) / r.Took.Seconds() }

// Ratio is Rate over the baseline's rate (0 without a baseline).
func (r HTTPResult) Ratio() float64 {
	if r.BaseRate == 0 {
		return 0
	}
	return r.Rate() / r.BaseRate
}

// MarshalJSON adds the rate and the ratio to the fields.
func (r HTTPResult) MarshalJSON() ([]byte, error) {
	type plain HTTPResult
	return json.Marshal(struct {
		plain
		Rate  float64 `json:"rate"`
		Ratio float64 `json:"ratio,omitempty"`
	}{plain(r), r.Rate(), r.Ratio()})
}

// PrintHTTP writes a result as one line: `<what> <count> <unit> in <took> <rate>/s`, the
// latencies, then the baseline's rate and the ratio.
func PrintHTTP(w io.Writer, r HTTPResult) {
	fmt.Fprintf(w, "%-48s %7d %-8s in %8s %9.0f/s", r.Name, r.Count, r.Unit, r.Took.Round(time.Millisecond), r.Rate())
	if r.P50 > 0 {
		fmt.Fprintf(w, "  p50 %8s  p99 %8s", roundLatency(r.P50), roundLatency(r.P99))
	}
	if r.BaseName != "" {
		fmt.Fprintf(w, "  | %s %.0f/s", r.BaseName, r.BaseRate)
		if r.BaseP99 > 0 {
			fmt.Fprintf(w, " p99 %s", roundLatency(r.BaseP99))
		}
		fmt.Fprintf(w, "  ratio %.2f", r.Ratio())
	}
	fmt.Fprintln(w)
}

func roundLatency(d time.Duration) time.Duration {
	if d > 10*time.Millisecond {
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// RunHTTP drives a real `keyreg serve` end to end over HTTP with keep-alive clients and
// reports each figure beside its raw baseline measured in the same run: durable allowlist
// updates (PUT .../allowlist) from opts.Clients clients over opts.Keys keys against raw
// atomic batches of 100 of as many messages, from 1 client over opts.SoloKeys keys and on
// one key against raw appends one at a time, CreateKey from opts.Clients clients, and
// POST /v1/verify against the same server's bare GET /healthz. The raw appends go to an
// embedded stream under opts.Dir (fsync on, as the server's). Every write must be
// acknowledged with the change in its answer (read-your-writes), and each key's last
// change must be visible to a read afterwards, or RunHTTP fails.
func RunHTTP(ctx context.Context, opts HTTPOptions, report func(HTTPResult)) error {
	opts.defaults()
	base, token := opts.Addr, strings.TrimSpace(opts.Token)
	if base == "" {
		child, err := startServe(ctx, opts)
		if err != nil {
			return err
		}
		defer child.stop()
		base, token = child.url, child.root
	} else if token == "" {
		return errors.New("bench --http: --addr needs --token, the secret of a key with keyreg.admin")
	}
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	raw, err := server.OpenStream(ctx, server.Config{DataDir: filepath.Join(opts.Dir, "raw")})
	if err != nil {
		return err
	}
	defer raw.Close()
	h := &httpRunner{ctx: ctx, opts: opts, base: strings.TrimRight(base, "/"), token: token, raw: raw.Log, report: report,
		client: &http.Client{Transport: &http.Transport{MaxIdleConns: 0, MaxIdleConnsPerHost: 2 * max(opts.Clients, opts.VerifyClients),
			IdleConnTimeout: time.Minute, DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext}, Timeout: time.Minute}}
	if err := h.setup(); err != nil {
		return err
	}
	var peer map[int]float64
	if opts.PeerScript != "" {
		if peer, err = runPeer(ctx, opts.PeerScript, opts.PeerOut); err != nil {
			return err
		}
	}
	for _, step := range []func(map[int]float64) error{h.updatesMany, h.updatesSolo, h.updatesOneKey, h.creates, h.verifies} {
		if err := step(peer); err != nil {
			return err
		}
	}
	return nil
}

// httpRunner runs the measurements of one RunHTTP.
type httpRunner struct {
	ctx    context.Context
	opts   HTTPOptions
	base   string
	token  string
	client *http.Client
	raw    events.Log
	report func(HTTPResult)

	ws     string
	keys   []string // ids of the keys the updates change
	secret string   // of a key CreateKey made, for verify
	nets   atomic.Uint64
}

// call sends a JSON request and decodes a 2xx answer into out (when not nil).
func (h *httpRunner) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(h.ctx, method, h.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+h.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &statusError{method: method, path: path, status: resp.StatusCode, text: resp.Status, body: bytes.TrimSpace(data)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

// statusError is a call's answer other than 2xx.
type statusError struct {
	method, path, text string
	status             int
	body               []byte
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: %s: %s", e.method, e.path, e.text, e.body)
}

// setup makes a workspace of its own and the keys the updates change.
func (h *httpRunner) setup() error {
	h.ws = "bench-" + strings.ToLower(events.NewID()[16:])
	if err := h.call("POST", "/v1/workspaces", map[string]string{"id": h.ws, "name": "keyreg bench --http"}, nil); err != nil {
		return err
	}
	h.keys = make([]string, h.opts.Keys)
	clients := min(h.opts.Clients, h.opts.Keys)
	_, err := drive(h.opts.Keys, clients, func(c, j int) error {
		i := c + j*clients
		k, err := h.createKey(i)
		h.keys[i] = k.Key.ID
		return err
	})
	return err
}

func (h *httpRunner) createKey(i int) (wire.KeyWithSecret, error) {
	var k wire.KeyWithSecret
	err := h.call("POST", "/v1/workspaces/"+h.ws+"/keys", map[string]any{"name": fmt.Sprint("bench key ", i),
		"permissions": []string{"users.track"}, "allowlist": []string{"10.0.0.0/8"}}, &k)
	if err == nil && (k.Key.ID == "" || k.Secret == "") {
		err = fmt.Errorf("create key %d: the answer has no id or secret", i)
	}
	return k, err
}

// nextNet is a new /24 for an allowlist, different for each write of a run.
func (h *httpRunner) nextNet() string {
	n := h.nets.Add(1)
	return fmt.Sprintf("10.%d.%d.0/24", n>>8&255, n&255)
}

// putAllowlist replaces key id's allowlist with a new network and checks the answer shows
// it (the answer is read from the views after the write: read-your-writes).
func (h *httpRunner) putAllowlist(id string) (string, error) {
	cidr := h.nextNet()
	var k wire.Key
	if err := h.call("PUT", "/v1/workspaces/"+h.ws+"/keys/"+id+"/allowlist", map[string][]string{"allowlist": {cidr}}, &k); err != nil {
		return "", err
	}
	if k.ID != id || !slices.Equal(k.Allowlist, []string{cidr}) {
		return "", fmt.Errorf("PUT allowlist %s %s: answered key %s with allowlist %v", id, cidr, k.ID, k.Allowlist)
	}
	return cidr, nil
}

// checkVisible reads each key of last (id: the network last written) and checks it holds
// that network.
func (h *httpRunner) checkVisible(last map[string]string) error {
	for id, cidr := range last {
		var k wire.Key
		if err := h.call("GET", "/v1/workspaces/"+h.ws+"/keys/"+id, nil, &k); err != nil {
			return err
		}
		if !slices.Equal(k.Allowlist, []string{cidr}) {
			return fmt.Errorf("key %s: allowlist %v after the run, want [%s]", id, k.Allowlist, cidr)
		}
	}
	return nil
}

// updates measures writes allowlist updates from clients clients over keys, client c
// updating keys c, c+clients, ... in turn so that each key's last change is known; then
// it checks each key shows its last change.
func (h *httpRunner) updates(name string, writes, clients int, keys []string) (HTTPResult, error) {
	clients = min(clients, len(keys), writes)
	last := make([]map[string]string, clients)
	for c := range last {
		last[c] = map[string]string{}
	}
	start := time.Now()
	lat, err := drive(writes, clients, func(c, j int) error {
		mine := (len(keys) - c + clients - 1) / clients
		id := keys[c+(j%mine)*clients]
		cidr, err := h.putAllowlist(id)
		last[c][id] = cidr
		return err
	})
	took := time.Since(start)
	if err != nil {
		return HTTPResult{}, fmt.Errorf("%s: %w", name, err)
	}
	all := map[string]string{}
	for _, m := range last {
		for id, cidr := range m {
			all[id] = cidr
		}
	}
	if err := h.checkVisible(all); err != nil {
		return HTTPResult{}, fmt.Errorf("%s: %w", name, err)
	}
	return withLatency(HTTPResult{Name: name, Count: writes, Unit: "writes", Took: took}, lat), nil
}

// updatesMany: opts.Clients clients over opts.Keys keys against raw atomic batches of 100
// of as many messages, and the peer's rate at as many clients.
func (h *httpRunner) updatesMany(peer map[int]float64) error {
	return h.againstBatches(peer, func() (HTTPResult, error) {
		return h.updates(fmt.Sprintf("HTTP PUT allowlist, %d clients, %d keys", h.opts.Clients, len(h.keys)), h.opts.Writes, h.opts.Clients, h.keys)
	})
}

// againstBatches runs measure after raw atomic batches of 100 of the same number of
// messages and reports it beside them, and beside the peer's rate at as many clients.
func (h *httpRunner) againstBatches(peer map[int]float64, measure func() (HTTPResult, error)) error {
	raw, err := h.rawBatches(h.opts.Writes)
	if err != nil {
		return err
	}
	r, err := measure()
	if err != nil {
		return err
	}
	r.BaseName, r.BaseRate = "raw append, atomic batches of 100", raw
	h.report(r)
	h.reportPeer(r, peer, h.opts.Clients)
	return nil
}

// updatesSolo: 1 client over opts.SoloKeys keys in turn against raw appends one at a time.
func (h *httpRunner) updatesSolo(peer map[int]float64) error {
	keys := h.keys[:min(h.opts.SoloKeys, len(h.keys))]
	return h.againstOneAtATime(peer, func() (HTTPResult, error) {
		return h.updates(fmt.Sprintf("HTTP PUT allowlist, 1 client, %d keys", len(keys)), h.opts.SoloWrites, 1, keys)
	})
}

// updatesOneKey: 1 client always on the same key against raw appends one at a time.
func (h *httpRunner) updatesOneKey(peer map[int]float64) error {
	return h.againstOneAtATime(nil, func() (HTTPResult, error) {
		return h.updates("HTTP PUT allowlist, 1 client, same key", h.opts.SoloWrites, 1, h.keys[len(h.keys)-1:])
	})
}

func (h *httpRunner) againstOneAtATime(peer map[int]float64, measure func() (HTTPResult, error)) error {
	raw, err := h.rawOneAtATime(h.opts.SoloWrites)
	if err != nil {
		return err
	}
	r, err := measure()
	if err != nil {
		return err
	}
	r.BaseName, r.BaseRate = "raw append, one at a time", raw
	h.report(r)
	h.reportPeer(r, peer, 1)
	return nil
}

// reportPeer reports r again beside the peer's rate at clients clients, if measured.
func (h *httpRunner) reportPeer(r HTTPResult, peer map[int]float64, clients int) {
	if rate, ok := peer[clients]; ok {
		r.Name += ", vs peer"
		r.BaseName, r.BaseRate, r.BaseP99 = fmt.Sprintf("postgres durable update+audit, %d clients", clients), rate, 0
		h.report(r)
	}
}

// creates measures CreateKey from opts.Clients clients (each answer holds the new key and
// its secret) against raw atomic batches of 100.
func (h *httpRunner) creates(peer map[int]float64) error {
	return h.againstBatches(nil, func() (HTTPResult, error) {
		name := fmt.Sprintf("HTTP CreateKey, %d clients", h.opts.Clients)
		start := time.Now()
		lat, err := drive(h.opts.Writes, h.opts.Clients, func(c, j int) error {
			k, err := h.createKey(len(h.keys) + c + j*h.opts.Clients)
			if c == 0 && j == 0 {
				h.secret = k.Secret // a key no update changes, for verify
			}
			return err
		})
		took := time.Since(start)
		if err != nil {
			return HTTPResult{}, fmt.Errorf("%s: %w", name, err)
		}
		return withLatency(HTTPResult{Name: name, Count: h.opts.Writes, Unit: "writes", Took: took}, lat), nil
	})
}

// verifies measures the bare GET /healthz and then POST /v1/verify from opts.VerifyClients
// clients, and reports verify beside the bare handler.
func (h *httpRunner) verifies(map[int]float64) error {
	n, clients := h.opts.Verifies, h.opts.VerifyClients
	run := func(name string, f func() error) (HTTPResult, error) {
		start := time.Now()
		lat, err := drive(n, clients, func(int, int) error { return f() })
		took := time.Since(start)
		if err != nil {
			return HTTPResult{}, fmt.Errorf("%s: %w", name, err)
		}
		return withLatency(HTTPResult{Name: name, Count: n, Unit: "requests", Took: took}, lat), nil
	}
	bare, err := run(fmt.Sprintf("HTTP GET /healthz, %d clients", clients), func() error {
		var out struct{ Status string }
		if err := h.call("GET", "/healthz", nil, &out); err != nil {
			return err
		}
		if out.Status != "ok" {
			return fmt.Errorf("healthz answered %q", out.Status)
		}
		return nil
	})
	if err != nil {
		return err
	}
	req := wire.VerifyRequest{Key: h.secret, IP: "10.1.2.3", Permission: "users.track"}
	v, err := run(fmt.Sprintf("HTTP POST /v1/verify, %d clients", clients), func() error {
		var out wire.VerifyResponse
		if err := h.call("POST", "/v1/verify", req, &out); err != nil {
			return err
		}
		if !out.Valid {
			return fmt.Errorf("verify answered %s", out.Code)
		}
		return nil
	})
	if err != nil {
		return err
	}
	v.BaseName, v.BaseRate, v.BaseP99 = "bare GET /healthz", bare.Rate(), bare.P99
	h.report(bare)
	h.report(v)
	return nil
}

// rawOneAtATime is the rate of n appends of one message each, one after another.
func (h *httpRunner) rawOneAtATime(n int) (float64, error) {
	start := time.Now()
	for range n {
		if _, err := h.raw.Append(h.ctx, []events.Message{message("bench-raw")}); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// rawBatches is the rate of appending n messages in atomic batches of 100.
func (h *httpRunner) rawBatches(n int) (float64, error) {
	start := time.Now()
	for i := 0; i < n; i += 100 {
		batch := make([]events.Message, min(100, n-i))
		for j := range batch {
			batch[j] = message("bench-raw")
		}
		if _, err := h.raw.Append(h.ctx, batch); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// drive calls f(c, j) n times from clients goroutines: client c makes its calls j = 0,
// 1, ... in order, the n calls shared out evenly (client c's call j is the (c+j*clients)th).
// It returns every call's latency and the first error; a client stops at its first error.
func drive(n, clients int, f func(c, j int) error) ([]time.Duration, error) {
	lats := make([][]time.Duration, clients)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	for c := range clients {
		mine := n / clients
		if c < n%clients {
			mine++
		}
		wg.Go(func() {
			lats[c] = make([]time.Duration, 0, mine)
			for j := range mine {
				start := time.Now()
				if err := f(c, j); err != nil {
					errs[c] = err
					return
				}
				lats[c] = append(lats[c], time.Since(start))
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return slices.Concat(lats...), nil
}

// withLatency sets r's p50 and p99 from the latencies.
func withLatency(r HTTPResult, lat []time.Duration) HTTPResult {
	if len(lat) == 0 {
		return r
	}
	slices.Sort(lat)
	r.P50, r.P99 = lat[len(lat)/2], lat[min(len(lat)*99/100, len(lat)-1)]
	return r
}

// serveChild is a `keyreg serve` started by RunHTTP.
type serveChild struct {
	cmd    *exec.Cmd
	exited chan struct{}
	url    string
	root   string
}

// startServe starts `keyreg serve` on a fresh data dir under opts.Dir, on 127.0.0.1 with
// a port chosen at run time, and waits until it is ready.
func startServe(ctx context.Context, opts HTTPOptions) (*serveChild, error) {
	exe := opts.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(opts.Dir, "serve")
	keyFile := filepath.Join(opts.Dir, "root.key")
	args := append([]string{"serve", "--data", data, "--http", "127.0.0.1:0", "--nats-listen", "",
		"--bootstrap-key-file", keyFile, "--max-keys-per-workspace", "-1"}, opts.ServeArgs...)
	cmd := exec.Command(exe, args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench --http: start %s serve: %w", exe, err)
	}
	c := &serveChild{cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); pw.Close(); close(c.exited) }()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(opts.Log, line)
			if m := servingAddr.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	select {
	case a := <-addr:
		c.url = "http://" + a
	case <-c.exited:
		return nil, fmt.Errorf("bench --http: keyreg serve ended before it served (%v)", cmd.ProcessState)
	case <-ctx.Done():
		c.stop()
		return nil, fmt.Errorf("bench --http: keyreg serve did not serve: %w", ctx.Err())
	}
	for {
		resp, err := http.Get(c.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-ctx.Done():
			c.stop()
			return nil, fmt.Errorf("bench --http: keyreg serve not ready: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	root, err := os.ReadFile(keyFile)
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("bench --http: the root key: %w", err)
	}
	c.root = strings.TrimSpace(string(root))
	return c, nil
}

var servingAddr = regexp.MustCompile(`keyreg serving.* http=(\S+)`)

// stop sends the child SIGTERM and waits for it to stop (SIGKILL after 30 seconds).
func (c *serveChild) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

var peerLine = regexp.MustCompile(`durable update.*?(\d+) clients: tps = ([0-9.]+)`)

// runPeer runs the peer script and returns its durable update rates by clients.
func runPeer(ctx context.Context, script string, log io.Writer) (map[int]float64, error) {
	out, err := exec.CommandContext(ctx, script).CombinedOutput()
	log.Write(out)
	if err != nil {
		return nil, fmt.Errorf("bench --http: peer script %s: %w: %s", script, err, bytes.TrimSpace(out))
	}
	rates := map[int]float64{}
	for _, m := range peerLine.FindAllStringSubmatch(string(out), -1) {
		c, _ := strconv.Atoi(m[1])
		rates[c], _ = strconv.ParseFloat(m[2], 64)
	}
	if len(rates) == 0 {
		return nil, fmt.Errorf("bench --http: peer script %s printed no durable update rate: %s", script, bytes.TrimSpace(out))
	}
	return rates, nil
}
