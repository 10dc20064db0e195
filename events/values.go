package events

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
	"golang.org/x/text/unicode/runenames"
)

// Workspace is a workspace id: a slug [a-z0-9][a-z0-9-]{0,62}, usable as a NATS subject
// token. The zero value is not valid.
type Workspace string

var workspaceRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ParseWorkspace checks s is a workspace slug.
func ParseWorkspace(s string) (Workspace, error) {
	if !workspaceRE.MatchString(s) {
		return "", Invalid("workspace", s, "must match [a-z0-9][a-z0-9-]{0,62}")
	}
	return Workspace(s), nil
}

// IsValid reports whether w is a well-formed slug.
func (w Workspace) IsValid() bool { return workspaceRE.MatchString(string(w)) }

// SystemWorkspace holds the registry's own keys, among them the root key.
const SystemWorkspace Workspace = "system"

// Permission is an endpoint permission such as "users.track" or "keyreg.keys.read":
// dotted lower case, like the platform's. The zero value is not valid.
type Permission string

// MaxPermissionBytes is the longest permission.
const MaxPermissionBytes = 128

var permissionRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`)

// ParsePermission checks s is a permission's syntax: two or more dot-separated words
// of lower-case letters, digits and underscores, each starting with a letter, at most 128
// bytes in all ("users.track", "kpi.dau.data_series"). It does not check that s is in
// the catalogue (see KnownPermission).
func ParsePermission(s string) (Permission, error) {
	if len(s) > MaxPermissionBytes {
		return "", Invalid("permissions", truncate(s, 32)+"...", "must be at most %d bytes, got %d", MaxPermissionBytes, len(s))
	}
	if !permissionRE.MatchString(s) {
		return "", Invalid("permissions", s, "must be dotted lower case like users.track: words of a-z, 0-9 and _ starting with a letter, joined by dots")
	}
	return Permission(s), nil
}

// MaxPermissions bounds the permissions of one key.
const MaxPermissions = 256

// ParsePermissions validates, sorts and deduplicates a permission list.
func ParsePermissions(in []string) ([]Permission, error) {
	if len(in) > MaxPermissions {
		return nil, Invalid("permissions", strconv.Itoa(len(in))+" entries", "at most %d permissions", MaxPermissions)
	}
	out := make([]Permission, 0, len(in))
	for _, s := range in {
		p, err := ParsePermission(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// MaxNameBytes is the longest name, in bytes after trimming and normalizing.
const MaxNameBytes = 255

// ParseName is the one parser of the names people read (workspaces, keys, identifiers)
// and of permission descriptions. It trims white space, normalizes to NFC (so that "é"
// typed as e + U+0301 is stored as U+00E9) and checks the result is 1 to 255 bytes of
// valid UTF-8 that shows what it says. Refused, with the code point, its name and its
// position (in characters, from 1, in s as given): control characters (Cc), format
// characters (Cf: among them the bidi controls U+200E, U+200F, U+061C, U+202A–U+202E,
// U+2066–U+2069, and the zero-width U+200B–U+200D and U+FEFF), private-use (Co),
// surrogate (Cs) and unassigned code points, the line and paragraph separators
// U+2028/U+2029, spaces other than U+0020 (they look like one), characters that draw
// nothing (such as U+3164 HANGUL FILLER and U+2800 BRAILLE PATTERN BLANK), and variation
// selectors that do not follow a visible character. field names the input in the error.
func ParseName(field, s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", Invalid(field, shorten(s), "must be valid UTF-8")
	}
	lead := utf8.RuneCountInString(s) - utf8.RuneCountInString(strings.TrimLeftFunc(s, unicode.IsSpace))
	t := strings.TrimSpace(s)
	if t == "" {
		return "", Invalid(field, s, "must not be empty")
	}
	pos, prev := lead, rune(' ')
	for _, r := range t {
		pos++
		if why := hiddenRune(r, prev); why != "" {
			return "", Invalid(field, shorten(s), "%s contains %s at position %d: %s", field, codePoint(r), pos, why)
		}
		prev = r
	}
	t = norm.NFC.String(t)
	if len(t) > MaxNameBytes {
		return "", Invalid(field, truncate(t, 32)+"...", "must be at most %d bytes, got %d", MaxNameBytes, len(t))
	}
	return t, nil
}

// hiddenRune says why r, after prev, cannot be in a name, or "" when it can.
func hiddenRune(r, prev rune) string {
	switch {
	case r == utf8.RuneError:
		return "not a character"
	case unicode.Is(unicode.Cc, r):
		return "control characters are not allowed"
	case unicode.Is(unicode.Cf, r):
		return "invisible format characters (bidi controls, zero-width characters) are not allowed"
	case unicode.Is(unicode.Co, r), unicode.Is(unicode.Cs, r):
		return "private-use and surrogate code points are not allowed"
	case r == '\u2028' || r == '\u2029':
		return "line and paragraph separators are not allowed"
	case unicode.Is(unicode.Zs, r) && r != ' ':
		return "the only space allowed is U+0020"
	case blankRunes[r]:
		return "characters that draw nothing are not allowed"
	case unicode.Is(unicode.Variation_Selector, r) && (unicode.IsSpace(prev) || unicode.Is(unicode.Variation_Selector, prev)):
		return "a variation selector must follow a visible character"
	case !unicode.IsGraphic(r):
		return "unassigned code points are not allowed"
	}
	return ""
}

// blankRunes are assigned, graphic characters that draw nothing.
var blankRunes = map[rune]bool{
	'\u034F': true, // COMBINING GRAPHEME JOINER
	'\u115F': true, // HANGUL CHOSEONG FILLER
	'\u1160': true, // HANGUL JUNGSEONG FILLER
	'\u17B4': true, // KHMER VOWEL INHERENT AQ
	'\u17B5': true, // KHMER VOWEL INHERENT AA
	'\u2800': true, // BRAILLE PATTERN BLANK
	'\u3164': true, // HANGUL FILLER
	'\uFFA0': true, // HALFWIDTH HANGUL FILLER
}

// codePoint formats r as U+XXXX followed by its Unicode name when it has one, such as
// "U+202E RIGHT-TO-LEFT OVERRIDE".
func codePoint(r rune) string {
	if n := runenames.Name(r); n != "" && !strings.HasPrefix(n, "<") {
		return fmt.Sprintf("%U %s", r, n)
	}
	return fmt.Sprintf("%U", r)
}

// shorten cuts a long refused value to 64 bytes and marks the cut.
func shorten(s string) string {
	if len(s) <= 64 {
		return s
	}
	return truncate(s, 64) + "..."
}

// FoldName is the case-insensitive, Unicode-aware form of a name used for uniqueness and
// prefix search: the trimmed name, Unicode case-folded, in NFC.
func FoldName(name string) string {
	return norm.NFC.String(cases.Fold().String(strings.TrimSpace(name)))
}

// MaxAllowlist bounds the entries of one allowlist.
const MaxAllowlist = 1000

// ParseAllowlist parses IPv4 and IPv6 addresses and CIDR prefixes. Each entry is
// normalized: an address becomes a full-length prefix, prefixes are masked, IPv4-mapped
// IPv6 is unmapped. The result is sorted and deduplicated. An empty list means any
// address. Zones (fe80::1%eth0) are refused.
func ParseAllowlist(in []string) ([]netip.Prefix, error) {
	if len(in) > MaxAllowlist {
		return nil, Invalid("allowlist", strconv.Itoa(len(in))+" entries", "at most %d entries", MaxAllowlist)
	}
	out := make([]netip.Prefix, 0, len(in))
	for _, s := range in {
		p, err := ParseAllowlistEntry(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return NormalizeAllowlist(out), nil
}

// ParseAllowlistEntry parses one address or CIDR prefix and normalizes it.
func ParseAllowlistEntry(s string) (netip.Prefix, error) {
	t := strings.TrimSpace(s)
	if strings.Contains(t, "%") {
		return netip.Prefix{}, Invalid("allowlist", s, "IPv6 zones are not allowed")
	}
	if strings.Contains(t, "/") {
		p, err := netip.ParsePrefix(t)
		if err != nil {
			return netip.Prefix{}, Invalid("allowlist", s, "not an IP address or CIDR prefix")
		}
		a, bits := p.Addr(), p.Bits()
		if a.Is4In6() {
			if bits < 96 {
				return netip.Prefix{}, Invalid("allowlist", s, "IPv4-mapped prefix shorter than /96")
			}
			a, bits = a.Unmap(), bits-96
		}
		return netip.PrefixFrom(a, bits).Masked(), nil
	}
	a, err := netip.ParseAddr(t)
	if err != nil {
		return netip.Prefix{}, Invalid("allowlist", s, "not an IP address or CIDR prefix")
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// NormalizeAllowlist sorts (IPv4 first, then by address and length) and deduplicates.
func NormalizeAllowlist(in []netip.Prefix) []netip.Prefix {
	out := slices.Clone(in)
	slices.SortFunc(out, ComparePrefix)
	return slices.Compact(out)
}

// ComparePrefix orders prefixes by address, then by length.
func ComparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// AllowlistContains reports whether ip is allowed by list; an empty list allows any
// address. IPv4-mapped IPv6 addresses are unmapped first.
func AllowlistContains(list []netip.Prefix, ip netip.Addr) bool {
	if len(list) == 0 {
		return true
	}
	ip = ip.Unmap()
	for _, p := range list {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Kind is an identifier kind.
type Kind string

// Identifier kinds.
const (
	KindApp               Kind = "app"
	KindSegment           Kind = "segment"
	KindCampaign          Kind = "campaign"
	KindCanvas            Kind = "canvas"
	KindContentCard       Kind = "content_card"
	KindTemplate          Kind = "template"
	KindSubscriptionGroup Kind = "subscription_group"
	KindSend              Kind = "send"
)

// Kinds lists every identifier kind.
var Kinds = []Kind{KindApp, KindSegment, KindCampaign, KindCanvas, KindContentCard, KindTemplate, KindSubscriptionGroup, KindSend}

// ParseKind checks s is one of Kinds.
func ParseKind(s string) (Kind, error) {
	if slices.Contains(Kinds, Kind(s)) {
		return Kind(s), nil
	}
	return "", Invalid("kind", s, "must be one of app, segment, campaign, canvas, content_card, template, subscription_group, send")
}

var platformRE = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)

// ParsePlatform checks an app identifier's platform (ios, android, web, ...): a lower-case
// token of at most 32 characters.
func ParsePlatform(s string) (string, error) {
	if !platformRE.MatchString(s) {
		return "", Invalid("platform", s, "must match [a-z0-9_-]{1,32}, e.g. ios, android, web")
	}
	return s, nil
}

// NewID returns a new ULID string from crypto/rand, used for event, key and identifier ids.
func NewID() string { return ulid.Make().String() }

// ParseID checks s is a ULID in canonical upper-case form.
func ParseID(field, s string) (string, error) {
	id, err := ulid.ParseStrict(s)
	if err != nil || id.String() != s {
		return "", Invalid(field, s, "must be a ULID")
	}
	return s, nil
}

// truncate cuts s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
