package server

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
)

// TestBootstrapRaceMakesOneRootKey: nodes of a cluster that bootstrap the same stream at
// the same moment make exactly one root key, and exactly one of them prints a secret (the
// key's); the others say the registry is already initialised. It holds on an empty stream
// and on one where a first start stopped after creating workspace system, where every
// node reads "no root key yet" before any appends.
func TestBootstrapRaceMakesOneRootKey(t *testing.T) {
	for _, tc := range []struct {
		name      string
		workspace bool // workspace system exists before the race
	}{{"EmptyStream", false}, {"WorkspaceWithoutKey", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, err := OpenStream(ctx, Config{DataDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if tc.workspace {
				h := &commands.Handler{Log: s.Log}
				if _, err := h.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: string(events.SystemWorkspace), Name: "keyreg system"}); err != nil {
					t.Fatal(err)
				}
			}
			const nodes = 8
			outs := make([]bytes.Buffer, nodes)
			errs := make([]error, nodes)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range nodes {
				n := &Node{Log: s.Log, Commands: &commands.Handler{Log: s.Log}}
				cfg := Config{Stderr: &outs[i], ClusterName: "kr"}
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					errs[i] = n.bootstrap(ctx, cfg)
				}()
			}
			close(start)
			wg.Wait()
			made, told := 0, 0
			var secret string
			for i := range nodes {
				if errs[i] != nil {
					t.Fatalf("node %d: %v", i, errs[i])
				}
				out := outs[i].String()
				switch {
				case strings.Contains(out, "Its secret is shown this once"):
					made++
					_, after, _ := strings.Cut(out, "kr_")
					secret = "kr_" + strings.Fields(after)[0]
				case strings.Contains(out, "the registry is already initialised") && !strings.Contains(out, "kr_"):
					told++
				default:
					t.Fatalf("node %d printed %q", i, out)
				}
			}
			var created []string
			err = s.Log.Read(ctx, systemKeys, 1, func(r events.Record) error {
				if r.Subject == events.Subject(events.SystemWorkspace, events.AggKey, strings.Split(r.Subject, ".")[3], events.TypeKeyCreated) {
					created = append(created, r.Subject)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if made != 1 || told != nodes-1 || len(created) != 1 {
				t.Fatalf("%d nodes printed a secret, %d said initialised; %d root keys %v: want 1, %d, 1", made, told, len(created), created, nodes-1)
			}
			// The one secret printed is the root key's.
			sub, err := events.ParseSubject(created[0])
			if err != nil {
				t.Fatal(err)
			}
			k, err := commands.LogState{Log: s.Log}.Key(ctx, events.SystemWorkspace, sub.ID)
			if err != nil || k.SecretHash != events.HashSecret(secret) {
				t.Fatalf("root key %s: hash %q, want that of the secret printed (%v)", sub.ID, k.SecretHash, err)
			}
		})
	}
}
