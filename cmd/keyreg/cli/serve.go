package cli

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/usage"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/commands/expiry"
)

func newServeCmd(g *globals) *cobra.Command {
	cfg := server.Config{}
	var logLevel, cpuProfile string
	var trusted []string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a keyreg node: embedded NATS JetStream, Pebble views and the HTTP API",
		Long: `Runs a keyreg node. By default it starts an embedded NATS server with JetStream, keeping the
stream under DATA/nats (fsync before every acknowledgement) and the views under
DATA/projections. With --nats-url it uses an existing NATS cluster instead.

On the first start on an empty data dir it creates workspace "system" and a root key with
keyreg.admin, and prints the root key's secret once (and writes it to --bootstrap-key-file,
which must not exist yet: keyreg makes it, mode 0600). Every listener is bound before the
root key is made, so a busy port fails the start without a secret and the next start makes
it. On an initialised data dir --bootstrap-key-file is ignored (and said so); a lost root
key is replaced with "keyreg admin recover-root" on the stopped server.

With --tls-cert and --tls-key the HTTP API speaks only HTTPS, and the NATS listener only
TLS (with the same certificate unless --nats-tls-cert and --nats-tls-key). Behind a proxy,
--trusted-proxies names the peers whose X-Forwarded-For gives the client address.

Services follow key changes over NATS: the embedded server listens on --nats-listen for
subscribers. Each service gets credentials of its own ("keyreg subscriber add NAME") and
may only read the KEYREG stream through its own consumers, NAME-1 to NAME-N (N is
--nats-subscriber-max-consumers unless given at add time): never publish events, touch
another's consumers, nor change, purge or delete the stream. --nats-subscriber-user is a
deprecated shared subscriber that may use any consumer. keyreg itself uses an in-process
connection.

Every event is a leaf of an audit Merkle tree. A sealer (one per stream, chosen by a NATS
KV lock) appends a checkpoint of the tree, signed with the ed25519 key DATA/audit/signing.key
(made on first start; "keyreg audit pubkey" prints its public half), every
--seal-every-events events or every --seal-interval while there are new events.

Any node of a cluster answers: writes answer with the stream sequence they reached (header
Keyreg-Sequence), and a read sent with it (header Keyreg-Min-Sequence or ?min_seq=) waits
until this node's views have applied it, at most --min-seq-wait (then 503 with Retry-After).

With --cluster-name, --cluster-listen and --cluster-peers, three (or five) keyreg serve
processes form a cluster of their embedded NATS servers: the stream is replicated on
--replicas of them (3 by default) and survives the loss of any one machine. Every node is
given the same name and peers (each node's route URL, its own included). At start a node
waits, at most --cluster-start-timeout, for a majority of the nodes (a JetStream meta
leader) and the stream (on the first start, until --replicas nodes are up), so the nodes
start in any order. /healthz answers once HTTP serves, /readyz once the node's views have
caught up with the stream. Exactly one node of a new cluster makes and prints the root key;
the others say the registry is already initialised. A node keeps its name in DATA/node-name
(--node-name, or a random one), and its data dir then only starts with the cluster flags.

It stops cleanly on SIGINT or SIGTERM: HTTP requests drained, projector stopped after its
last batch, NATS shut down.`,
		Example: `  keyreg serve
  keyreg serve --data /var/lib/keyreg --http 127.0.0.1:8080 --bootstrap-key-file ./root.key
  keyreg serve --nats-url nats://n1:4222,nats://n2:4222 --replicas 3
  keyreg serve --cluster-name kr --cluster-listen 10.0.0.1:6222 \
    --cluster-peers nats-route://10.0.0.1:6222,nats-route://10.0.0.2:6222,nats-route://10.0.0.3:6222
  keyreg serve --nats-listen 0.0.0.0:4222 --nats-subscriber-max-consumers 20
  keyreg serve --read-only --views ./views-nov1 --http 127.0.0.1:8081
  keyreg serve --http 0.0.0.0:8443 --tls-cert /etc/keyreg/tls.crt --tls-key /etc/keyreg/tls.key
  keyreg serve --trusted-proxies 10.0.0.0/8,fd00::/8`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usagef("--log-level %q: use debug, info, warn or error", logLevel)
			}
			for _, p := range []struct{ a, b, an, bn string }{
				{cfg.TLSCertFile, cfg.TLSKeyFile, "--tls-cert", "--tls-key"},
				{cfg.NATSTLSCertFile, cfg.NATSTLSKeyFile, "--nats-tls-cert", "--nats-tls-key"},
			} {
				if (p.a == "") != (p.b == "") {
					return usagef("%s and %s go together", p.an, p.bn)
				}
			}
			for _, t := range trusted {
				p, err := parsePrefix(t)
				if err != nil {
					return usagef("--trusted-proxies %q: not an IP address or CIDR prefix (such as 10.0.0.0/8)", shorten(t))
				}
				cfg.TrustedProxies = append(cfg.TrustedProxies, p)
			}
			if cfg.UsageFlushInterval <= 0 || cfg.UsageFlushInterval > usage.MaxInterval {
				return usagef("--usage-flush-interval %s: use a positive duration of at most %s, e.g. 1m", cfg.UsageFlushInterval, usage.MaxInterval)
			}
			if _, err := server.ParseExpiryWarnings(cfg.Expiry.Warnings); err != nil {
				return usagef("%v", err)
			}
			if cfg.MinSeqWait <= 0 {
				return usagef("--min-seq-wait %s: use a positive duration, e.g. 5s", cfg.MinSeqWait)
			}
			if err := checkWebhookFlags(cfg.Webhooks); err != nil {
				return err
			}
			if !cmd.Flags().Changed("replicas") && len(cfg.ClusterPeers) > 0 && len(cfg.ClusterPeers) < cfg.Replicas {
				cfg.Replicas = len(cfg.ClusterPeers) // a cluster of 1 or 2 nodes: each holds every replica
			}
			if err := server.CheckCluster(cfg); err != nil {
				return usagef("%v", err)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
			cfg.Stderr = g.stderr
			if cpuProfile != "" {
				stop, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			return server.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data", "keyreg-data", "data directory (stream and views)")
	f.StringVar(&cfg.HTTPAddr, "http", "127.0.0.1:8080", "HTTP listen address")
	f.StringVar(&cfg.NATSURL, "nats-url", "", "use this NATS cluster instead of the embedded server")
	f.StringVar(&cfg.NATSListen, "nats-listen", "127.0.0.1:4222", `where the embedded NATS server listens for read-only subscribers ("" for none)`)
	f.IntVar(&cfg.NATSSubscriberMaxConsumers, "nats-subscriber-max-consumers", 10, "consumers a subscriber may have when added without a limit of its own")
	f.StringVar(&cfg.NATSSubscriberUser, "nats-subscriber-user", "", "deprecated: also let a shared NATS user with this name subscribe, unconfined (any consumer)")
	f.StringVar(&cfg.NATSSubscriberPasswordFile, "nats-subscriber-password-file", "", "deprecated: the shared subscriber's password file; made with a random one (mode 0600) if absent (default DATA/nats-subscriber.password)")
	f.IntVar(&cfg.SSEMaxPerKey, "sse-max-per-key", 10, "open event streams (GET .../events, keyreg watch) one registry key may have (429 beyond)")
	f.IntVar(&cfg.SSEMaxTotal, "sse-max-total", 1000, "open event streams the server serves in all (503 beyond)")
	f.IntVar(&cfg.Replicas, "replicas", 3, "stream replicas when creating the stream on a cluster (--nats-url or --cluster-name)")
	f.StringVar(&cfg.ClusterName, "cluster-name", "", "make the embedded NATS server a node of this cluster (the same on every node): the stream is replicated across --cluster-peers")
	f.StringVar(&cfg.ClusterListen, "cluster-listen", "", "with --cluster-name: where this node listens for routes from the other nodes (HOST:PORT)")
	f.StringSliceVar(&cfg.ClusterPeers, "cluster-peers", nil, "with --cluster-name: every node's route URL, this node's own included (nats-route://HOST:PORT,...)")
	f.StringVar(&cfg.NodeName, "node-name", "", "with --cluster-name: this node's name in the cluster at its first start, kept in DATA/node-name (default: a random name)")
	f.DurationVar(&cfg.ClusterStartTimeout, "cluster-start-timeout", server.DefaultClusterStartTimeout, "with --cluster-name: how long to wait at start for a majority of the nodes and the stream")
	f.StringVar(&cfg.BootstrapKeyFile, "bootstrap-key-file", "", "on first start, also write the root secret to this file (mode 0600)")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long to drain HTTP requests, and to write the last verify snapshot, on shutdown")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.IntVar(&cfg.SealEveryEvents, "seal-every-events", 1000, "append a signed audit checkpoint once this many events are not covered (-1: never)")
	f.DurationVar(&cfg.SealInterval, "seal-interval", time.Minute, "append a signed audit checkpoint this often while events are not covered (-1s: never)")
	f.DurationVar(&cfg.VerifySnapshotInterval, "verify-snapshot-interval", server.DefaultVerifySnapshotInterval, "how often to snapshot the verify index for embedded verifiers when it moved; also at start and on shutdown (-1s: never)")
	f.IntVar(&cfg.MaxKeysPerWorkspace, "max-keys-per-workspace", commands.DefaultMaxKeysPerWorkspace, "the most keys a workspace holds, revoked ones included (-1: no limit)")
	f.IntVar(&cfg.MaxIdentifiersPerWorkspace, "max-identifiers-per-workspace", commands.DefaultMaxIdentifiersPerWorkspace, "the most identifiers a workspace holds, retired ones included (-1: no limit)")
	f.BoolVar(&cfg.ReadOnly, "read-only", false, "serve a copy of the views (--views) for inspection: reads only, writes answer 405")
	f.StringVar(&cfg.ViewsDir, "views", "", "with --read-only: the views directory made by keyreg replay --into")
	f.StringVar(&cfg.TLSCertFile, "tls-cert", "", "PEM certificate (chain) of the HTTP API: it then speaks only HTTPS; also the NATS listener's unless --nats-tls-cert")
	f.StringVar(&cfg.TLSKeyFile, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&cfg.NATSTLSCertFile, "nats-tls-cert", "", "PEM certificate of the NATS listener: subscribers must then use TLS (default: --tls-cert)")
	f.StringVar(&cfg.NATSTLSKeyFile, "nats-tls-key", "", "PEM private key of --nats-tls-cert (default: --tls-key)")
	f.StringSliceVar(&trusted, "trusted-proxies", nil, "addresses or CIDR prefixes of proxies whose X-Forwarded-For gives the client address (allowlists, verify limits, actorip); ignored from any other peer")
	f.DurationVar(&cfg.ReadHeaderTimeout, "http-read-header-timeout", server.DefaultReadHeaderTimeout, "how long a client may take to send a request's headers")
	f.DurationVar(&cfg.ReadTimeout, "http-read-timeout", server.DefaultReadTimeout, "how long a client may take to send a whole request (headers and body)")
	f.DurationVar(&cfg.WriteTimeout, "http-write-timeout", server.DefaultWriteTimeout, "how long answering a request may take (event streams and exports excepted)")
	f.DurationVar(&cfg.IdleTimeout, "http-idle-timeout", server.DefaultIdleTimeout, "how long a kept-alive connection may wait for its next request")
	f.DurationVar(&cfg.MinSeqWait, "min-seq-wait", httpapi.DefaultMinSeqWait, "how long a read with min_seq (Keyreg-Min-Sequence) waits for this node's views to apply it before it answers 503")
	f.DurationVar(&cfg.UsageFlushInterval, "usage-flush-interval", usage.DefaultInterval, "how often verify's record of the keys' use (last_used_at, daily counts) is written to the usage bucket, at most once per key; also the precision of last_used_at")
	f.StringVar(&cfg.Expiry.Warnings, "expiry-warnings", expiry.DefaultWarnings, `append keyreg.key.expiring.v1 when a key comes within each of these of its expiry (days such as 7d, or durations such as 36h; "off": none)`)
	f.DurationVar(&cfg.Expiry.ScanInterval, "expiry-scan-interval", expiry.DefaultInterval, "how often the node holding the expiry lease looks for keys to warn of or mark expired (-1s: never)")
	f.StringVar(&cfg.LeakReportKeysFile, "leak-report-keys", "", `serve POST /v1/leaked-keys (secret scanning reports) signed by the ECDSA P-256 keys of this JSON file ({"public_keys": [{"key_identifier", "key", "is_current"}]})`)
	addWebhookFlags(f, &cfg.Webhooks)
	// A hidden flag for profiling the server (issue 12): a CPU profile of the whole run,
	// written when serve stops.
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file when serve stops")
	_ = f.MarkHidden("cpuprofile")
	return cmd
}

// startCPUProfile starts a CPU profile written to path; stop ends it and closes the file.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile %q: %w", path, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile %q: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// parsePrefix parses a CIDR prefix or a single address (a /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// shorten cuts a long value for a message.
func shorten(s string) string {
	if len(s) > 64 {
		return s[:61] + "..."
	}
	return s
}
