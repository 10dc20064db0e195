package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/cmd/keyreg/usage"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

// defaultUsageDays is how many days GET .../usage answers without days.
const defaultUsageDays = 7

// withUsage adds the key's last use to k when v is the current views and the API records
// use (Deps.Usage); a past moment (as_of) shows none: use is not in the log.
func (a *API) withUsage(k wire.Key, v readView) wire.Key {
	if a.d.Usage == nil || !v.current {
		return k
	}
	if at, ip, ok := a.d.Usage.LastUsed(events.Workspace(k.Workspace), k.ID); ok {
		at := at.UTC()
		k.LastUsedAt, k.LastUsedIP = &at, ip
	}
	return k
}

type keyUsageOutput struct {
	Body wire.KeyUsage
}

func (a *API) registerKeyUsage() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "key-usage", Method: http.MethodGet, Path: "/v1/workspaces/{ws}/keys/{id}/usage", Tags: keysTags, Security: bearer,
		Summary: "Show a key's use",
		Description: "What verify saw of the key: its last use (to the server's usage flush interval) and, per UTC day, how many " +
			"verifies found it, by outcome. Every node counts its verifies in memory and flushes them once per interval " +
			"(--usage-flush-interval) to a store of its own, outside the event stream; the counts of all nodes add up. " +
			"Needs keyreg.keys.read, as reading the key does.",
	}, func(ctx context.Context, in *struct {
		KeyPathParams
		Days string `query:"days" doc:"How many days up to today (UTC) to answer, 1 to 90; default 7"`
	}) (*keyUsageOutput, error) {
		if _, err := a.authorize(ctx, in.WS, PermKeysRead); err != nil {
			return nil, err
		}
		days := defaultUsageDays
		if in.Days != "" {
			n, err := strconv.Atoi(in.Days)
			if err != nil || n < 1 || n > usage.MaxDays {
				return nil, invalid("days", in.Days, "days must be a whole number from 1 to "+strconv.Itoa(usage.MaxDays))
			}
			days = n
		}
		if a.d.Usage == nil {
			return nil, problem(http.StatusConflict, CodeNotSupported, "this server does not record the keys' use (a read-only server)")
		}
		v := a.currentView()
		k, err := v.Key(ctx, events.Workspace(in.WS), in.ID)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		shown := a.withUsage(keyOut(k, v.at), v)
		out := &keyUsageOutput{Body: wire.KeyUsage{KeyID: k.ID, Workspace: string(k.Workspace),
			LastUsedAt: shown.LastUsedAt, LastUsedIP: shown.LastUsedIP}}
		for _, d := range a.d.Usage.Daily(k.Workspace, k.ID, days, v.at) {
			var total uint64
			for _, n := range d.Counts {
				total += n
			}
			out.Body.Days = append(out.Body.Days, wire.UsageDay{Date: d.Date, Counts: d.Counts, Total: total})
		}
		return out, nil
	})
}
