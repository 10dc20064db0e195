package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestCanSetReadDeadline: readBody sets its read deadline where the writer, or one it
// wraps, can take it (a net/http server's, behind statusWriter), and skips it where none
// can (a recorder or a buffer, as keyreg serve hands the API), as the controller would.
func TestCanSetReadDeadline(t *testing.T) {
	got := make(chan bool, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- canSetReadDeadline(&statusWriter{ResponseWriter: w})
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !<-got {
		t.Error("a net/http server's writer behind statusWriter: cannot set read deadlines")
	}
	rec := &statusWriter{ResponseWriter: httptest.NewRecorder()}
	if canSetReadDeadline(rec) {
		t.Error("a recorder behind statusWriter: can set read deadlines")
	}
	if err := http.NewResponseController(rec).SetReadDeadline(time.Now()); err == nil {
		t.Error("the controller sets a deadline on a recorder: canSetReadDeadline disagrees")
	}
}
