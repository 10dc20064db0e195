package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
)

// ErrUnavailable marks errors of a part this server does not have or cannot reach now
// (such as the event stream of a read-only server); they answer 503.
var ErrUnavailable = errors.New("unavailable")

// Problem is an RFC 9457 problem details object (application/problem+json) with a stable
// machine-readable Code, and for invalid input the Field and the bad Value.
type Problem struct {
	Type    string              `json:"type,omitempty" doc:"A URI naming the problem type"`
	Title   string              `json:"title" doc:"Short summary of the problem type"`
	Status  int                 `json:"status" doc:"HTTP status code"`
	Detail  string              `json:"detail,omitempty" doc:"What went wrong, for a person"`
	Code    string              `json:"code" doc:"Stable machine-readable error code"`
	Field   string              `json:"field,omitempty" doc:"The input field that is invalid"`
	Value   string              `json:"value,omitempty" doc:"The invalid value"`
	Errors  []*huma.ErrorDetail `json:"errors,omitempty" doc:"Every validation error found"`
	RetryIn int                 `json:"retry_after_seconds,omitempty" doc:"For 429 and 503: seconds to wait (also in the Retry-After header)"`
	// Holder is, for name_taken, the id of the active identifier that has the name.
	Holder string `json:"holder,omitempty" doc:"For name_taken: the id of the active identifier that holds the name"`
	// CurrentVersion is, for precondition_failed, the resource's version now (also sent
	// as the ETag header).
	CurrentVersion uint64 `json:"current_version,omitempty" doc:"For precondition_failed: the resource's current version (its ETag is also in the ETag header)"`
	// Limit is, for quota_exceeded, the most the workspace may hold.
	Limit int `json:"limit,omitempty" doc:"For quota_exceeded: the most keys or identifiers the workspace may hold"`
	// AppliedSeq is, for a read whose min_seq the views had not applied in time, the
	// sequence they had applied.
	AppliedSeq uint64 `json:"applied_seq,omitempty" doc:"For a read whose min_seq this node had not applied in time (503): the stream sequence its views had applied"`
	headers    http.Header
	internal   error
}

func (p *Problem) Error() string { return p.Code + ": " + p.Detail }

// GetStatus implements huma.StatusError.
func (p *Problem) GetStatus() int { return p.Status }

// GetHeaders implements huma.HeadersError.
func (p *Problem) GetHeaders() http.Header { return p.headers }

// ContentType implements huma.ContentTypeFilter.
func (p *Problem) ContentType(ct string) string {
	if ct == "application/json" {
		return "application/problem+json"
	}
	return ct
}

// Stable problem codes.
const (
	CodeInvalid          = "invalid_input"
	CodeMalformedJSON    = "malformed_json"
	CodeUnknownField     = "unknown_field"
	CodeUnauthorized     = "unauthorized"
	CodeIPNotAllowed     = "ip_not_allowed"
	CodeForbidden        = "forbidden"
	CodeNotFound         = "not_found"
	CodeAlreadyExists    = "already_exists"
	CodeNameTaken        = "name_taken"
	CodeQuotaExceeded    = "quota_exceeded"
	CodeKeyRevoked       = "key_revoked"
	CodeRetired          = "identifier_retired"
	CodeConflict         = "conflict"
	CodeIdempotencyReuse = "idempotency_key_reused"
	CodeIdempotencyBusy  = "idempotency_key_in_use"
	CodePrecondition     = "precondition_failed"
	CodeTooLarge         = "body_too_large"
	CodeTimeout          = "request_timeout"
	CodeRateLimited      = "rate_limited"
	CodeReadOnly         = "read_only"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeInternal         = "internal"
	CodeUnavailable      = "unavailable"
	CodeBodyUnread       = "request_body_unread" // 408: the body did not arrive in time
	CodeNotSupported     = "not_supported"
	CodeTooManyStreams   = "too_many_streams"
)

// Problems never echo much of what a client sent: a bad value is cut to maxEchoedValue
// bytes and a detail to maxDetail bytes (with "…" added), so a huge bad input makes a
// small answer. The constructors below apply the bounds; build problems only with them.
const (
	maxEchoedValue = 64
	maxDetail      = 512
)

// shorten returns s cut to at most n bytes, on a character boundary, with "…" added when
// anything was cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// echo shortens a bad value for a problem or one of its error details.
func echo(v any) any {
	switch v := v.(type) {
	case nil, bool, int, int64, uint64, float64, json.Number:
		return v
	case string:
		return shorten(v, maxEchoedValue)
	default:
		return shorten(fmt.Sprint(v), maxEchoedValue)
	}
}

func problem(status int, code, detail string) *Problem {
	return &Problem{Status: status, Title: http.StatusText(status), Code: code, Detail: shorten(detail, maxDetail)}
}

