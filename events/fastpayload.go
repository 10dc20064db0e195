package events

import (
	"bytes"
	"net/netip"
	"time"
)

// decodePayloadCanonical decodes data into p when p is one of the most frequent payloads
// (KeyCreated, AllowlistUpdated) and data is in the exact form encoding/json writes it:
// the members in field order, no white space, strings without escapes, the optional
// members present only when set. It returns false, with p untouched, for any other type
// or form, and Payload then takes encoding/json's path, so that both give the same payload
// for every input this one accepts (FuzzDecodePayloadCanonical checks it). A replay decodes
// every stored event: this path is several times faster.
func decodePayloadCanonical(data []byte, p Payload) bool {
	c := canonParser{b: data}
	switch p := p.(type) {
	case *KeyCreated:
		var v KeyCreated
		if !c.member(`{"name":`, &v.Name) ||
			!c.lit(`,"permissions":`) || !c.permissions(&v.Permissions) ||
			!c.lit(`,"allowlist":`) || !c.prefixes(&v.Allowlist) ||
			!c.member(`,"secret_hash":`, &v.SecretHash) {
			return false
		}
		if bytes.HasPrefix(c.b[c.i:], []byte(`,"expires_at":`)) {
			c.i += len(`,"expires_at":`)
			start := c.i
			if _, ok := c.str(); !ok {
				return false
			}
			var t time.Time
			if err := t.UnmarshalJSON(c.b[start:c.i]); err != nil {
				return false
			}
			v.ExpiresAt = &t
		}
		if !c.end() {
			return false
		}
		*p = v
	case *AllowlistUpdated:
		var v AllowlistUpdated
		if !c.lit(`{"allowlist":`) || !c.prefixes(&v.Allowlist) ||
			!c.lit(`,"previous":`) || !c.prefixes(&v.Previous) ||
			!c.lit(`,"added":`) || !c.prefixes(&v.Added) ||
			!c.lit(`,"removed":`) || !c.prefixes(&v.Removed) ||
			!c.end() {
			return false
		}
		*p = v
	default:
		return false
	}
	return true
}

// end consumes the closing brace, the last byte.
func (p *canonParser) end() bool { return p.lit("}") && p.i == len(p.b) }

// list consumes null (nil: no call to item) or a JSON array of strings without escapes,
// calling item for each; empty is called first for an array, so that [] gives an empty,
// non-nil slice as encoding/json does.
func (p *canonParser) list(empty func(), item func(string) bool) bool {
	if p.lit("null") {
		return true
	}
	if !p.lit("[") {
		return false
	}
	empty()
	if p.lit("]") {
		return true
	}
	for {
		s, ok := p.str()
		if !ok || !item(s) {
			return false
		}
		if p.lit("]") {
			return true
		}
		if !p.lit(",") {
			return false
		}
	}
}

// permissions consumes a list of permissions into dst.
func (p *canonParser) permissions(dst *[]Permission) bool {
	return p.list(func() { *dst = []Permission{} }, func(s string) bool {
		*dst = append(*dst, Permission(s))
		return true
	})
}

// prefixes consumes a list of IP prefixes into dst; an empty string or one that
// netip.ParsePrefix refuses takes the general path (which gives the zero prefix or the
// error).
func (p *canonParser) prefixes(dst *[]netip.Prefix) bool {
	return p.list(func() { *dst = []netip.Prefix{} }, func(s string) bool {
		x, err := netip.ParsePrefix(s)
		*dst = append(*dst, x)
		return err == nil && s != ""
	})
}
