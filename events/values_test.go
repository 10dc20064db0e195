package events_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/keyreg/keyreg/events"
)

func TestParseAllowlist(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want string
	}{
		{"Empty", nil, ""},
		{"Address", []string{"203.0.113.7"}, "203.0.113.7/32"},
		{"IPv6Address", []string{"2001:db8::1"}, "2001:db8::1/128"},
		{"PrefixMasked", []string{"10.1.2.3/8"}, "10.0.0.0/8"},
		{"IPv4MappedAddress", []string{"::ffff:192.0.2.1"}, "192.0.2.1/32"},
		{"IPv4MappedPrefix", []string{"::ffff:192.0.2.0/120"}, "192.0.2.0/24"},
		{"SortedDeduplicated", []string{"2001:db8::/32", "10.0.0.1", "10.0.0.1/32", " 10.0.0.0/8 "}, "10.0.0.0/8 10.0.0.1/32 2001:db8::/32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := events.ParseAllowlist(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, p := range got {
				s = append(s, p.String())
			}
			if strings.Join(s, " ") != tt.want {
				t.Fatalf("ParseAllowlist(%q) = %v, want %s", tt.in, s, tt.want)
			}
		})
	}
}

func TestParseAllowlistErrors(t *testing.T) {
	tooMany := make([]string, events.MaxAllowlist+1)
	for i := range tooMany {
		tooMany[i] = "10.0.0.1"
	}
	tests := []struct {
		name  string
		in    []string
		value string
	}{
		{"ErrNotAnAddress", []string{"10.0.0.1", "example.com"}, "example.com"},
		{"ErrBadPrefixLength", []string{"10.0.0.0/33"}, "10.0.0.0/33"},
		{"ErrIPv6Zone", []string{"fe80::1%eth0"}, "fe80::1%eth0"},
		{"ErrShortMappedPrefix", []string{"::ffff:0.0.0.0/80"}, "::ffff:0.0.0.0/80"},
		{"ErrEmptyEntry", []string{""}, ""},
		{"ErrTooMany", tooMany, "1001 entries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := events.ParseAllowlist(tt.in)
			var ve *events.ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, events.ErrInvalid) {
				t.Fatalf("ParseAllowlist(%q) error %v, want a ValidationError", tt.in, err)
			}
			if ve.Field != "allowlist" || ve.Value != tt.value {
				t.Fatalf("error names field %q value %q, want allowlist %q", ve.Field, ve.Value, tt.value)
			}
		})
	}
}

func TestAllowlistContains(t *testing.T) {
	list, _ := events.ParseAllowlist([]string{"10.0.0.0/8", "2001:db8::/32"})
	for ip, want := range map[string]bool{
		"10.1.2.3": true, "11.0.0.1": false, "::ffff:10.9.9.9": true, "2001:db8::5": true, "2001:db9::5": false,
	} {
		if got := events.AllowlistContains(list, netip.MustParseAddr(ip)); got != want {
			t.Errorf("AllowlistContains(%s) = %v, want %v", ip, got, want)
		}
	}
	if !events.AllowlistContains(nil, netip.MustParseAddr("192.0.2.1")) {
		t.Error("an empty allowlist must allow any address")
	}
}

func TestParseName(t *testing.T) {
	if got, err := events.ParseName("name", "  Prod key ✓ "); err != nil || got != "Prod key ✓" {
		t.Fatalf("ParseName = %q, %v", got, err)
	}
	for name, in := range map[string]string{
		"ErrEmpty":    "   ",
		"ErrControl":  "a\x00b",
		"ErrNewline":  "a\nb",
		"ErrBadUTF8":  "a\xffb",
		"ErrTooLong":  strings.Repeat("é", 128),
		"ErrDelete":   "a\x7fb",
		"ErrC1Contol": "a\u0085b",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := events.ParseName("name", in)
			var ve *events.ValidationError
			if !errors.As(err, &ve) || ve.Field != "name" {
				t.Fatalf("ParseName(%q) = %v, want a ValidationError for name", in, err)
			}
		})
	}
}

func TestParseWorkspaceAndPermissions(t *testing.T) {
	for _, ok := range []string{"acme", "a", "acme-prod-2", strings.Repeat("a", 63)} {
		if _, err := events.ParseWorkspace(ok); err != nil {
			t.Errorf("ParseWorkspace(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-acme", "Acme", "ac.me", "ac*", "ac>", strings.Repeat("a", 64), "ac me"} {
		if _, err := events.ParseWorkspace(bad); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("ParseWorkspace(%q) accepted", bad)
		}
	}
	got, err := events.ParsePermissions([]string{"users.track", "messages.send", "users.track"})
	if err != nil || len(got) != 2 || got[0] != "messages.send" {
		t.Fatalf("ParsePermissions = %v, %v; want sorted and deduplicated", got, err)
	}
	if _, err := events.ParsePermissions([]string{"users.track", "Users Track"}); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("ParsePermissions accepted an upper-case permission with a space")
	}
}

func TestFoldName(t *testing.T) {
	pairs := [][2]string{{"Summer Sale", "SUMMER SALE"}, {"Straße", "STRASSE"}, {"café", "cafe\u0301"}, {"ΣΊΣΥΦΟΣ", "σίσυφος"}}
	for _, p := range pairs {
		if events.FoldName(p[0]) != events.FoldName(p[1]) {
			t.Errorf("FoldName(%q) = %q != FoldName(%q) = %q", p[0], events.FoldName(p[0]), p[1], events.FoldName(p[1]))
		}
	}
	if events.FoldName("Summer") == events.FoldName("Winter") {
		t.Error("different names fold alike")
	}
}

func TestMatchSubject(t *testing.T) {
	for _, tt := range []struct {
		filter, subject string
		want            bool
	}{
		{">", "keyreg.a.key.K.created", true},
		{"keyreg.a.>", "keyreg.a.key.K.created", true},
		{"keyreg.a.>", "keyreg.a", false},
		{"keyreg.a.key.K.*", "keyreg.a.key.K.created", true},
		{"keyreg.a.key.K.*", "keyreg.a.key.KK.created", false},
		{"keyreg.a.key.K.*", "keyreg.a.key.K.created.x", false},
		{"keyreg.*.key.K.created", "keyreg.b.key.K.created", true},
		{"keyreg.a.key.K.created", "keyreg.a.key.K", false},
	} {
		if got := events.MatchSubject(tt.filter, tt.subject); got != tt.want {
			t.Errorf("MatchSubject(%q, %q) = %v, want %v", tt.filter, tt.subject, got, tt.want)
		}
	}
}
