package events_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/keyreg/keyreg/events"
	"golang.org/x/text/unicode/norm"
)

// TestParseNameRefusesHiddenCharacters checks that a name cannot show something other
// than what it holds: each refusal names the field, the code point and its position.
func TestParseNameRefusesHiddenCharacters(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"RightToLeftOverride", "ab\u202Ecd", "name contains U+202E RIGHT-TO-LEFT OVERRIDE at position 3"},
		{"LeftToRightEmbedding", "\u202Aab", "U+202A LEFT-TO-RIGHT EMBEDDING at position 1"},
		{"RightToLeftIsolate", "ab\u2067c", "U+2067 RIGHT-TO-LEFT ISOLATE at position 3"},
		{"PopDirectionalIsolate", "abc\u2069", "U+2069 POP DIRECTIONAL ISOLATE at position 4"},
		{"LeftToRightMark", "a\u200Eb", "U+200E LEFT-TO-RIGHT MARK at position 2"},
		{"RightToLeftMark", "a\u200Fb", "U+200F RIGHT-TO-LEFT MARK at position 2"},
		{"ArabicLetterMark", "a\u061Cb", "U+061C ARABIC LETTER MARK at position 2"},
		{"ZeroWidthSpace", "Prod\u200Bkey", "U+200B ZERO WIDTH SPACE at position 5"},
		{"ZeroWidthJoiner", "a\u200Db", "U+200D ZERO WIDTH JOINER at position 2"},
		{"ByteOrderMark", "\uFEFFProd", "U+FEFF ZERO WIDTH NO-BREAK SPACE at position 1"},
		{"SoftHyphen", "Pro\u00ADd", "U+00AD SOFT HYPHEN at position 4"},
		{"Tag", "a\U000E0041", "U+E0041 TAG LATIN CAPITAL LETTER A at position 2"},
		{"LineSeparator", "a\u2028b", "U+2028 LINE SEPARATOR at position 2"},
		{"ParagraphSeparator", "a\u2029b", "U+2029 PARAGRAPH SEPARATOR at position 2"},
		{"NoBreakSpace", "Prod\u00A0key", "U+00A0 NO-BREAK SPACE at position 5"},
		{"HangulFiller", "\u3164", "U+3164 HANGUL FILLER at position 1"},
		{"BrailleBlank", "a\u2800", "U+2800 BRAILLE PATTERN BLANK at position 2"},
		{"PrivateUse", "a\uE000", "U+E000 at position 2"},
		{"Unassigned", "a\U000E0080", "U+E0080 at position 2"},
		{"Null", "a\x00b", "U+0000 at position 2"},
		{"Newline", "a\nb", "U+000A at position 2"},
		{"Delete", "a\x7fb", "U+007F at position 2"},
		{"NextLine", "a\u0085b", "U+0085 at position 2"},
		{"LoneVariationSelector", "a \uFE0F", "U+FE0F VARIATION SELECTOR-16 at position 3"},
		{"DoubledVariationSelector", "\u2764\uFE0F\uFE0F", "U+FE0F VARIATION SELECTOR-16 at position 3"},
		{"PositionCountsLeadingSpace", "  a\u202E", "at position 4"},
		{"PositionCountsCharacters", "ééé\u202E", "at position 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := events.ParseName("name", tc.in)
			var ve *events.ValidationError
			if !errors.As(err, &ve) || ve.Field != "name" {
				t.Fatalf("ParseName(%q) = %v, want a ValidationError for name", tc.in, err)
			}
			if !strings.Contains(ve.Msg, tc.want) {
				t.Fatalf("message %q does not say %q", ve.Msg, tc.want)
			}
			if ve.Value != tc.in || strings.ContainsFunc(ve.Error(), func(r rune) bool { return r == 0x202E || r == 0x200B || r == 0xFEFF || r < 0x20 }) {
				t.Fatalf("value %q, message %q: want the input as value, and a message that shows no hidden character", ve.Value, ve.Error())
			}
		})
	}
}

