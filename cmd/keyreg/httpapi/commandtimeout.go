package httpapi

import (
	"context"
	"time"

	"github.com/keyreg/keyreg/commands"
)

// DefaultCommandTimeout is how long a write's command may take when Deps.CommandTimeout
// is 0.
const DefaultCommandTimeout = 20 * time.Second

// boundedCommands runs each command with a deadline, so that a write on a stream that
// cannot take it (electing a leader, without quorum, out of reach) answers 503 in time
// instead of waiting past the server's write timeout.
type boundedCommands struct {
	c       Commands
	timeout time.Duration
}

// within runs f(ctx, c) with b's deadline.
func within[C any](b boundedCommands, ctx context.Context, f func(context.Context, C) (commands.Result, error), c C) (commands.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return f(ctx, c)
}

func (b boundedCommands) CreateWorkspace(ctx context.Context, c commands.CreateWorkspace) (commands.Result, error) {
	return within(b, ctx, b.c.CreateWorkspace, c)
}

func (b boundedCommands) DefinePermission(ctx context.Context, c commands.DefinePermission) (commands.Result, error) {
	return within(b, ctx, b.c.DefinePermission, c)
}

func (b boundedCommands) CreateKey(ctx context.Context, c commands.CreateKey) (commands.Result, error) {
	return within(b, ctx, b.c.CreateKey, c)
}

func (b boundedCommands) UpdateKey(ctx context.Context, c commands.UpdateKey) (commands.Result, error) {
	return within(b, ctx, b.c.UpdateKey, c)
}

func (b boundedCommands) UpdateAllowlist(ctx context.Context, c commands.UpdateAllowlist) (commands.Result, error) {
	return within(b, ctx, b.c.UpdateAllowlist, c)
}

func (b boundedCommands) RotateKey(ctx context.Context, c commands.RotateKey) (commands.Result, error) {
	return within(b, ctx, b.c.RotateKey, c)
}

func (b boundedCommands) RevokeKey(ctx context.Context, c commands.RevokeKey) (commands.Result, error) {
	return within(b, ctx, b.c.RevokeKey, c)
}

func (b boundedCommands) RegisterIdentifier(ctx context.Context, c commands.RegisterIdentifier) (commands.Result, error) {
	return within(b, ctx, b.c.RegisterIdentifier, c)
}

func (b boundedCommands) RenameIdentifier(ctx context.Context, c commands.RenameIdentifier) (commands.Result, error) {
	return within(b, ctx, b.c.RenameIdentifier, c)
}

func (b boundedCommands) RetireIdentifier(ctx context.Context, c commands.RetireIdentifier) (commands.Result, error) {
	return within(b, ctx, b.c.RetireIdentifier, c)
}
