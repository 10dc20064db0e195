package cli

import (
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