func TestParseNameAccepts(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"Trimmed", "  Prod key ✓ ", "Prod key ✓"},
		{"NFC", "Cafe\u0301", "Caf\u00e9"},
		{"Hebrew", "מפתח ראשי", "מפתח ראשי"},
		{"Arabic", "مفتاح الإنتاج", "مفتاح الإنتاج"},
		{"CJK", "本番キー", "本番キー"},
		{"Emoji", "Prod \u2764\uFE0F", "Prod \u2764\uFE0F"},
		{"EmojiZWJFree", "Team 👩🏽", "Team 👩🏽"},
		{"CombiningMarks", "Ñandú", "Ñandú"},
		{"TrailingNewlineTrimmed", "Prod\n", "Prod"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := events.ParseName("name", tc.in)
			if err != nil || got != tc.want {
				t.Fatalf("ParseName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParsePermission(t *testing.T) {
	for _, ok := range []string{"users.track", "kpi.dau.data_series", "keyreg.keys.read", "sdk_authentication.create", "reports.weekly_v2"} {
		if _, err := events.ParsePermission(ok); err != nil {
			t.Errorf("ParsePermission(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "users", "Users.track", "users.track.", ".users", "users..track", "users.Track", "users.1track",
		"users track", "users-track.x", "users:track.x", "users.track*", "users.tr\u00e4ck", strings.Repeat("a.", 64) + "b"} {
		_, err := events.ParsePermission(bad)
		var ve *events.ValidationError
		if !errors.As(err, &ve) || ve.Field != "permissions" {
			t.Errorf("ParsePermission(%q) = %v, want a ValidationError for permissions", bad, err)
		}
	}
}

func FuzzParsePermission(f *testing.F) {
	for _, s := range []string{"users.track", "keyreg.admin", "users.trak", "a.b", "", "A.b", "a..b", "a.b.", "users.tr\u00e4ck", "x" + strings.Repeat(".y", 70)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := events.ParsePermission(s)
		if err != nil {
			if !errors.Is(err, events.ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if string(p) != s || len(s) > events.MaxPermissionBytes || !strings.Contains(s, ".") || strings.ToLower(s) != s {
			t.Fatalf("ParsePermission accepted %q as %q", s, p)
		}
		for _, r := range s {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.') {
				t.Fatalf("ParsePermission accepted %q with %q", s, r)
			}
		}
		// A suggestion, when there is one, is itself a valid permission.
		if sug, ok := events.SuggestPermission(p, nil); ok && !events.KnownPermission(sug, nil) {
			t.Fatalf("SuggestPermission(%q) = %q, not in the catalogue", p, sug)
		}
	})
}

func FuzzParseName(f *testing.F) {
	for _, s := range []string{"Prod key", "  Prod  ", "Cafe\u0301", "ab\u202Ecd", "\u200B", "\uFEFFx", "a\x00b", "a\xffb", "\u2764\uFE0F", " \uFE0F", "מפתח", strings.Repeat("é", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := events.ParseName("name", s)
		if err != nil {
			var ve *events.ValidationError
			if !errors.As(err, &ve) || ve.Field != "name" {
				t.Fatalf("error %v is not a ValidationError for name", err)
			}
			return
		}
		if got == "" || len(got) > events.MaxNameBytes || !utf8.ValidString(got) || !norm.NFC.IsNormalString(got) {
			t.Fatalf("ParseName(%q) = %q: empty, too long, not UTF-8 or not NFC", s, got)
		}
		if strings.TrimSpace(got) != got {
			t.Fatalf("ParseName(%q) = %q is not trimmed", s, got)
		}
		for _, r := range got {
			if r == 0x202E || r == 0x200B || r == 0xFEFF || r == 0x2028 || r < 0x20 || r == 0x7F {
				t.Fatalf("ParseName(%q) = %q keeps %U", s, got, r)
			}
		}
		// Parsing is idempotent: a stored name parses to itself.
		again, err := events.ParseName("name", got)
		if err != nil || again != got {
			t.Fatalf("ParseName(%q) = %q, %v; want it unchanged", got, again, err)
		}
	})
}

func BenchmarkParseName(b *testing.B) {
	for range b.N {
		if _, err := events.ParseName("name", "  Prod server (EU) — Café ✓ "); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSuggestPermission(b *testing.B) {
	for range b.N {
		if _, ok := events.SuggestPermission("campaigns.trigger.schedule.updat", nil); !ok {
			b.Fatal("no suggestion")
		}
	}
}
