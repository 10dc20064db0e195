package bench_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/bench"
	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
)

// TestRunCluster runs `keyreg bench --cluster` small on real `keyreg serve` children: a
// single node, then three embedded-cluster nodes. It reports the single node's writes,
// the cluster's beside them, the leader-election pause with the writes around it, and the
// killed leader's restart, in that order; RunCluster itself fails unless every node shows
// every key's last change after each run and some write went through after the kill.
func TestRunCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	opts := bench.ClusterOptions{Exe: nodetest.Binary(t), Dir: t.TempDir(), Clients: 4, Keys: 8, Writes: 40, PauseClients: 2}
	var got []bench.ClusterReport
	if err := bench.RunCluster(ctx, opts, func(r bench.ClusterReport) { got = append(got, r) }); err != nil {
		t.Fatal(err)
	}
	if len(got) < 5 {
		t.Fatalf("%d reports, want at least 5: %+v", len(got), got)
	}
	single, cluster := got[0].Result, got[1].Result
	if single == nil || single.Name != "single node, HTTP PUT allowlist, 4 clients, 8 keys" || single.Count != 40 || single.P50 <= 0 {
		t.Errorf("first report %+v, want the single node's 40 writes", got[0])
	}
	if cluster == nil || cluster.Name != "cluster of 3, HTTP PUT allowlist, 4 clients, 8 keys" || cluster.Count != 40 ||
		cluster.P99 < cluster.P50 || cluster.BaseName != "single node, same run" || single == nil || cluster.BaseRate != single.Rate() {
		t.Errorf("second report %+v, want the cluster's 40 writes beside the single node's rate", got[1])
	}
	pause := got[2].Figure
	if pause == nil || !strings.HasPrefix(pause.What, "leader-election pause (leader node ") || pause.Unit != "ms" || pause.Value <= 0 {
		t.Errorf("third report %+v, want the leader-election pause", got[2])
	}
	acked, restart := got[len(got)-2].Figure, got[len(got)-1].Figure
	if acked == nil || acked.What != "acknowledged writes around the kill" || acked.Value < 1 {
		t.Errorf("report %+v, want the acknowledged writes around the kill", got[len(got)-2])
	}
	if restart == nil || !strings.HasSuffix(restart.What, "restarted until ready") || restart.Value <= 0 {
		t.Errorf("last report %+v, want the killed node's restart", got[len(got)-1])
	}
	for _, r := range got[3 : len(got)-2] {
		if r.Figure == nil || !strings.HasPrefix(r.Figure.What, "failed writes after the kill, ") || r.Figure.Value < 1 {
			t.Errorf("report %+v, want a count of failed writes by status", r)
		}
	}
}
