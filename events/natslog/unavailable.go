package natslog

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
)

// JetStream errors that say the stream cannot serve now, whatever their HTTP-like code.
const (
	errCodeClusterNotLeader      jetstream.ErrorCode = 10009 // JetStream cluster can not handle request
	errCodeStreamOffline         jetstream.ErrorCode = 10118
	errCodeStreamOfflineReason   jetstream.ErrorCode = 10194
	errCodeAtomicTooManyInflight jetstream.ErrorCode = 10210
	errCodeBatchTooManyInflight  jetstream.ErrorCode = 10211
	// errCodeDuplicateInProcess: a message id asked again while its first publish is
	// still being stored (proposed, not yet committed: the stream lacks a quorum). The
	// outcome is not known yet.
	errCodeDuplicateInProcess jetstream.ErrorCode = 10158
	apiCodeServiceUnavailable                     = 503 // e.g. "JetStream system temporarily unavailable"
)

// unavailable wraps err with events.ErrUnavailable when it says the stream cannot serve
// now rather than that the request is wrong. A request that no server received (no
// responders: the stream has no leader), or that the stream refused (a JetStream API
// error such as "JetStream system temporarily unavailable" or "stream is offline"), is
// wrapped so. One whose answer did not come, in time or at all (a timeout, a connection
// lost while waiting), is wrapped with context.DeadlineExceeded too: an append may have
// been stored. Other errors, and nil, are returned as they are.
func unavailable(err error) error {
	switch {
	case err == nil || errors.Is(err, events.ErrUnavailable):
		return err
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: no answer in time: %w", events.ErrUnavailable, err)
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrConnectionClosed), apiErrorCode(err) == errCodeDuplicateInProcess,
		errors.Is(err, nats.ErrStaleConnection), errors.Is(err, nats.ErrDisconnected):
		return fmt.Errorf("%w: no answer (%w): %w", events.ErrUnavailable, context.DeadlineExceeded, err)
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrReconnectBufExceeded),
		isUnavailableAPIError(err):
		return fmt.Errorf("%w: %w", events.ErrUnavailable, err)
	}
	return err
}

// apiErrorCode returns the JetStream API error code of err, or 0.
func apiErrorCode(err error) jetstream.ErrorCode {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode
	}
	var jsErr jetstream.JetStreamError
	if errors.As(err, &jsErr) && jsErr.APIError() != nil {
		return jsErr.APIError().ErrorCode
	}
	return 0
}

// isUnavailableAPIError reports whether err is a JetStream API error that says the stream
// or the cluster cannot serve now.
func isUnavailableAPIError(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		var jsErr jetstream.JetStreamError
		if !errors.As(err, &jsErr) || jsErr.APIError() == nil {
			return false
		}
		apiErr = jsErr.APIError()
	}
	switch apiErr.ErrorCode {
	case errCodeClusterNotLeader, errCodeStreamOffline, errCodeStreamOfflineReason,
		errCodeAtomicTooManyInflight, errCodeBatchTooManyInflight:
		return true
	}
	return apiErr.Code == apiCodeServiceUnavailable
}
