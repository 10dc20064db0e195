package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/keyreg/keyreg/events"
)

// TestToProblemUnavailable: an error of a stream that cannot serve now is a 503
// unavailable with Retry-After, never a 500; its detail says whether a change may have
// been stored (no answer in time) or was not.
func TestToProblemUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		unknown bool
	}{
		{"NotStored", fmt.Errorf("natslog: append: %w: nats: no responders", events.ErrUnavailable), false},
		{"NoAnswer", fmt.Errorf("natslog: append: %w: no answer in time: %w", events.ErrUnavailable, context.DeadlineExceeded), true},
		{"CommandTimedOut", fmt.Errorf("wait: %w", context.DeadlineExceeded), true},
		{"StoppedAtShutdown", fmt.Errorf("update allowlist: %w", context.Canceled), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := toProblem(tc.err)
			if p.Status != http.StatusServiceUnavailable || p.Code != CodeUnavailable || p.internal != nil {
				t.Fatalf("status %d, code %s, internal %v", p.Status, p.Code, p.internal)
			}
			if got := p.GetHeaders().Get("Retry-After"); got != "2" || p.RetryIn != RetryAfterSeconds {
				t.Fatalf("Retry-After %q, retry_after_seconds %d", got, p.RetryIn)
			}
			if unknown := strings.Contains(p.Detail, "is unknown"); unknown != tc.unknown {
				t.Fatalf("detail %q: says the outcome is unknown: %t, want %t", p.Detail, unknown, tc.unknown)
			}
		})
	}
}
