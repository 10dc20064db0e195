package httpapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strconv"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/keyindex"
)

// LeakCommands are the commands of leak reports (commands.Handler).
type LeakCommands interface {
	ReportLeak(ctx context.Context, c commands.ReportLeak) (commands.LeakReport, error)
	SetLeakResponse(ctx context.Context, c commands.SetLeakResponse) (commands.Result, error)
	LeakResponse(ctx context.Context, ws events.Workspace) (string, uint64, error)
}

// LeakReportKeys are the public keys that sign secret-scanning reports, by key identifier:
// the document GitHub publishes for its secret scanning partners
// ({"public_keys": [{"key_identifier", "key" (PEM), "is_current"}]}). Every key listed is
// accepted, current or not (a report signed just before a rotation still verifies).
type LeakReportKeys map[string]*ecdsa.PublicKey

// LoadLeakReportKeys reads a LeakReportKeys document. Its errors name the file and the
// entry at fault.
func LoadLeakReportKeys(path string) (LeakReportKeys, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--leak-report-keys %s: %w", path, err)
	}
	var doc struct {
		PublicKeys []struct {
			KeyIdentifier string `json:"key_identifier"`
			Key           string `json:"key"`
			IsCurrent     bool   `json:"is_current"`
		} `json:"public_keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("--leak-report-keys %s: not the public keys document ({\"public_keys\": [...]}): %v", path, err)
	}
	if len(doc.PublicKeys) == 0 {
		return nil, fmt.Errorf("--leak-report-keys %s: public_keys is empty", path)
	}
	keys := LeakReportKeys{}
	for i, k := range doc.PublicKeys {
		if k.KeyIdentifier == "" {
			return nil, fmt.Errorf("--leak-report-keys %s: public_keys[%d]: key_identifier is empty", path, i)
		}
		blk, _ := pem.Decode([]byte(k.Key))
		if blk == nil {
			return nil, fmt.Errorf("--leak-report-keys %s: public_keys[%d] (%s): key is not PEM", path, i, k.KeyIdentifier)
		}
		pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
		ec, ok := pub.(*ecdsa.PublicKey)
		if err != nil || !ok || ec.Curve != elliptic.P256() {
			return nil, fmt.Errorf("--leak-report-keys %s: public_keys[%d] (%s): key is not an ECDSA P-256 public key", path, i, k.KeyIdentifier)
		}
		keys[k.KeyIdentifier] = ec
	}
	return keys, nil
}

// verify checks sig (base64 of an ASN.1 ECDSA signature) of body by key id.
func (k LeakReportKeys) verify(id, sig string, body []byte) *Problem {
	if id == "" || sig == "" {
		return problem(http.StatusUnauthorized, CodeUnauthorized, "a report must be signed: headers Github-Public-Key-Identifier and Github-Public-Key-Signature are required")
	}
	pub, ok := k[id]
	if !ok {
		return problem(http.StatusUnauthorized, CodeUnauthorized, "unknown Github-Public-Key-Identifier "+strconv.Quote(shorten(id, maxEchoedValue)))
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	digest := sha256.Sum256(body)
	if err != nil || !ecdsa.VerifyASN1(pub, digest[:], raw) {
		return problem(http.StatusUnauthorized, CodeUnauthorized, "Github-Public-Key-Signature does not verify the body with key "+strconv.Quote(shorten(id, maxEchoedValue)))
	}
	return nil
}

// maxLeakURL bounds the URL of a leak kept in its event (longer ones are cut).
const maxLeakURL = 2048

// MaxLeakReportTokens bounds the tokens of one report (400 beyond).
const MaxLeakReportTokens = 1000

// LeakLabel is the answer for one reported token.
type LeakLabel struct {
	TokenHash string `json:"token_hash" doc:"hex SHA-256 of the token"`
	TokenType string `json:"token_type"`
	Label     string `json:"label" enum:"true_positive,false_positive" doc:"true_positive: the token is a keyreg key's secret (revoked now unless its workspace reports only); false_positive: it is not"`
}

// Labels of LeakLabel.
const (
	LabelTruePositive  = "true_positive"
	LabelFalsePositive = "false_positive"
)

type leakReportItem struct {
	Token  string `json:"token"`
	Type   string `json:"type"`
	URL    string `json:"url"`
	Source string `json:"source"`
}

func (a *API) registerLeaks() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "report-leaked-keys", Method: http.MethodPost, Path: "/v1/leaked-keys", Tags: []string{"leaks"},
		Summary: "Report leaked keys (secret scanning partner endpoint)",
		Description: "A secret scanner's report, in the format of GitHub's secret scanning partner program: a JSON array of " +
			"{token, type, url, source}, signed with ECDSA P-256 over the raw body (headers Github-Public-Key-Identifier and " +
			"Github-Public-Key-Signature, base64 of the ASN.1 signature) by a key of --leak-report-keys. No registry key: the " +
			"signature is the authentication; a missing or bad one is 401 and changes nothing. Each token found (by its hash) on " +
			"a key that is not revoked gets keyreg.key.leaked.v1 and is revoked in the same atomic append, unless its workspace " +
			"reports only (PUT /v1/workspaces/{ws}/leak-response). The answer labels every token. 404 when the server has no " +
			"--leak-report-keys.",
	}, func(ctx context.Context, in *struct {
		KeyID     string `header:"Github-Public-Key-Identifier"`
		Signature string `header:"Github-Public-Key-Signature"`
	}) (*struct{ Body []LeakLabel }, error) {
		body := requestBody(ctx) // the raw body, as signed (read by API.readBody, at most MaxBody bytes)
		if a.d.LeakReportKeys == nil || a.d.Leaks == nil {
			return nil, problem(http.StatusNotFound, CodeNotFound, "leaked-key reports are off on this server: start keyreg serve with --leak-report-keys FILE")
		}
		if err := a.writable(); err != nil {
			return nil, err
		}
		if p := a.d.LeakReportKeys.verify(in.KeyID, in.Signature, body); p != nil {
			return nil, p
		}
		var items []leakReportItem
		if err := json.Unmarshal(body, &items); err != nil || items == nil {
			// Never echo the body: it holds secrets.
			return nil, problem(http.StatusBadRequest, CodeMalformedJSON, "the body must be a JSON array of {token, type, url, source}")
		}
		if len(items) > MaxLeakReportTokens {
			return nil, invalid("body", strconv.Itoa(len(items))+" tokens", "a report holds at most "+strconv.Itoa(MaxLeakReportTokens)+" tokens")
		}
		out, seq, err := a.reportLeaks(ctx, in.KeyID, items)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		if err := a.waitApplied(ctx, seq); err != nil {
			return nil, a.fail(ctx, err)
		}
		return &struct{ Body []LeakLabel }{Body: out}, nil
	})
	a.registerLeakResponse()
}

// reportLeaks labels each token and records the leaks of those that are keys' secrets. It
// returns the last stream sequence appended (0: none).
func (a *API) reportLeaks(ctx context.Context, reporter string, items []leakReportItem) ([]LeakLabel, uint64, error) {
	out := make([]LeakLabel, len(items))
	var last uint64
	c := callerOf(ctx)
	for i, it := range items {
		hash := events.HashSecret(it.Token)
		out[i] = LeakLabel{TokenHash: hash, TokenType: it.Type, Label: LabelFalsePositive}
		r := a.d.Views.Verify(it.Token, netip.Addr{}, "", a.d.Now())
		switch r.Code {
		case keyindex.CodeNotFound, keyindex.CodeMalformed:
			continue
		}
		out[i].Label = LabelTruePositive
		if r.Code == keyindex.CodeRevoked {
			continue
		}
		url := shorten(it.URL, maxLeakURL)
		cctx, cancel := context.WithTimeout(ctx, a.d.CommandTimeout)
		res, err := a.d.Leaks.ReportLeak(cctx, commands.ReportLeak{Workspace: string(r.Workspace), KeyID: r.KeyID, SecretHash: hash,
			TokenType: shorten(it.Type, maxEchoedValue), URL: url, Source: shorten(it.Source, maxEchoedValue), Reporter: reporter,
			Meta: events.Meta{ActorIP: c.ip.String(), RequestID: c.requestID,
				Reason: shorten("leaked: secret scanner "+reporter+" found the secret at "+url, 1024)}})
		cancel()
		a.d.Metrics.command("report_leak", err)
		switch {
		case errors.Is(err, commands.ErrRevoked):
		case err != nil:
			return nil, 0, err
		default:
			last = max(last, res.Seq)
		}
	}
	return out, last, nil
}

// leakResponseBody is a workspace's leak response.
type leakResponseBody struct {
	Mode    string `json:"mode" enum:"revoke,report_only" doc:"revoke: a leaked key is revoked (the default); report_only: keyreg.key.leaked.v1 is recorded, the key stays"`
	Version uint64 `json:"version,omitempty" doc:"stream sequence of the event that set it; absent when never set"`
}

func (a *API) registerLeakResponse() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "get-leak-response", Method: http.MethodGet, Path: "/v1/workspaces/{ws}/leak-response", Tags: []string{"leaks"}, Security: bearer,
		Summary: "Show what a leak report does to the workspace's keys", Description: "Needs keyreg.keys.read.",
	}, func(ctx context.Context, in *struct {
		WS string `path:"ws"`
	}) (*struct{ Body leakResponseBody }, error) {
		if _, err := a.authorize(ctx, in.WS, PermKeysRead); err != nil {
			return nil, err
		}
		if a.d.Leaks == nil {
			return nil, problem(http.StatusConflict, CodeNotSupported, "this server does not serve leak responses")
		}
		mode, seq, err := a.d.Leaks.LeakResponse(ctx, events.Workspace(in.WS))
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		return &struct{ Body leakResponseBody }{Body: leakResponseBody{Mode: mode, Version: seq}}, nil
	})
	huma.Register(a.huma, huma.Operation{
		OperationID: "set-leak-response", Method: http.MethodPut, Path: "/v1/workspaces/{ws}/leak-response", Tags: []string{"leaks"}, Security: bearer,
		Summary:     "Set what a leak report does to the workspace's keys",
		Description: "revoke (the default) or report_only. Recorded as keyreg.workspace.leak_response_set.v1. Needs keyreg.keys.write.",
	}, func(ctx context.Context, in *struct {
		WS             string `path:"ws"`
		IdempotencyKey string `header:"Idempotency-Key"`
		Body           struct {
			Mode string `json:"mode" doc:"revoke or report_only"`
		}
	}) (*struct {
		WriteHeaders
		Body leakResponseBody
	}, error) {
		if err := a.writable(); err != nil {
			return nil, err
		}
		p, err := a.authorize(ctx, in.WS, PermKeysWrite)
		if err != nil {
			return nil, err
		}
		if a.d.Leaks == nil {
			return nil, problem(http.StatusConflict, CodeNotSupported, "this server does not serve leak responses")
		}
		c := callerOf(ctx)
		res, err := a.d.Leaks.SetLeakResponse(ctx, commands.SetLeakResponse{Workspace: in.WS, Mode: in.Body.Mode, EventID: c.eventID, Meta: c.meta(p)})
		a.d.Metrics.command("set_leak_response", err)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		if err := a.waitApplied(ctx, res.Seq); err != nil {
			return nil, a.fail(ctx, err)
		}
		mode, seq, err := a.d.Leaks.LeakResponse(ctx, events.Workspace(in.WS))
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		return &struct {
			WriteHeaders
			Body leakResponseBody
		}{WriteHeaders: written(res), Body: leakResponseBody{Mode: mode, Version: seq}}, nil
	})
}
