package httpapi

import (
	"encoding/base64"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
)

// DefaultPageSize is the page size of the lists (keys, identifiers, workspaces, audit,
// history) when a request sets none; wire.MaxPageSize is the most.
const DefaultPageSize = 100

// PageParams are the paging parameters of the keys, identifiers and workspaces lists:
// at most Limit items, after the item named by After (the previous page's next).
type PageParams struct {
	After string `query:"after" doc:"The next of the previous page: this page starts after it. Absent: the first page."`
	Limit int    `query:"limit" minimum:"1" maximum:"1000" default:"100" doc:"The most items in the page"`
}

// limit returns the page size, DefaultPageSize when unset (in-process callers).
func (p PageParams) limit() int {
	if p.Limit <= 0 {
		return DefaultPageSize
	}
	return p.Limit
}

// keyAfter checks that after is empty or a key id.
func keyAfter(after string) error {
	if after == "" {
		return nil
	}
	_, err := events.ParseID("after", after)
	return err
}

// workspaceAfter checks that after is empty or a workspace id.
func workspaceAfter(after string) (events.Workspace, error) {
	if after == "" {
		return "", nil
	}
	ws, err := events.ParseWorkspace(after)
	if err != nil {
		return "", events.Invalid("after", after, "must be a workspace id, the next of the previous page")
	}
	return ws, nil
}

// identifierNext is the next cursor of a page that ends with s: its position in the
// list's order (kind, folded name, id), base64url-encoded.
func identifierNext(s events.IdentifierState) string {
	return base64.RawURLEncoding.EncodeToString([]byte(projections.IdentifierCursor(s)))
}

// identifierAfter decodes an identifier cursor made by identifierNext ("" for none).
func identifierAfter(after string) (string, error) {
	if after == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(after)
	if err != nil || !projections.ValidIdentifierCursor(string(b)) {
		return "", events.Invalid("after", after, "must be the next of the previous page of identifiers")
	}
	return string(b), nil
}
