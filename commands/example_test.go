package commands_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
)

func Example() {
	ctx := context.Background()
	h := &commands.Handler{Log: events.NewMemLog()}
	meta := events.Meta{Actor: "01JDX3ADM1N000000000000000", Reason: "onboarding"}

	if _, err := h.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: "acme", Name: "Acme", Meta: meta}); err != nil {
		panic(err)
	}
	key, err := h.CreateKey(ctx, commands.CreateKey{
		Workspace:   "acme",
		Name:        "Backend",
		Permissions: []string{"users.track"},
		Allowlist:   []string{"10.0.0.0/8"},
		Meta:        meta,
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("created: version", key.Version, "secret well formed:", events.WellFormedSecret(key.Secret))

	res, err := h.UpdateAllowlist(ctx, commands.UpdateAllowlist{
		Workspace: "acme", KeyID: key.ID, Allowlist: []string{"192.0.2.0/24"}, ExpectedVersion: key.Version, Meta: meta,
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("allowlist updated: version", res.Version)

	// The same If-Match again fails: the key has moved on.
	_, err = h.UpdateAllowlist(ctx, commands.UpdateAllowlist{
		Workspace: "acme", KeyID: key.ID, Allowlist: []string{"198.51.100.0/24"}, ExpectedVersion: key.Version, Meta: meta,
	})
	fmt.Println(errors.Is(err, commands.ErrPrecondition))

	sale, err := h.RegisterIdentifier(ctx, commands.RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: "Summer Sale", Meta: meta})
	fmt.Println(err)
	_, err = h.RegisterIdentifier(ctx, commands.RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: "SUMMER SALE", Meta: meta})
	var taken *commands.NameTakenError
	fmt.Println(errors.Is(err, commands.ErrNameTaken), errors.As(err, &taken) && taken.Holder == sale.ID)
	// Output:
	// created: version 2 secret well formed: true
	// allowlist updated: version 3
	// true
	// <nil>
	// true true
}
