package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
)

// Health is the body of /healthz and /readyz.
type Health struct {
	Status     string `json:"status" enum:"ok,unavailable"`
	Checkpoint uint64 `json:"checkpoint" doc:"Last stream sequence the views have applied"`
	Detail     string `json:"detail,omitempty"`
}

func (a *API) registerHealth() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "healthz", Method: http.MethodGet, Path: "/healthz", Tags: []string{"health"},
		Summary: "Liveness: the process serves HTTP",
	}, func(ctx context.Context, in *struct{}) (*struct{ Body Health }, error) {
		return &struct{ Body Health }{Health{Status: "ok", Checkpoint: a.d.Views.Checkpoint()}}, nil
	})
	huma.Register(a.huma, huma.Operation{
		OperationID: "readyz", Method: http.MethodGet, Path: "/readyz", Tags: []string{"health"},
		Summary: "Readiness: the views have caught up with the stream", Errors: []int{http.StatusServiceUnavailable},
	}, func(ctx context.Context, in *struct{}) (*struct{ Body Health }, error) {
		if a.d.ReadyCheck != nil {
			if err := a.d.ReadyCheck(ctx); err != nil {
				return nil, problem(http.StatusServiceUnavailable, CodeUnavailable, err.Error())
			}
		}
		return &struct{ Body Health }{Health{Status: "ok", Checkpoint: a.d.Views.Checkpoint()}}, nil
	})
	if a.d.Metrics != nil {
		a.mux.Handle("GET /metrics", a.d.Metrics.Handler())
		a.huma.OpenAPI().AddOperation(&huma.Operation{
			OperationID: "metrics", Method: http.MethodGet, Path: "/metrics", Tags: []string{"health"},
			Summary: "Prometheus metrics (text exposition format)",
			Responses: map[string]*huma.Response{"200": {Description: "Metrics", Content: map[string]*huma.MediaType{
				"text/plain": {Schema: &huma.Schema{Type: "string"}}}}},
		})
	}
}
