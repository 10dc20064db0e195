package httpapi_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
)

// countingViews are the real views, counting the workspace reads made through them.
type countingViews struct {
	*projections.Store
	workspaceReads atomic.Int64
}

func (v *countingViews) Workspace(ctx context.Context, ws events.Workspace) (events.WorkspaceState, error) {
	v.workspaceReads.Add(1)
	return v.Store.Workspace(ctx, ws)
}

// TestAdminWritesRememberWorkspaces: an admin key's writes in a workspace read the
// workspace from the views once, not per request; a workspace that does not exist is
// looked for again each time (404), and answers once it is created.
func TestAdminWritesRememberWorkspaces(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := events.NewMemLog()
	store, proj := runViews(t, log)
	views := &countingViews{Store: store}
	cmds := &commands.Handler{Log: log}
	api := httpapi.New(httpapi.Deps{Commands: cmds, Views: views, Waiter: proj, Log: log, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	t.Cleanup(api.Close)
	applied := func(res commands.Result, err error) commands.Result {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if err := proj.WaitFor(ctx, res.Seq); err != nil {
			t.Fatal(err)
		}
		return res
	}
	for _, ws := range []string{"system", "acme"} {
		applied(cmds.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: ws, Name: ws}))
	}
	root := applied(cmds.CreateKey(ctx, commands.CreateKey{Workspace: "system", Name: "root", Permissions: []string{string(httpapi.PermAdmin)}})).Secret
	key := applied(cmds.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "k"})).ID
	put := func(ws, id string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, "PUT", srv.URL+"/v1/workspaces/"+ws+"/keys/"+id+"/allowlist", bytes.NewReader([]byte(`{"allowlist":["10.0.0.0/8"]}`)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+root)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 3 {
		if code := put("acme", key); code != http.StatusOK {
			t.Fatalf("PUT %d in acme: %d", i, code)
		}
	}
	if n := views.workspaceReads.Load(); n != 1 {
		t.Fatalf("3 admin writes in acme read the workspace %d times, want 1", n)
	}
	for i := range 2 {
		if code := put("later", key); code != http.StatusNotFound {
			t.Fatalf("PUT %d in a workspace that does not exist: %d, want 404", i, code)
		}
	}
	if n := views.workspaceReads.Load(); n != 3 {
		t.Fatalf("after 2 writes in a missing workspace, %d workspace reads, want 3", n)
	}
	applied(cmds.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: "later", Name: "later"}))
	later := applied(cmds.CreateKey(ctx, commands.CreateKey{Workspace: "later", Name: "k"})).ID
	if code := put("later", later); code != http.StatusOK {
		t.Fatalf("PUT in workspace later once created: %d", code)
	}
}

// laggingViews are the real views, lacking one workspace as views that have not applied
// its creation yet (on a node of a cluster where another node created it a moment ago).
type laggingViews struct {
	*projections.Store
	lacks events.Workspace
}

func (v *laggingViews) Workspace(ctx context.Context, ws events.Workspace) (events.WorkspaceState, error) {
	if ws == v.lacks {
		return events.WorkspaceState{}, events.NotFound("workspace", string(ws), ws)
	}
	return v.Store.Workspace(ctx, ws)
}

// TestAdminWriteInWorkspaceViewsLack: an admin's write in a workspace the views have not
// applied yet is not refused (the log has it); one in a workspace the log lacks too is 404.
// (Two keyreg nodes on a NATS cluster: a workspace made on node 1, a write on node 2 a
// moment later answered 404.)
func TestAdminWriteInWorkspaceViewsLack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := events.NewMemLog()
	store, proj := runViews(t, log)
	cmds := &commands.Handler{Log: log}
	api := httpapi.New(httpapi.Deps{Commands: cmds, Views: &laggingViews{Store: store, lacks: "fresh"}, Waiter: proj, Log: log, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	t.Cleanup(api.Close)
	for _, ws := range []string{"system", "fresh"} {
		if _, err := cmds.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: ws, Name: ws}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := cmds.CreateKey(ctx, commands.CreateKey{Workspace: "system", Name: "root", Permissions: []string{string(httpapi.PermAdmin)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := proj.WaitFor(ctx, res.Seq); err != nil {
		t.Fatal(err)
	}
	post := func(ws string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/workspaces/"+ws+"/identifiers", bytes.NewReader([]byte(`{"kind":"segment","name":"VIPs"}`)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+res.Secret)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("fresh"); code != http.StatusCreated {
		t.Fatalf("an admin's write in a workspace only the log holds yet: %d, want 201", code)
	}
	if code := post("nowhere"); code != http.StatusNotFound {
		t.Fatalf("an admin's write in a workspace nobody made: %d, want 404", code)
	}
}

// nearOnly is a log whose nearest copy holds nothing: ReadNear reads no record.
type nearOnly struct{ *events.MemLog }

func (nearOnly) ReadNear(context.Context, string, uint64, func(events.Record) error) error {
	return nil
}

// TestInstrumentedLogPassesReadNear: the log serve gives the commands (timed appends over
// group commit over the stream) still reads the stream's nearest copy, so that a retry
// after a conflict spares the question to the stream's leader (commands.ViewState.Near).
func TestInstrumentedLogPassesReadNear(t *testing.T) {
	inner := nearOnly{events.NewMemLog()}
	if _, err := inner.Append(context.Background(), []events.Message{{Subject: "keyreg.acme.key.k.created", ID: events.NewID(), Data: []byte(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	log := httpapi.NewMetrics(func() float64 { return 0 }).InstrumentLog(events.NewGroupLog(inner))
	if _, ok := log.(events.NearReader); !ok {
		t.Fatal("the instrumented log is no events.NearReader")
	}
	count := func(read func(context.Context, string, uint64, func(events.Record) error) error) int {
		n := 0
		if err := read(context.Background(), ">", 1, func(events.Record) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if near, exact := count(log.(events.NearReader).ReadNear), count(log.Read); near != 0 || exact != 1 {
		t.Fatalf("ReadNear read %d records and Read %d; want the inner log's ReadNear (0) and Read (1)", near, exact)
	}
}
