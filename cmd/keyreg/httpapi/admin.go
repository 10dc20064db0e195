package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
)

// ReplayStatus is the progress of an online rebuild of the views.
type ReplayStatus struct {
	State           string    `json:"state" enum:"idle,building,catching_up,swapping,done,failed"`
	Generation      string    `json:"generation,omitempty" doc:"The generation being built, or built last"`
	Applied         uint64    `json:"applied" doc:"Events applied so far"`
	Target          uint64    `json:"target" doc:"Stream sequence the build goes to before catching up with live writes"`
	EventsPerSecond float64   `json:"events_per_second"`
	StartedAt       time.Time `json:"started_at,omitzero"`
	FinishedAt      time.Time `json:"finished_at,omitzero"`
	Error           string    `json:"error,omitempty"`
}

// Replayer runs online rebuilds (the node that serves the API).
type Replayer interface {
	// StartReplay starts a rebuild in the background; it fails if one is running.
	StartReplay(ctx context.Context) (ReplayStatus, error)
	// ReplayStatus reports the running or last rebuild.
	ReplayStatus() ReplayStatus
}

var adminTags = []string{"admin"}

// Backuper writes online backups of the serving node (the node that serves the API).
type Backuper interface {
	// Backup writes a backup to w as a tar (see server.Node.Backup). It either fails
	// before writing to w or writes the whole backup, the manifest last.
	Backup(ctx context.Context, w io.Writer) error
}

// ErrBackupRunning means an online backup is already running on this node (409).
var ErrBackupRunning = errors.New("a backup is already running on this server")

func (a *API) registerAdmin() {
	if a.d.Backup != nil {
		a.registerBackup()
	}
	if a.d.Replayer == nil {
		return
	}
	a.registerStartReplay()
	a.registerReplayStatus()
}

func (a *API) registerBackup() {
	huma.Register(a.huma, a.stream(huma.Operation{
		OperationID: "backup", Method: http.MethodGet, Path: "/v1/admin/backup", Tags: adminTags, Security: bearer,
		Summary: "Take an online backup",
		Description: "Streams a tar of a backup of the serving node, taken while it serves: a Pebble checkpoint of the views " +
			"(views/), a JetStream snapshot of the stream (stream/), the audit verifier (public) key, and last MANIFEST.json " +
			"with every file's SHA-256, the sequence the views had applied and the stream's last sequence. It holds no " +
			"secret: not the audit signing key. keyreg backup --addr unpacks it; keyreg restore restores it. " +
			"Needs keyreg.admin. 409 if a backup is running on this server.",
		Responses: map[string]*huma.Response{
			"200": {Description: "The backup", Content: map[string]*huma.MediaType{"application/x-tar": {}}},
		},
	}), func(ctx context.Context, in *struct{}) (*huma.StreamResponse, error) {
		if _, err := a.requireAdmin(ctx); err != nil {
			return nil, err
		}
		return &huma.StreamResponse{Body: func(hctx huma.Context) { a.streamBackup(hctx) }}, nil
	})
}

// backupWriter sends the status and headers with the first byte of the backup, so that a
// backup that fails before writing anything still answers with a problem.
type backupWriter struct {
	hctx    huma.Context
	w       http.ResponseWriter
	started bool
}

func (b *backupWriter) Write(p []byte) (int, error) {
	if !b.started {
		b.started = true
		b.hctx.SetHeader("Content-Type", "application/x-tar")
		b.hctx.SetHeader("Content-Disposition", `attachment; filename="keyreg-backup-`+time.Now().UTC().Format("20060102T150405Z")+`.tar"`)
		b.hctx.SetHeader("Cache-Control", "no-store")
		b.hctx.SetStatus(http.StatusOK)
	}
	return b.w.Write(p)
}

func (a *API) streamBackup(hctx huma.Context) {
	ctx := hctx.Context()
	rw, _ := hctx.BodyWriter().(http.ResponseWriter)
	if rw == nil {
		a.d.Logger.Error("backup: the response cannot stream")
		return
	}
	w := &backupWriter{hctx: hctx, w: rw}
	err := a.d.Backup.Backup(ctx, w)
	switch {
	case err == nil:
	case !w.started:
		p := toProblem(err)
		if errors.Is(err, ErrBackupRunning) {
			p = problem(http.StatusConflict, CodeConflict, err.Error())
		}
		if p.internal != nil {
			a.d.Logger.Error("backup failed", "request_id", callerOf(ctx).requestID, "err", p.internal)
		}
		writeProblem(rw, p)
	default:
		// The status is sent: the tar ends without its manifest, which the client
		// takes as a failed backup.
		a.d.Logger.Error("backup failed midway", "request_id", callerOf(ctx).requestID, "err", err)
	}
}

func (a *API) registerStartReplay() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "start-replay", Method: http.MethodPost, Path: "/v1/admin/replay", Tags: adminTags, Security: bearer,
		Summary:       "Rebuild every view online (blue/green)",
		DefaultStatus: http.StatusAccepted,
		Description: "Builds a new generation of the views from the stream while the current one keeps serving reads and writes, " +
			"catches it up with the live stream, and swaps it in without failing a request. Needs keyreg.admin. 409 if a rebuild is running.",
	}, func(ctx context.Context, in *struct{}) (*struct{ Body ReplayStatus }, error) {
		if _, err := a.requireAdmin(ctx); err != nil {
			return nil, err
		}
		st, err := a.d.Replayer.StartReplay(ctx)
		if err != nil {
			return nil, problem(http.StatusConflict, CodeConflict, err.Error())
		}
		return &struct{ Body ReplayStatus }{st}, nil
	})
}

func (a *API) registerReplayStatus() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "replay-status", Method: http.MethodGet, Path: "/v1/admin/replay", Tags: adminTags, Security: bearer,
		Summary: "Progress of the running or last online rebuild", Description: "Needs keyreg.admin.",
	}, func(ctx context.Context, in *struct{}) (*struct{ Body ReplayStatus }, error) {
		if _, err := a.requireAdmin(ctx); err != nil {
			return nil, err
		}
		return &struct{ Body ReplayStatus }{a.d.Replayer.ReplayStatus()}, nil
	})
}
