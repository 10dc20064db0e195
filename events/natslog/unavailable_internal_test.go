package natslog

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
)

// TestDuplicateInProcess: a publish asked again while the first, with the same message
// id, is still being stored (a stream without quorum answers 409 "duplicate message id is
// in process") is neither a refusal nor a conflict: Append asks again, and if its time
// runs out the answer is "unavailable, outcome unknown". (Counted as an internal error, it
// made writes without quorum answer 500.)
func TestDuplicateInProcess(t *testing.T) {
	err := fmt.Errorf("nats: %w", &jetstream.APIError{Code: 409, ErrorCode: errCodeDuplicateInProcess, Description: "duplicate message id is in process"})
	if !noAnswer(err) {
		t.Error("noAnswer: false, want true (ask again)")
	}
	if isConflict(err) {
		t.Error("isConflict: true, want false")
	}
	u := unavailable(err)
	if !errors.Is(u, events.ErrUnavailable) || !errors.Is(u, context.DeadlineExceeded) {
		t.Errorf("unavailable(%v) = %v, want events.ErrUnavailable and context.DeadlineExceeded (outcome unknown)", err, u)
	}
	other := &jetstream.APIError{Code: 400, ErrorCode: 10999, Description: "something else"}
	if noAnswer(other) || errors.Is(unavailable(other), events.ErrUnavailable) {
		t.Error("another API error is taken for no answer")
	}
}

// TestConflictLastSeq: the last sequence a conflict reports is read from nats-server's
// "wrong last sequence: N", and only from it.
func TestConflictLastSeq(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want uint64
	}{
		{fmt.Errorf("nats: %w", &jetstream.APIError{Code: 400, ErrorCode: 10071, Description: "wrong last sequence: 4711"}), 4711},
		{&jetstream.APIError{Code: 400, ErrorCode: 10164, Description: "wrong last sequence"}, 0},
		{&jetstream.APIError{Code: 400, ErrorCode: 10071, Description: "wrong last sequence: x"}, 0},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "wrong last sequence: 5"}, 0},
		{errors.New("wrong last sequence: 5"), 0},
		{nil, 0},
	} {
		if got := conflictLastSeq(tc.err); got != tc.want {
			t.Errorf("conflictLastSeq(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
