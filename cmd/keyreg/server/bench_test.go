package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkHTTPVerify measures POST /v1/verify on a real server beside a bare net/http
// handler that decodes the same body and writes a similar answer, with the same load
// generator (b.RunParallel over keep-alive connections on loopback). It reports
// requests per second and latency percentiles.
func BenchmarkHTTPVerify(b *testing.B) {
	b.Run("keyreg", func(b *testing.B) {
		n := startNodeB(b)
		body, _ := json.Marshal(map[string]any{"key": n.secret, "ip": "10.1.2.3", "permission": "users.track"})
		load(b, n.url+"/v1/verify", n.token, body)
	})
	b.Run("bare-net-http", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var in struct{ Key, IP, Permission string }
			json.NewDecoder(r.Body).Decode(&in)
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"valid": true, "code": "VALID", "key_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
				"workspace": "acme", "permissions": []string{"users.track"}})
		})}
		go srv.Serve(ln)
		defer srv.Close()
		body, _ := json.Marshal(map[string]any{"key": "kr_x", "ip": "10.1.2.3", "permission": "users.track"})
		load(b, "http://"+ln.Addr().String()+"/v1/verify", "kr_token", body)
	})
}

// load posts body to url with token as the bearer secret.
func load(b *testing.B, url, token string, body []byte) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			start := time.Now()
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
			mine = append(mine, time.Since(start))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "req/s")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
}

type benchNode struct {
	url, secret string
	token       string // a registry key with keyreg.verify
}

// startNodeB starts a node for a benchmark and makes a key allowed from 10.0.0.0/8.
func startNodeB(b *testing.B) benchNode {
	n := startNode(b, "")
	f := newFixture(b, n, "acme")
	k := f.createKey(map[string]any{"name": "bench", "permissions": []string{"users.track"}, "allowlist": []string{"10.0.0.0/8"}})
	return benchNode{url: n.url, secret: k.Secret, token: f.writer}
}
