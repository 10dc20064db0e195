package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/server"
)

// A program manages keys through keyreg's HTTP API with a registry key (here the root
// key that the first start of keyreg serve wrote to --bootstrap-key-file).
func Example() {
	// For the example, a keyreg node of its own: its address and root key.
	addr, token, stop := startExampleNode()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := client.New(addr, token, nil)
	if _, err := c.CreateWorkspace(ctx, "acme", "Acme", client.WriteOptions{}); err != nil {
		log.Fatal(err)
	}
	created, err := c.CreateKey(ctx, "acme", client.CreateKeyRequest{Name: "billing-web",
		Permissions: []string{"users.track"}, Allowlist: []string{"203.0.113.0/24"}}, client.WriteOptions{})
	if err != nil {
		log.Fatal(err)
	}
	secret, id := created.Secret, created.Key.ID // the secret is shown this once

	// Writes take an Idempotency-Key, an If-Match version and a reason.
	moved, err := c.PutAllowlist(ctx, "acme", id, []string{"198.51.100.0/24"},
		client.WriteOptions{IfMatch: fmt.Sprint(created.Key.Version), Reason: "office moved"})
	if err != nil {
		log.Fatal(err)
	}
	for _, ip := range []string{"203.0.113.7", "198.51.100.7"} {
		r, err := c.Verify(ctx, secret, ip, "users.track")
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("verify from", ip+":", r.Code)
	}

	// Reads of keys and identifiers take AsOf: the key before the allowlist change.
	then, err := c.GetKey(ctx, "acme", id, client.AsOfSeq(moved.Version-1))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("now:", moved.Allowlist, "before:", then.Allowlist)

	// A problem answer is an *Error with the problem's code.
	_, err = c.PutAllowlist(ctx, "acme", id, nil, client.WriteOptions{IfMatch: fmt.Sprint(created.Key.Version)})
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status, e.Problem.Code, e.Problem.CurrentVersion == moved.Version)
	}
	// Output:
	// verify from 203.0.113.7: IP_NOT_ALLOWED
	// verify from 198.51.100.7: VALID
	// now: [198.51.100.0/24] before: [203.0.113.0/24]
	// 412 precondition_failed true
}

// startExampleNode starts keyreg serve in-process on a fresh data dir and a port of its
// choosing, and returns its address, its root key and how to stop it.
func startExampleNode() (addr, token string, stop func()) {
	dir, err := os.MkdirTemp("", "keyreg-client-example-")
	if err != nil {
		log.Fatal(err)
	}
	keyFile := filepath.Join(dir, "root.key")
	ready := make(chan string, 1)
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		done <- server.Run(ctx, server.Config{
			DataDir: filepath.Join(dir, "data"), HTTPAddr: "127.0.0.1:0", BootstrapKeyFile: keyFile,
			Logger: slog.New(slog.DiscardHandler), Stderr: io.Discard, ShutdownTimeout: 5 * time.Second,
			Ready: func(addr string) { ready <- addr },
		})
	}()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			log.Print(err)
		}
		os.RemoveAll(dir)
	}
	select {
	case addr = <-ready:
	case err := <-done:
		log.Fatalf("server.Run: %v", err)
	case <-time.After(30 * time.Second):
		log.Fatal("the node did not start in 30s")
	}
	addr = "http://" + addr
	if err := waitReady(addr, time.Now().Add(30*time.Second)); err != nil {
		stop()
		log.Fatal(err)
	}
	secret, err := os.ReadFile(keyFile)
	if err != nil {
		stop()
		log.Fatal(err)
	}
	return addr, strings.TrimSpace(string(secret)), stop
}

// waitReady waits until the node's /readyz answers 200 (its views have applied the root
// key), or deadline.
func waitReady(addr string, deadline time.Time) error {
	for {
		resp, err := http.Get(addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s/readyz: not ready in time (last: %v)", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
