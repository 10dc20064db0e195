package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkVerifyVsBare drives one in-process node (the handler `keyreg serve` builds, on
// its own http.Server on 127.0.0.1: body buffering, the swap lock, metrics, route lookup,
// huma's middleware with request ids, and its limits) with N concurrent keep-alive clients,
// by turns: POST /v1/verify of a valid key with a registry key holding keyreg.verify, and
// GET /healthz. It prints, for each round, the rate, p50 and p99 of both and their ratios,
// then the median of the rounds' ratios and the ratios of all rounds pooled. It also
// prints the process's CPU time per answer (clients and server together), the figure that
// a shared machine's load moves least.
//
// /healthz is the bare handler: it is registered like verify, so it passes every layer
// verify passes (the same server, mux and middleware, huma's answer encoding) and does
// nothing of its own but read the checkpoint. It reads no body, so it is the stricter
// baseline: the client's sending and the server's reading of verify's body count against
// verify (BenchmarkBarePostVsGet shows what that costs on plain net/http).
//
// A round is KEYREG_BENCH_PAIRS (5) pairs of slices of KEYREG_BENCH_SLICE (200ms) each,
// verify first in one pair and healthz first in the next, so both sides meet the same load
// of a shared machine. Run it with -benchtime=1x; KEYREG_BENCH_CLIENTS (16) and
// KEYREG_BENCH_ROUNDS (6) change the rest. It makes no timed assertion.
func BenchmarkVerifyVsBare(b *testing.B) {
	n := startNodeB(b)
	body, _ := json.Marshal(map[string]any{"key": n.secret, "ip": "10.1.2.3", "permission": "users.track"})
	verify := loadTarget{name: "verify", method: http.MethodPost, url: n.url + "/v1/verify", token: n.token, body: body,
		want: []byte(`"valid":true`)}
	bare := loadTarget{name: "healthz", method: http.MethodGet, url: n.url + "/healthz", token: n.token, want: []byte(`"ok"`)}
	compare(b, verify, bare)
}

// BenchmarkBarePostVsGet is the calibration of BenchmarkVerifyVsBare: the same client and
// load against a plain net/http server whose one handler reads the body and writes a fixed
// answer, by POST with verify's body and by GET. Its ratios are what a body costs before
// keyreg does anything.
func BenchmarkBarePostVsGet(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok","checkpoint":12}` + "\n"))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/x"
	body := []byte(`{"key":"kr_sEYJ1UWKQFHA1MypeHLFtnKysKVUSG1X4hpjWjnfJfl2sx3ab","ip":"10.1.2.3","permission":"users.track"}`)
	compare(b,
		loadTarget{name: "post", method: http.MethodPost, url: url, token: "kr_x", body: body, want: []byte(`"ok"`)},
		loadTarget{name: "get", method: http.MethodGet, url: url, token: "kr_x", want: []byte(`"ok"`)})
}

// compare drives a and base by turns (see BenchmarkVerifyVsBare), prints each round and
// the summary, and reports the median ratios of a to base.
func compare(b *testing.B, a, base loadTarget) {
	clients := envInt(b, "KEYREG_BENCH_CLIENTS", 16)
	rounds := envInt(b, "KEYREG_BENCH_ROUNDS", 6)
	pairs := envInt(b, "KEYREG_BENCH_PAIRS", 5)
	slice := 200 * time.Millisecond
	if s := os.Getenv("KEYREG_BENCH_SLICE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			b.Fatalf("KEYREG_BENCH_SLICE=%q: want a positive duration", s)
		}
		slice = d
	}
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	line := func(what string, x, y loadStats) (rr, pr float64) {
		rr, pr = x.rate()/y.rate(), float64(x.p(99))/float64(y.p(99))
		fmt.Printf("%s, %d clients: %s %.0f/s p50 %s p99 %s cpu %s/req | %s %.0f/s p50 %s p99 %s cpu %s/req | "+
			"rate ratio %.2f, p50 ratio %.2f, p99 ratio %.2f, cpu/req ratio %.2f\n",
			what, clients, a.name, x.rate(), x.p(50), x.p(99), x.cpuPer(), base.name, y.rate(), y.p(50), y.p(99), y.cpuPer(),
			rr, float64(x.p(50))/float64(y.p(50)), pr, float64(x.cpuPer())/float64(y.cpuPer()))
		return rr, pr
	}
	for range b.N {
		drive(b, client, a, clients, slice) // warm up: connections, pools
		drive(b, client, base, clients, slice)
		var all [2]loadStats
		var rateRatios, p99Ratios []float64
		for i := range rounds {
			var round [2]loadStats
			for j := range 2 * pairs {
				k := (j + j/2) % 2 // a, base, base, a, a, base, ...
				t := []loadTarget{a, base}[k]
				s := drive(b, client, t, clients, slice)
				round[k].add(s)
				all[k].add(s)
			}
			rr, pr := line(fmt.Sprintf("round %d", i+1), round[0], round[1])
			rateRatios, p99Ratios = append(rateRatios, rr), append(p99Ratios, pr)
		}
		line(fmt.Sprintf("all %d rounds pooled", rounds), all[0], all[1])
		rr, pr := median(rateRatios), median(p99Ratios)
		fmt.Printf("%s vs %s over %d rounds: median rate ratio %.2f, median p99 ratio %.2f\n", a.name, base.name, rounds, rr, pr)
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

// loadStats is what the load measured: the latency of every answer, the time taken and
// the CPU time the process (clients and server) spent meanwhile.
type loadStats struct {
	lat     []time.Duration // sorted
	elapsed time.Duration
	cpu     time.Duration
}

func (s *loadStats) add(o loadStats) {
	s.lat, s.elapsed, s.cpu = append(s.lat, o.lat...), s.elapsed+o.elapsed, s.cpu+o.cpu
	slices.Sort(s.lat)
}

// cpuPer is the CPU time of the process per answer: unlike rates and latencies, it hardly
// moves with the load that others put on a shared machine.
func (s loadStats) cpuPer() time.Duration { return s.cpu / time.Duration(len(s.lat)) }

// processCPU is the user and system CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		b.Fatal(err)
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}

// rate is answers per second.
func (s loadStats) rate() float64 { return float64(len(s.lat)) / s.elapsed.Seconds() }

// p is the q-th percentile of the latencies.
func (s loadStats) p(q int) time.Duration { return s.lat[len(s.lat)*q/100] }

// maxPerClient bounds the requests of one client in one call of drive.
const maxPerClient = 1_000_000

// drive sends t from clients goroutines over keep-alive connections for d (and at most
// maxPerClient requests each), and measures the latencies of the answers. Any answer but
// 200 with t.want fails the benchmark.
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
	cpu0 := processCPU(b)
	start := time.Now()
	deadline := start.Add(d)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 1024)
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
	elapsed, cpu := time.Since(start), processCPU(b)-cpu0
	if len(errs) > 0 {
		b.Fatalf("%s: %v", t.name, errs[0])
	}
	if len(lat) == 0 {
		b.Fatalf("%s: no answer", t.name)
	}
	slices.Sort(lat)
	return loadStats{lat: lat, elapsed: elapsed, cpu: cpu}
}

// send sends t once and reads the whole answer, which must be 200 and hold t.want.
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
