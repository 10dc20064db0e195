package httpapi

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/danielgtaylor/huma/v2"
)

// strictJSONMiddleware refuses, in the body of every operation, null where the
// operation's schema expects a list, and an object key given twice (checkStrictJSON).
func (a *API) strictJSONMiddleware(ctx huma.Context, next func(huma.Context)) {
	if body := requestBody(ctx.Context()); len(body) > 0 {
		lists := listFields(a.huma.OpenAPI().Components.Schemas, ctx.Operation())
		if p := checkStrictJSON(body, func(field string) bool { return lists[field] }); p != nil {
			writeProblemTo(ctx, p)
			return
		}
	}
	next(ctx)
}

// listFields returns the paths (a.b for field b of the object in field a) of the
// non-nullable list fields of op's JSON body.
func listFields(reg huma.Registry, op *huma.Operation) map[string]bool {
	out := map[string]bool{}
	if op.RequestBody == nil || op.RequestBody.Content["application/json"] == nil {
		return out
	}
	var walk func(s *huma.Schema, prefix string, depth int)
	walk = func(s *huma.Schema, prefix string, depth int) {
		if s != nil && s.Ref != "" {
			s = reg.SchemaFromRef(s.Ref)
		}
		if s == nil || depth > 8 {
			return
		}
		for name, ps := range s.Properties {
			if ps.Ref != "" {
				ps = reg.SchemaFromRef(ps.Ref)
			}
			if ps == nil {
				continue
			}
			if ps.Type == huma.TypeArray && !ps.Nullable {
				out[prefix+name] = true
			}
			if ps.Type == huma.TypeObject {
				walk(ps, prefix+name+".", depth+1)
			}
		}
	}
	walk(op.RequestBody.Content["application/json"].Schema, "", 0)
	return out
}

// checkStrictJSON refuses a write body that has null for a field where isList says a list
// is expected: {"allowlist":null} must not read as [] (any address), which is what
// encoding/json makes of it. It also refuses an object that repeats a key, at any depth:
// encoding/json would keep the last one silently, so {"allowlist":["1.1.1.1"],"allowlist":[]}
// would open a key to every address. The problem names the field by its path (a.b for key
// b of the object under key a). A body that is not valid JSON passes: the decoder after
// this check reports it.
func checkStrictJSON(body []byte, isList func(field string) bool) *Problem {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var stack []*jsonFrame
	next := "" // the path of the value about to be read
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // the end, or not JSON: the decoder reports that
		}
		var top *jsonFrame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.keys != nil && top.wantKey {
			key, ok := tok.(string)
			if !ok { // '}' ends the object
				stack = endValue(stack[:len(stack)-1])
				continue
			}
			field := key
			if top.path != "" {
				field = top.path + "." + key
			}
			if _, dup := top.keys[key]; dup {
				return invalid(field, field, "the key "+strconv.Quote(shorten(field, maxEchoedValue))+" appears twice in one object; send each key once")
			}
			top.keys[key] = struct{}{}
			top.wantKey = false
			next = field
			continue
		}
		path := next
		if top != nil && top.keys == nil { // an element of an array: named as the array
			path = top.path
		}
		if tok == nil && top != nil && top.keys != nil && isList(next) {
			return invalid(next, "null", strconv.Quote(shorten(next, maxEchoedValue))+" must be a list ([] for none), not null")
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &jsonFrame{keys: map[string]struct{}{}, wantKey: true, path: path})
		case json.Delim('['):
			stack = append(stack, &jsonFrame{path: path})
		case json.Delim(']'):
			stack = endValue(stack[:len(stack)-1])
		default:
			stack = endValue(stack)
		}
	}
}

// jsonFrame is an object (keys set) or an array being read by checkStrictJSON.
type jsonFrame struct {
	keys    map[string]struct{} // the keys seen so far; nil for an array
	wantKey bool                // in an object: a key comes next
	path    string              // the path of this object or array
}

// endValue notes that a value inside the innermost object has been read: a key (or the
// object's end) comes next.
func endValue(stack []*jsonFrame) []*jsonFrame {
	if len(stack) > 0 && stack[len(stack)-1].keys != nil {
		stack[len(stack)-1].wantKey = true
	}
	return stack
}
