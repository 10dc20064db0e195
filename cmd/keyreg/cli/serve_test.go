package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeAndAdminUsageErrors: bad values of serve's transport flags and of
// admin recover-root fail with a one-line message naming the flag and the value, before
// anything is started or minted.
func TestServeAndAdminUsageErrors(t *testing.T) {
	h := &harness{t: t, env: map[string]string{}}
	data := t.TempDir()
	serve := []string{"serve", "--data", data, "--http", "127.0.0.1:0", "--nats-listen", ""}
	for _, tc := range []struct {
		name string
		code int
		want []string
		args []string
	}{
		{"BadCIDR", 2, []string{"--trusted-proxies", `"10.0.0.0/33"`}, append(serve, "--trusted-proxies", "10.0.0.0/8,10.0.0.0/33")},
		{"NotAnAddress", 2, []string{"--trusted-proxies", `"proxy.example"`}, append(serve, "--trusted-proxies", "proxy.example")},
		{"CertWithoutKey", 2, []string{"--tls-cert and --tls-key go together"}, append(serve, "--tls-cert", "cert.pem")},
		{"NATSKeyWithoutCert", 2, []string{"--nats-tls-cert and --nats-tls-key go together"}, append(serve, "--nats-tls-key", "key.pem")},
		{"MissingCertFile", 1, []string{"--tls-cert", "nope.pem", "no such file"}, append(serve, "--tls-cert", "nope.pem", "--tls-key", "nope.key")},
		{"MinSeqWaitZero", 2, []string{"--min-seq-wait", "0s"}, append(serve, "--min-seq-wait", "0s")},
		{"UsageFlushIntervalZero", 2, []string{"--usage-flush-interval", "0s"}, append(serve, "--usage-flush-interval", "0s")},
		{"UsageFlushIntervalTooLong", 2, []string{"--usage-flush-interval", "25h0m0s", "at most 24h"}, append(serve, "--usage-flush-interval", "25h")},
		{"CPUProfileMissingDir", 1, []string{"--cpuprofile", "no such file"}, append(serve, "--cpuprofile", filepath.Join(data, "nope", "cpu.pprof"))},
		{"ClusterPeersWithoutName", 2, []string{"--cluster-peers", "need --cluster-name"}, append(serve, "--cluster-listen", "127.0.0.1:6222", "--cluster-peers", "nats-route://127.0.0.1:6222")},
		{"ClusterWithoutListen", 2, []string{"--cluster-name kr needs --cluster-listen"}, append(serve, "--cluster-name", "kr", "--cluster-peers", "nats-route://127.0.0.1:6222")},
		{"ClusterBadPeerURL", 2, []string{"--cluster-peers", `"nats://127.0.0.1:6223"`, "nats-route://host:port"}, append(serve, "--cluster-name", "kr", "--cluster-listen", "127.0.0.1:6222", "--cluster-peers", "nats-route://127.0.0.1:6222,nats://127.0.0.1:6223")},
		{"ClusterPeerNoPort", 2, []string{"--cluster-peers", `"nats-route://n2"`}, append(serve, "--cluster-name", "kr", "--cluster-listen", "127.0.0.1:6222", "--cluster-peers", "nats-route://127.0.0.1:6222,nats-route://n2")},
		{"ClusterListenNotAPeer", 2, []string{"--cluster-listen 127.0.0.1:6222 is not among --cluster-peers"}, append(serve, "--cluster-name", "kr", "--cluster-listen", "127.0.0.1:6222", "--cluster-peers", "nats-route://127.0.0.1:6223,nats-route://127.0.0.1:6224")},
		{"ClusterListenPortZero", 2, []string{"--cluster-listen", `"127.0.0.1:0"`}, append(serve, "--cluster-name", "kr", "--cluster-listen", "127.0.0.1:0", "--cluster-peers", "nats-route://127.0.0.1:6222")},
		{"ClusterTooManyReplicas", 2, []string{"--replicas 5", "3 nodes of --cluster-peers"}, append(serve, "--cluster-name", "kr", "--cluster-listen", "127.0.0.1:6222", "--replicas", "5", "--cluster-peers", "nats-route://127.0.0.1:6222,nats-route://127.0.0.1:6223,nats-route://127.0.0.1:6224")},
		{"ClusterWithNATSURL", 2, []string{"not with --nats-url nats://127.0.0.1:4222"}, append(serve, "--nats-url", "nats://127.0.0.1:4222", "--cluster-name", "kr", "--cluster-listen", "127.0.0.1:6222", "--cluster-peers", "nats-route://127.0.0.1:6222")},
		{"ClusterBadName", 2, []string{"--cluster-name", `"k r"`}, append(serve, "--cluster-name", "k r", "--cluster-listen", "127.0.0.1:6222", "--cluster-peers", "nats-route://127.0.0.1:6222")},
		{"RecoverRootNoData", 2, []string{"--data DIR is required"}, []string{"admin", "recover-root", "--data", ""}},
		{"RecoverRootMissingDir", 1, []string{"data dir", "no such file"}, []string{"admin", "recover-root", "--data", filepath.Join(data, "nope")}},
		{"RecoverRootLongReason", 2, []string{"--reason"}, []string{"admin", "recover-root", "--data", data, "--reason", strings.Repeat("x", 2000)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &harness{t: t, env: h.env}
			r := h.fails(tc.code, tc.want, tc.args...)
			if strings.Count(strings.TrimSpace(r.stderr), "\n") > 1 || strings.Contains(r.stderr+r.stdout, "kr_") {
				t.Fatalf("not a one-line error, or a secret: %q %q", r.stdout, r.stderr)
			}
		})
	}
}

// TestStartCPUProfile: the profile serve's hidden --cpuprofile starts is written, as a
// gzipped pprof profile, when it is stopped.
func TestStartCPUProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	stop, err := startCPUProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for i := range 1_000_000 {
		x += i % 7
	}
	_ = x
	stop()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		t.Fatalf("profile is not gzipped pprof data: %d bytes starting %q", len(b), b[:min(len(b), 8)])
	}
}
