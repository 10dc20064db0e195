package events

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"time"
)

// Change is what an event changed, as the audit log and the CSV export show it: the values
// before the event (nil for a creation) and after it (nil for a release), by name. Secret
// hashes are shortened to their first 12 hex digits, enough to follow rotations.
type Change struct {
	Before, After map[string]any
}

// fields is the type of Change.Before and Change.After.
type fields = map[string]any

// JSON returns Before and After as compact JSON objects, keys sorted and HTML characters
// left as they are; "" for nil. It returns an error only for a value encoding/json cannot
// encode, such as a time outside the years 0 to 9999.
func (c Change) JSON() (before, after string, err error) {
	if before, err = compactJSON(c.Before); err != nil {
		return "", "", err
	}
	if after, err = compactJSON(c.After); err != nil {
		return "", "", err
	}
	return before, after, nil
}

func compactJSON(v fields) (string, error) {
	if v == nil {
		return "", nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

// nonNil returns s, or an empty slice for nil, so that it encodes as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// shortHash returns the first 12 hex digits of a hash.
func shortHash(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}

// The helpers below format the values of summaries (Payload.Summary).

// summaryTime formats t in UTC to the second; "" for the zero time.
func summaryTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// summaryExpiry formats an expiry: its time, or "never" for nil.
func summaryExpiry(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return summaryTime(*t)
}

// listPermissions joins permissions with commas; "none" for none.
func listPermissions(ps []Permission) string {
	if len(ps) == 0 {
		return "none"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ",")
}

// listPrefixes joins an allowlist with commas; "any" for an empty one.
func listPrefixes(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "any"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// addedRemoved formats what was added and removed: " (+a,b -c)"; "" for nothing.
func addedRemoved(nAdded int, added string, nRemoved int, removed string) string {
	var parts []string
	if nAdded > 0 {
		parts = append(parts, "+"+added)
	}
	if nRemoved > 0 {
		parts = append(parts, "-"+removed)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, " ") + ")"
}
