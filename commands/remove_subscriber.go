package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/keyreg/keyreg/events"
)

// RemoveSubscriber withdraws a NATS subscriber's credentials (see events.SubscriberRemoved).
type RemoveSubscriber struct {
	Name string
	Meta events.Meta
}

func (c RemoveSubscriber) decide(st events.SubscriberState) ([]change, error) {
	if !st.Active {
		return nil, fmt.Errorf("subscriber %s: %w", c.Name, events.ErrNotFound)
	}
	return []change{{ws: events.SystemWorkspace, agg: events.AggSubscriber, id: c.Name, expect: st.Version, prevHash: st.LastHash,
		payload: events.SubscriberRemoved{Name: c.Name}}}, nil
}

// RemoveSubscriber removes NATS subscriber cmd.Name. The Result's ID is the name.
//
// Errors: *events.ValidationError (field name); events.ErrNotFound when there is no such
// subscriber, or it was removed already.
func (h *Handler) RemoveSubscriber(ctx context.Context, cmd RemoveSubscriber) (Result, error) {
	name, err := events.ParseSubscriberName(cmd.Name)
	if err != nil {
		return Result{}, fmt.Errorf("remove subscriber: %w", err)
	}
	cmd.Name = name
	home := target{events.SystemWorkspace, events.AggSubscriber, name}
	res, err := h.execute(ctx, home, "", cmd.Meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
		st, err := LogState{Log: h.Log}.Subscriber(ctx, name)
		if err != nil {
			return nil, Result{}, err
		}
		changes, err := cmd.decide(st)
		return changes, Result{ID: name}, err
	})
	if err != nil {
		return Result{}, fmt.Errorf("remove subscriber: %w", err)
	}
	return res, nil
}
