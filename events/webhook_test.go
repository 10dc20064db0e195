package events_test

import (
	"errors"
	"testing"

	"github.com/keyreg/keyreg/events"
)

// TestWebhookTypes: patterns are types or prefixes ending in ".*" that match a type; a
// webhook with none wants every event.
func TestWebhookTypes(t *testing.T) {
	got, err := events.ParseWebhookTypes([]string{"keyreg.key.*", "keyreg.workspace.created.v1", "keyreg.key.*"})
	if err != nil || len(got) != 2 {
		t.Fatalf("ParseWebhookTypes = %v, %v", got, err)
	}
	for _, bad := range []string{"keyreg.key.nope.v1", "keyreg.nothing.*", "keyreg.key*", "*.key.*", "", "keyreg.key.revoked.v1.*"} {
		var ve *events.ValidationError
		if _, err := events.ParseWebhookTypes([]string{bad}); !errors.As(err, &ve) || ve.Field != "types" || ve.Value != bad {
			t.Errorf("ParseWebhookTypes(%q) = %v, want a refusal of field types", bad, err)
		}
	}
	for _, tc := range []struct {
		types []string
		t     events.Type
		want  bool
	}{
		{nil, events.TypeKeyRevoked, true},
		{[]string{"keyreg.key.*"}, events.TypeKeyRevoked, true},
		{[]string{"keyreg.key.*"}, events.TypeWorkspaceCreated, false},
		{[]string{"keyreg.*"}, events.TypeWebhookRemoved, true},
		{[]string{"keyreg.key.revoked.v1"}, events.TypeKeyRevoked, true},
		{[]string{"keyreg.key.revoked.v1"}, events.TypeKeyCreated, false},
	} {
		if got := events.WebhookWants(tc.types, tc.t); got != tc.want {
			t.Errorf("WebhookWants(%v, %s) = %t", tc.types, tc.t, got)
		}
	}
}

// TestParseWebhookURL refuses what cannot be delivered to, or would put a password in the
// log, naming the field and the value.
func TestParseWebhookURL(t *testing.T) {
	for _, ok := range []string{"https://hooks.example.com/keyreg", "http://203.0.113.7:8080/x?y=1"} {
		if _, err := events.ParseWebhookURL(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "hooks.example.com/x", "ftp://h.example.com/", "https:///x", "https://u:p@h.example.com/",
		"https://h.example.com/#frag", "https://h.example.com:99999/", "https://h.example.com/a b", "javascript:alert(1)"} {
		var ve *events.ValidationError
		if _, err := events.ParseWebhookURL(bad); !errors.As(err, &ve) || ve.Field != "url" || ve.Value != bad {
			t.Errorf("ParseWebhookURL(%q) = %v, want a refusal of field url", bad, err)
		}
	}
}