// invalid is a 400 invalid_input naming field and its bad value (shortened).
func invalid(field, value, detail string) *Problem {
	p := problem(http.StatusBadRequest, CodeInvalid, detail)
	p.Field, p.Value = field, visible(shorten(value, maxEchoedValue))
	return p
}

// visible escapes what would not show in a problem's value: characters that are not
// graphic (controls, bidi and zero-width characters: \u202e) and bytes that are not
// UTF-8 (\xff). So a value echoed back cannot reorder or hide the text around it.
func visible(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == ' ' || unicode.IsGraphic(r) && !unicode.Is(unicode.Zs, r):
			b.WriteString(s[i : i+size])
		case r <= 0xFFFF:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += size
	}
	return b.String()
}

// installErrors makes every error huma writes itself (bad JSON, schema validation, body
// too large) a *Problem. huma keeps its error constructor in a package variable; it is set
// once and is the same for every API. huma (v2.37) offers no per-API hook for it
// (danielgtaylor/huma#352): a per-API Transformer can rewrite the body of such an error
// but not the status huma chose (422 for a body that fails validation, which keyreg
// answers as 400 invalid_input), and the OpenAPI document takes its error schema from
// the package variable too. So this is the one process-wide setting of httpapi; nothing
// else in the package is shared between APIs.
//
// It also makes lists non-nullable in every schema huma generates, so that null where a
// list is expected is a 400 naming the field, in every body: {"allowlist":null} must not
// read as [] (any address). A field that means something by null says so with a
// nullable:"true" tag.
var installErrors = sync.OnceFunc(func() {
	huma.NewError = newHumaError
	huma.DefaultArrayNullable = false
})

func newHumaError(status int, msg string, errs ...error) huma.StatusError {
	p := problem(status, "", msg)
	for _, e := range errs {
		var d huma.ErrorDetailer
		if errors.As(e, &d) {
			p.Errors = append(p.Errors, d.ErrorDetail())
		} else if e != nil {
			p.Errors = append(p.Errors, &huma.ErrorDetail{Message: e.Error()})
		}
	}
	for _, d := range p.Errors {
		// Never echo a whole body or a secret back: bodies may carry keys.
		if d.Location == "body" || d.Location == "body.key" || strings.HasPrefix(d.Location, "header") {
			d.Value = nil
		}
		d.Value = echo(d.Value)
		d.Message, d.Location = shorten(d.Message, maxDetail), shorten(d.Location, maxDetail)
	}
	switch status {
	case http.StatusUnprocessableEntity, http.StatusBadRequest:
		p.Status, p.Title, p.Code = http.StatusBadRequest, http.StatusText(http.StatusBadRequest), CodeInvalid
		if len(p.Errors) > 0 {
			d := p.Errors[0]
			p.Field = strings.TrimPrefix(strings.TrimPrefix(d.Location, "body."), "query.")
			p.Detail = d.Message
			switch {
			case strings.HasPrefix(d.Message, "expected required property "):
				p.Field = strings.TrimSuffix(strings.TrimPrefix(d.Message, "expected required property "), " to be present")
				p.Detail = "missing required field " + strconv.Quote(p.Field)
			case strings.Contains(d.Message, "unexpected property"):
				p.Code, p.Value, d.Value = CodeUnknownField, p.Field, nil
				p.Detail = "unknown field " + strconv.Quote(p.Field)
			case d.Location == "body":
				p.Code, p.Detail = CodeMalformedJSON, "the body is not valid JSON: "+d.Message
			case d.Value != nil:
				p.Value = fmt.Sprint(d.Value)
			}
			p.Field, p.Value = shorten(p.Field, maxEchoedValue), shorten(p.Value, maxEchoedValue)
			p.Detail = shorten(p.Detail, maxDetail)
		}
	case http.StatusRequestEntityTooLarge:
		p.Code = CodeTooLarge
	case http.StatusNotFound:
		p.Code = CodeNotFound
	case http.StatusMethodNotAllowed:
		p.Code = CodeMethodNotAllowed
	case http.StatusPreconditionFailed:
		p.Code = CodePrecondition
	default:
		if status >= 500 {
			p.Code = CodeInternal
		} else {
			p.Code = strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_"))
		}
	}
	return p
}

// RetryAfterSeconds is the Retry-After of a 503 unavailable answered while the event
// stream cannot take changes: about the time a JetStream stream takes to elect a leader.
const RetryAfterSeconds = 2

