package commands

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/keyreg/keyreg/events"
)

// DefaultSubscriberMaxConsumers is a new subscriber's consumer limit when
// AddSubscriber.MaxConsumers is 0.
const DefaultSubscriberMaxConsumers = 10

// AddSubscriber gives a service NATS credentials of its own (see events.SubscriberAdded).
type AddSubscriber struct {
	Name         string // events.ParseSubscriberName
	MaxConsumers int    // 0: DefaultSubscriberMaxConsumers; at most events.MaxSubscriberConsumers
	Meta         events.Meta
}

type addSubscriber struct {
	name string
	max  int
}

func (c AddSubscriber) validate() (addSubscriber, error) {
	name, err := events.ParseSubscriberName(c.Name)
	if err != nil {
		return addSubscriber{}, err
	}
	max := c.MaxConsumers
	if max == 0 {
		max = DefaultSubscriberMaxConsumers
	}
	if max < 1 || max > events.MaxSubscriberConsumers {
		return addSubscriber{}, events.Invalid("max_consumers", strconv.Itoa(c.MaxConsumers), "must be 1 to %d", events.MaxSubscriberConsumers)
	}
	return addSubscriber{name: name, max: max}, nil
}

func (c addSubscriber) decide(st events.SubscriberState, hash string) ([]change, error) {
	if st.Active {
		return nil, alreadyExists("subscriber %q", c.name)
	}
	return []change{{ws: events.SystemWorkspace, agg: events.AggSubscriber, id: c.name, expect: st.Version, prevHash: st.LastHash,
		payload: events.SubscriberAdded{Name: c.name, PasswordHash: hash, MaxConsumers: c.max}}}, nil
}

// AddSubscriber adds NATS subscriber cmd.Name with a new random password (256 bits),
// returned once as the Result's Secret; the log keeps only its bcrypt hash. A removed
// subscriber can be added again, with a new password. The Result's ID is the name.
//
// Errors: *events.ValidationError (fields name, max_consumers); ErrAlreadyExists when the
// subscriber exists and is not removed.
func (h *Handler) AddSubscriber(ctx context.Context, cmd AddSubscriber) (Result, error) {
	c, err := cmd.validate()
	if err != nil {
		return Result{}, fmt.Errorf("add subscriber: %w", err)
	}
	password := rand.Text() + rand.Text()
	// The password is 256 random bits: no cost factor adds to that, and nats-server
	// compares the hash on every connect, so the cheapest cost keeps connects cheap.
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		return Result{}, fmt.Errorf("add subscriber: hash password: %w", err)
	}
	home := target{events.SystemWorkspace, events.AggSubscriber, c.name}
	res, err := h.execute(ctx, home, "", cmd.Meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
		st, err := LogState{Log: h.Log}.Subscriber(ctx, c.name)
		if err != nil {
			return nil, Result{}, err
		}
		changes, err := c.decide(st, string(hash))
		return changes, Result{ID: c.name}, err
	})
	if err != nil {
		return Result{}, fmt.Errorf("add subscriber: %w", err)
	}
	res.Secret = password
	return res, nil
}

// Subscriber folds subscriber name's events from the log (its zero state when it was
// never added).
func (s LogState) Subscriber(ctx context.Context, name string) (events.SubscriberState, error) {
	var st events.SubscriberState
	err := s.fold(ctx, events.SystemWorkspace, events.AggSubscriber, name, st.Apply)
	return st, err
}
