package commands

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/keyreg/keyreg/events"
)

// CreateKey creates a REST API key in a workspace.
type CreateKey struct {
	Workspace   string
	Name        string
	Permissions []string   // endpoint permissions; sorted and deduplicated
	Allowlist   []string   // IP addresses and CIDR prefixes; empty allows any address
	ExpiresAt   *time.Time // optional; must be in the future
	EventID     string     // optional ULID; see Handler.CreateKey
	// By is the caller, for the rule of least privilege (see Grantor); nil is the
	// process itself (the bootstrap), which may grant any permission.
	By   *Grantor
	Meta events.Meta
}

type createKey struct {
	ws          events.Workspace
	id          string
	name        string
	permissions []events.Permission
	allowlist   []netip.Prefix
	expiresAt   *time.Time
	secretHash  string
	by          *Grantor
}

func (c CreateKey) validate(now time.Time) (createKey, error) {
	ws, err := events.ParseWorkspace(c.Workspace)
	if err != nil {
		return createKey{}, err
	}
	name, err := events.ParseName("name", c.Name)
	if err != nil {
		return createKey{}, err
	}
	perms, err := events.ParsePermissions(c.Permissions)
	if err != nil {
		return createKey{}, err
	}
	allow, err := events.ParseAllowlist(c.Allowlist)
	if err != nil {
		return createKey{}, err
	}
	exp, err := parseExpiry(c.ExpiresAt, now)
	if err != nil {
		return createKey{}, err
	}
	if err := parseEventID(c.EventID); err != nil {
		return createKey{}, err
	}
	return createKey{ws: ws, name: name, permissions: perms, allowlist: allow, expiresAt: exp, by: c.By}, nil
}

func (c createKey) decide(ws events.WorkspaceState) ([]change, error) {
	if !ws.Exists() {
		return nil, events.NotFound("workspace", string(c.ws), "")
	}
	if err := checkGrants(ws, c.permissions, c.by); err != nil {
		return nil, err
	}
	return []change{{ws: c.ws, agg: events.AggKey, id: c.id, payload: events.KeyCreated{
		Name:        c.name,
		Permissions: c.permissions,
		Allowlist:   c.allowlist,
		SecretHash:  c.secretHash,
		ExpiresAt:   c.expiresAt,
	}}}, nil
}

// CreateKey creates a key with a new secret, returned once in Result.Secret; the log
// only gets its SHA-256. The Result's ID is the new key's id: a new ULID, or EventID when
// that is set, so that running the command again with the same EventID returns the
// earlier Result with Duplicate set and no secret.
//
// Every permission must be in the catalogue or among the workspace's own, keyreg.admin
// only in workspace system, and the caller (By) must hold each keyreg.* permission it
// grants.
//
// Errors: *events.ValidationError (fields workspace, name, permissions, allowlist,
// expires_at, event_id); *GrantError (ErrForbidden) for a registry permission By does not
// hold; events.ErrNotFound (a *events.NotFoundError) when the workspace does not exist; a
// *QuotaError when it holds MaxKeysPerWorkspace keys; ErrAlreadyExists when EventID was
// used by another command.
func (h *Handler) CreateKey(ctx context.Context, cmd CreateKey) (Result, error) {
	c, err := cmd.validate(h.now())
	if err != nil {
		return Result{}, fmt.Errorf("create key: %w", err)
	}
	c.id = cmd.EventID
	if c.id == "" {
		c.id = events.NewID()
	}
	secret, hash, err := h.newSecret()
	if err != nil {
		return Result{}, fmt.Errorf("create key: %w", err)
	}
	c.secretHash = hash
	home := target{c.ws, events.AggKey, c.id}
	q := h.newQuota(c.ws, events.AggKey, events.TypeKeyCreated, "keys", h.MaxKeysPerWorkspace)
	res, err := q.run(ctx, func() (Result, error) {
		return h.execute(ctx, home, cmd.EventID, cmd.Meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
			ws, err := h.grantWorkspace(ctx, c.ws, c.permissions)
			if err != nil {
				return nil, Result{}, err
			}
			changes, err := c.decide(ws)
			if err == nil {
				err = q.apply(ctx, &changes[0])
			}
			return changes, Result{ID: c.id}, err
		})
	})
	if err != nil {
		return Result{}, fmt.Errorf("create key: %w", err)
	}
	if !res.Duplicate {
		res.Secret = secret
	}
	return res, nil
}
