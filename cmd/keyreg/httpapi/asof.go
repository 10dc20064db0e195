package httpapi

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/replay"
)

// keyGetInput is the input of GET .../keys/{id}.
type keyGetInput struct {
	KeyPathParams
	AsOf string `query:"as_of" doc:"The key as it was at this moment: an RFC 3339 time or a stream sequence; 404 if it did not exist yet"`
}

// identifierGetInput is the input of GET .../identifiers/{id}.
type identifierGetInput struct {
	IdentifierPathParams
	AsOf string `query:"as_of" doc:"The identifier as it was at this moment: an RFC 3339 time or a stream sequence; 404 if it did not exist yet"`
}

// authorizeAsOf lets a reader of the resource, or an auditor, read its past.
func (a *API) authorizeAsOf(ctx context.Context, ws string, perm events.Permission) error {
	_, err := a.authorize(ctx, ws, perm, PermAuditRead)
	return err
}

// cut parses as_of and returns it with the moment expiry is judged at.
func (a *API) cut(ctx context.Context, asOf string) (replay.Cut, time.Time, error) {
	c, err := replay.ParseCut("as_of", asOf)
	if err != nil {
		return c, time.Time{}, a.fail(ctx, err)
	}
	at, err := c.At(ctx, a.d.Log)
	if err != nil {
		return c, at, a.fail(ctx, err)
	}
	return c, at, nil
}

func (a *API) keyAsOf(ctx context.Context, ws, id, asOf string) (*keyOutput, error) {
	if err := a.authorizeAsOf(ctx, ws, PermKeysRead); err != nil {
		return nil, err
	}
	c, at, err := a.cut(ctx, asOf)
	if err != nil {
		return nil, err
	}
	k, err := replay.KeyAsOf(ctx, a.d.Log, events.Workspace(ws), id, c)
	if err != nil {
		return nil, a.fail(ctx, err)
	}
	return &keyOutput{Location: keyLocation(ws, id), Body: keyOut(k, at)}, nil
}

func (a *API) keysAsOf(ctx context.Context, ws, status, asOf string, page PageParams) (*keysOutput, error) {
	if err := a.authorizeAsOf(ctx, ws, PermKeysRead); err != nil {
		return nil, err
	}
	switch status {
	case "", events.StatusActive, events.StatusRevoked, events.StatusExpired:
	default:
		return nil, invalid("status", status, "status must be active, revoked or expired")
	}
	if err := keyAfter(page.After); err != nil {
		return nil, a.fail(ctx, err)
	}
	c, at, err := a.cut(ctx, asOf)
	if err != nil {
		return nil, err
	}
	keys, err := replay.KeysAsOf(ctx, a.d.Log, events.Workspace(ws), c)
	if err != nil {
		return nil, a.fail(ctx, err)
	}
	slices.SortFunc(keys, func(x, y events.KeyState) int { return strings.Compare(x.ID, y.ID) })
	var sel []events.KeyState
	for _, k := range keys {
		if k.ID > page.After && (status == "" || k.StatusAt(at) == status) {
			if sel = append(sel, k); len(sel) > page.limit() {
				break
			}
		}
	}
	return keysPage(sel, at, page.limit()), nil
}

func (a *API) identifierAsOf(ctx context.Context, ws, id, asOf string) (*identifierOutput, error) {
	if err := a.authorizeAsOf(ctx, ws, PermIdentifiersRead); err != nil {
		return nil, err
	}
	c, _, err := a.cut(ctx, asOf)
	if err != nil {
		return nil, err
	}
	s, err := replay.IdentifierAsOf(ctx, a.d.Log, events.Workspace(ws), id, c)
	if err != nil {
		return nil, a.fail(ctx, err)
	}
	return &identifierOutput{Location: identifierLocation(ws, id), Body: identifierOut(s)}, nil
}

func (a *API) identifiersAsOf(ctx context.Context, ws, kind, q, asOf string, page PageParams) (*identifiersOutput, error) {
	if err := a.authorizeAsOf(ctx, ws, PermIdentifiersRead); err != nil {
		return nil, err
	}
	var k events.Kind
	if kind != "" {
		var err error
		if k, err = events.ParseKind(kind); err != nil {
			return nil, a.fail(ctx, err)
		}
	}
	after, err := identifierAfter(page.After)
	if err != nil {
		return nil, a.fail(ctx, err)
	}
	c, _, err := a.cut(ctx, asOf)
	if err != nil {
		return nil, err
	}
	list, err := replay.IdentifiersAsOf(ctx, a.d.Log, events.Workspace(ws), k, q, c)
	if err != nil {
		return nil, a.fail(ctx, err)
	}
	// The order of the live list: by position (kind, folded name, id).
	slices.SortFunc(list, func(x, y events.IdentifierState) int {
		return strings.Compare(projections.IdentifierCursor(x), projections.IdentifierCursor(y))
	})
	var sel []events.IdentifierState
	for _, s := range list {
		if projections.IdentifierCursor(s) > after {
			if sel = append(sel, s); len(sel) > page.limit() {
				break
			}
		}
	}
	return identifiersPage(sel, page.limit()), nil
}
