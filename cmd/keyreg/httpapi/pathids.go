package httpapi

import (
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/events"
)

// pathIDMiddleware parses every id in a request's path with the domain's parsers before a
// handler sees it: {ws} is a workspace slug, {id} a ULID (a key's or an identifier's, by
// the route). A bad one is a 400 naming the field and the value. Without it an id such as
// "*" or ">" would reach the log as a NATS subject wildcard.
func pathIDMiddleware(ctx huma.Context, next func(huma.Context)) {
	if err := parsePathIDs(ctx.Operation().Path, ctx.Param); err != nil {
		writeProblemTo(ctx, toProblem(err))
		return
	}
	next(ctx)
}

// parsePathIDs checks the ids of a route pattern's path parameters, read with param.
func parsePathIDs(route string, param func(name string) string) error {
	if strings.Contains(route, "{ws}") {
		if _, err := events.ParseWorkspace(param("ws")); err != nil {
			return err
		}
	}
	if strings.Contains(route, "{id}") {
		if _, err := events.ParseID(pathIDField(route), param("id")); err != nil {
			return err
		}
	}
	return nil
}

// pathIDField names the {id} of a route in problems, as the commands do.
func pathIDField(route string) string {
	switch {
	case strings.Contains(route, "/keys/{id}"):
		return "key_id"
	case strings.Contains(route, "/identifiers/{id}"):
		return "identifier_id"
	}
	return "id"
}
