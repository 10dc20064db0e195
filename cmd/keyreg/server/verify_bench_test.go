package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// BenchmarkVerifyVsBare drives one in-process node (the handler `keyreg serve` builds, on
// its own http.Server on 127.0.0.1: body buffering, the swap lock, metrics, route lookup,
// huma's middleware with request ids, and its limits) with N concurrent keep-alive clients
// in alternating rounds: POST /v1/verify of a valid key with a registry key holding
// keyreg.verify, then GET /healthz, then the other way round. It prints each round's rate,
// p50 and p99 of both and their ratios, and reports the medians of the ratios.
//
// /healthz is the bare handler: it is registered like verify, so it passes every layer
// verify passes (the same server, mux and middleware, huma's answer encoding) and does
// nothing of its own but read the checkpoint. It reads no body, so it is the stricter
// baseline: verify's reading of its body counts against verify.
//
// Run it with -benchtime=1x; KEYREG_BENCH_CLIENTS (16), KEYREG_BENCH_ROUNDS (6) and
// KEYREG_BENCH_ROUND (the length of each side of a round, 1s) change the load. It makes no
// timed assertion.
func BenchmarkVerifyVsBare(b *testing.B) {
	clients := envInt(b, "KEYREG_BENCH_CLIENTS", 16)
	rounds := envInt(b, "KEYREG_BENCH_ROUNDS", 6)
	length := time.Second
	if s := os.Getenv("KEYREG_BENCH_ROUND"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatalf("KEYREG_BENCH_ROUND=%q: %v", s, err)
		}
		length = d
	}
	n := startNodeB(b)
	body, _ := json.Marshal(map[string]any{"key": n.secret, "ip": "10.1.2.3", "permission": "users.track"})
	verify := loadTarget{name: "verify", method: http.MethodPost, url: n.url + "/v1/verify", token: n.token, body: body,
		want: []byte(`"valid":true`)}
	bare := loadTarget{name: "healthz", method: http.MethodGet, url: n.url + "/healthz", token: n.token}
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	for range b.N {
		// Warm up both (connections, pools) before the first timed round.
		drive(b, client, verify, clients, length/4)
		drive(b, client, bare, clients, length/4)
		var rateRatios, p99Ratios []float64
		for i := range rounds {
			var v, h loadStats
			if i%2 == 0 {
				v = drive(b, client, verify, clients, length)
				h = drive(b, client, bare, clients, length)
			} else {
				h = drive(b, client, bare, clients, length)
				v = drive(b, client, verify, clients, length)
			}
			rr, pr := v.rate/h.rate, float64(v.p99)/float64(h.p99)
			rateRatios, p99Ratios = append(rateRatios, rr), append(p99Ratios, pr)
			fmt.Printf("round %d, %d clients: verify %.0f/s p50 %s p99 %s | healthz %.0f/s p50 %s p99 %s | rate ratio %.2f, p99 ratio %.2f\n",
				i+1, clients, v.rate, v.p50, v.p99, h.rate, h.p50, h.p99, rr, pr)
		}
		rr, pr := median(rateRatios), median(p99Ratios)
		fmt.Printf("verify vs healthz over %d rounds: median rate ratio %.2f (goal >= 0.9), median p99 ratio %.2f (goal <= 1.2)\n", rounds, rr, pr)
		b.ReportMetric(rr, "rate-ratio")
		b.ReportMetric(pr, "p99-ratio")
	}
}

// loadTarget is one request the load sends again and again.
type loadTarget struct {
	name, method, url, token string
	body                     []byte // nil: none
	want                     []byte // every answer must hold this
}

// loadStats is what one side of a round measured.
type loadStats struct {
	rate     float64 // answers per second
	p50, p99 time.Duration
}

// maxPerClient bounds the requests of one client in one side of a round.
const maxPerClient = 1_000_000

// drive sends t from clients goroutines over keep-alive connections for d (and at most
// maxPerClient requests each), and measures the rate and latencies of the answers. Any
// answer but 200 fails the benchmark.
func drive(b *testing.B, client *http.Client, t loadTarget, clients int, d time.Duration) loadStats {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs []error
		wg   sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 4096)
			var err error
			for i := 0; i < maxPerClient && err == nil; i++ {
				t0 := time.Now()
				if !t0.Before(deadline) {
					break
				}
				err = send(ctx, client, t)
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, mine...)
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(errs) > 0 {
		b.Fatalf("%s: %v", t.name, errs[0])
	}
	slices.Sort(lat)
	if len(lat) == 0 {
		b.Fatalf("%s: no answer", t.name)
	}
	return loadStats{rate: float64(len(lat)) / elapsed.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
}

// send sends t once and reads the whole answer; any status but 200 is an error.
func send(ctx context.Context, client *http.Client, t loadTarget) error {
	var body io.Reader
	if t.body != nil {
		body = bytes.NewReader(t.body)
	}
	req, err := http.NewRequestWithContext(ctx, t.method, t.url, body)
	if err != nil {
		return err
	}
	if t.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+t.token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(answer, t.want) {
		return fmt.Errorf("status %d: %s", resp.StatusCode, answer)
	}
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func envInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return v
}
