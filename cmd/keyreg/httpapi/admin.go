package httpapi

import (
	"context"
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

func (a *API) registerAdmin() {
	if a.d.Replayer == nil {
		return
	}
	a.registerStartReplay()
	a.registerReplayStatus()
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