// streamUnavailable is the 503 of a request the event stream could not serve: with
// Retry-After, and a detail that says whether a write may have been stored all the same
// (the stream's answer did not come in time: the outcome is unknown).
func streamUnavailable(outcomeUnknown bool) *Problem {
	detail := "the event stream is unavailable now (electing a leader, without quorum, or out of this node's reach): a change was not stored; retry after Retry-After seconds"
	if outcomeUnknown {
		detail = "the event stream did not answer in time (electing a leader, without quorum, or out of this node's reach): the outcome of a change is unknown, it may have been stored. " +
			"A retry with the same Idempotency-Key applies it at most once; without one, read the resource first, as a retry may apply the change twice"
	}
	p := problem(http.StatusServiceUnavailable, CodeUnavailable, detail)
	p.RetryIn = RetryAfterSeconds
	p.headers = http.Header{"Retry-After": {strconv.Itoa(RetryAfterSeconds)}}
	return p
}

// toProblem maps the errors of commands, projections and events to problems: one table
// for every handler. Anything unknown is a 500 that leaks no internals; the caller logs it.
func toProblem(err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	var (
		ve     *events.ValidationError
		nf     *events.NotFoundError
		pre    *commands.PreconditionError
		taken  *commands.NameTakenError
		quota  *commands.QuotaError
		ge     *commands.GrantError
		exists *commands.ExistsError
	)
	switch {
	case errors.As(err, &ve):
		return invalid(ve.Field, ve.Value, fmt.Sprintf("invalid %s %q: %s", ve.Field, shorten(ve.Value, maxEchoedValue), ve.Msg))
	case errors.As(err, &ge):
		fp := problem(http.StatusForbidden, CodeForbidden, ge.Error())
		fp.Field, fp.Value = "permissions", visible(shorten(string(ge.Permission), maxEchoedValue))
		return fp
	case errors.As(err, &pre):
		p = problem(http.StatusPreconditionFailed, CodePrecondition,
			fmt.Sprintf("the resource changed: its version is %d, not %d as in If-Match; read it again, or send If-Match: %s", pre.Current, pre.Expected, etag(pre.Current)))
		p.CurrentVersion = pre.Current
		p.headers = http.Header{"Etag": {etag(pre.Current)}}
		return p
	case errors.Is(err, commands.ErrPrecondition):
		return problem(http.StatusPreconditionFailed, CodePrecondition, "the resource changed: its version is not the one in If-Match")
	case errors.As(err, &taken):
		p = problem(http.StatusConflict, CodeNameTaken,
			fmt.Sprintf("the active %s identifier %s already has the name %q (names are compared ignoring case)", taken.Kind, taken.Holder, taken.Name))
		p.Holder = taken.Holder
		return p
	case errors.Is(err, commands.ErrNameTaken):
		return problem(http.StatusConflict, CodeNameTaken, "an active identifier of this kind already has this name (names are compared ignoring case)")
	case errors.As(err, &quota):
		p = problem(http.StatusConflict, CodeQuotaExceeded, quota.Error()+"; the server's --max-"+quota.What+"-per-workspace sets the limit")
		p.Limit = quota.Limit
		return p
	case errors.Is(err, commands.ErrQuotaExceeded):
		return problem(http.StatusConflict, CodeQuotaExceeded, err.Error())
	case errors.As(err, &nf):
		return problem(http.StatusNotFound, CodeNotFound, nf.Error())
	case errors.As(err, &exists):
		return problem(http.StatusConflict, CodeAlreadyExists, exists.Error())
	case errors.Is(err, commands.ErrAlreadyExists):
		return problem(http.StatusConflict, CodeAlreadyExists, "the event id of this request was already used by another command (an Idempotency-Key reused for another request?)")
	case errors.Is(err, commands.ErrRevoked):
		return problem(http.StatusConflict, CodeKeyRevoked, "the key is revoked and accepts no further change")
	case errors.Is(err, commands.ErrRetired):
		return problem(http.StatusConflict, CodeRetired, "the identifier is retired and accepts no further change")
	case errors.Is(err, events.ErrNotFound):
		return problem(http.StatusNotFound, CodeNotFound, "not found")
	case errors.Is(err, ErrUnavailable):
		return problem(http.StatusServiceUnavailable, CodeUnavailable, err.Error())
	case errors.Is(err, events.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return streamUnavailable(errors.Is(err, context.DeadlineExceeded))
	case errors.Is(err, events.ErrConflict):
		return problem(http.StatusConflict, CodeConflict, "too many concurrent changes to this resource; retry")
	case errors.Is(err, context.Canceled):
		// The request was stopped under way: the server shutting down once its drain time
		// has passed (or the client gone). A change may have been stored: not a 500.
		p = streamUnavailable(true)
		p.Detail = "the request was stopped under way (the server is shutting down): the outcome of a change is unknown, it may have been stored. " +
			"A retry with the same Idempotency-Key, on this node or another, applies it at most once; without one, read the resource first"
		return p
	}
	p = problem(http.StatusInternalServerError, CodeInternal, "internal error")
	p.internal = err
	return p
}
