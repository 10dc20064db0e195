package events

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
)

// samplePayloads holds a realistic payload per event type; TestEventTypeUnits checks every
// type in Types has one.
func samplePayloads() map[Type]Payload {
	t0 := time.Date(2026, 11, 27, 17, 11, 24, 120596000, time.UTC)
	t1 := t0.Add(30 * 24 * time.Hour)
	p := func(s ...string) []netip.Prefix {
		out := []netip.Prefix{}
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	h1, h2 := HashSecret("kr_one"), HashSecret("kr_two")
	return map[Type]Payload{
		TypeWorkspaceCreated:  &WorkspaceCreated{Name: "Acme Inc"},
		TypePermissionDefined: &PermissionDefined{Name: "reports.weekly", Description: "Read the weekly reports"},
		TypeKeyCreated: &KeyCreated{Name: "Prod server", Permissions: []Permission{"messages.send", "users.track"},
			Allowlist: p("203.0.113.0/24", "2001:db8::/32"), SecretHash: h1, ExpiresAt: &t1},
		TypeKeyRenamed: &KeyRenamed{Name: "Prod server (EU)", Previous: "Prod server"},
		TypeKeyPermissionsUpdated: &KeyPermissionsUpdated{Permissions: []Permission{"users.export", "users.track"},
			Previous: []Permission{"messages.send", "users.track"}, Added: []Permission{"users.export"}, Removed: []Permission{"messages.send"}},
		TypeAllowlistUpdated: &AllowlistUpdated{Allowlist: p("198.51.100.0/24"), Previous: p("203.0.113.0/24", "2001:db8::/32"),
			Added: p("198.51.100.0/24"), Removed: p("203.0.113.0/24", "2001:db8::/32")},
		TypeKeySecretRotated:     &KeySecretRotated{SecretHash: h2, PreviousHash: h1, PreviousValidUntil: t0.Add(time.Hour)},
		TypeKeyExpiryChanged:     &KeyExpiryChanged{ExpiresAt: nil, Previous: &t1},
		TypeKeyRevoked:           &KeyRevoked{PreviousStatus: StatusActive},
		TypeIdentifierRegistered: &IdentifierRegistered{Kind: "app", Name: "iOS app", Platform: "ios"},
		TypeIdentifierRenamed:    &IdentifierRenamed{Name: "Summer Sale 2026", Previous: "Summer Sale"},
		TypeIdentifierRetired:    &IdentifierRetired{Kind: "segment", Name: "Lapsed users"},
		TypeNameClaimed:          &NameClaimed{IdentifierID: NewID(), Kind: "segment", Name: "Lapsed users"},
		TypeNameReleased:         &NameReleased{IdentifierID: NewID(), Kind: "segment", Name: "Lapsed users"},
		TypeCheckpointSealed: &CheckpointSealed{TreeSize: 42, RootHash: "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
			Note: "keyreg KEYREG\n42\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n\u2014 keyreg-test AAAA\n"},
		TypeSubscriberAdded: &SubscriberAdded{Name: "billing", MaxConsumers: 3,
			PasswordHash: "$2a$04$Jq1S8cK3tQ5yqf8sH0sG1eQ2m8b7O6k9r3x4y5z6A7B8C9D0E1F2G"},
		TypeSubscriberRemoved: &SubscriberRemoved{Name: "billing"},
		TypeSignerAdded:       &SignerAdded{VerifierKey: "keyreg+4c8a5e1f+AcRGMdNw0nDSzM8AgpSCasPMt2oWHuAsEsKaYBbqAn1B", Node: "node-a"},
		TypeSignerRetired:     &SignerRetired{VerifierKey: "keyreg+4c8a5e1f+AcRGMdNw0nDSzM8AgpSCasPMt2oWHuAsEsKaYBbqAn1B"},
		TypeKeyExpiring:       &KeyExpiring{ExpiresAt: t1, Threshold: "7d", ThresholdSeconds: 7 * 24 * 3600},
		TypeKeyExpired:        &KeyExpired{ExpiresAt: t1},
		TypeKeyLeaked: &KeyLeaked{SecretHash: h2, TokenType: "keyreg_api_key", URL: "https://github.com/acme/app/blob/abc/config.yml",
			Source: "content", Reporter: "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a", Revoked: true},
		TypeLeakResponseSet:   &LeakResponseSet{Mode: LeakReportOnly, Previous: LeakRevoke},
		TypeWebhookRegistered: &WebhookRegistered{URL: "https://hooks.example.com/keyreg", Types: []string{"keyreg.key.*"}},
		TypeWebhookRemoved:    &WebhookRemoved{URL: "https://hooks.example.com/keyreg"},
	}
}

// TestCloudEventsConformance checks that an event of every type in Types, encoded as
// stored in the log, parses and validates as a CloudEvent 1.0 with the official Go SDK,
// with every attribute and extension carried over and the data unchanged.
func TestCloudEventsConformance(t *testing.T) {
	samples := samplePayloads()
	now := time.Date(2026, 11, 27, 17, 11, 24, 120596789, time.UTC)
	for _, typ := range Types {
		t.Run(string(typ.Type), func(t *testing.T) {
			p, ok := samples[typ.Type]
			if !ok {
				if p = newPayload(typ.Type); p == nil {
					t.Fatalf("no payload type for %s", typ.Type)
				}
			}
			if p.EventType() != typ.Type {
				t.Fatalf("payload %T has type %s", p, p.EventType())
			}
			id := NewID()
			meta := Meta{Actor: NewID(), ActorIP: "2001:db8::7", RequestID: NewID(), Reason: "office moved"}
			ev, err := NewEvent("acme", typ.Aggregate, id, p, meta, Hash([]byte("previous event")), now)
			if err != nil {
				t.Fatal(err)
			}
			stored, err := ev.Encode()
			if err != nil {
				t.Fatal(err)
			}

			ce := cloudevents.New()
			if err := json.Unmarshal(stored, &ce); err != nil {
				t.Fatalf("the SDK cannot parse %s: %v", stored, err)
			}
			if err := ce.Validate(); err != nil {
				t.Fatalf("the SDK finds %s invalid: %v", stored, err)
			}
			if ce.SpecVersion() != "1.0" || ce.ID() != ev.ID || ce.Source() != "keyreg/acme" || ce.Type() != string(typ.Type) ||
				ce.Subject() != string(typ.Aggregate)+"/"+id || !ce.Time().Equal(ev.Time) || ce.DataContentType() != DataContentType {
				t.Errorf("attributes differ: SDK %s / ours %+v", ce.String(), ev)
			}
			ext := ce.Extensions()
			for name, want := range map[string]string{
				"actor": meta.Actor, "actorip": meta.ActorIP, "requestid": meta.RequestID, "reason": meta.Reason, "prevhash": ev.PrevHash,
			} {
				if got, _ := ext[name].(string); got != want {
					t.Errorf("extension %s = %v, want %q", name, ext[name], want)
				}
				if len(name) > 20 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
					t.Errorf("extension name %q is not lowercase letters and digits of at most 20", name)
				}
			}
			if len(ext) != 5 {
				t.Errorf("extensions %v, want exactly actor, actorip, requestid, reason, prevhash", ext)
			}
			var sdkData, ourData any
			if err := json.Unmarshal(ce.Data(), &sdkData); err != nil {
				t.Fatalf("data as the SDK reads it: %v", err)
			}
			json.Unmarshal(ev.Data, &ourData)
			if !reflect.DeepEqual(sdkData, ourData) {
				t.Errorf("data differs: SDK %s, ours %s", ce.Data(), ev.Data)
			}

			// What the SDK writes back reads as the same event here.
			out, err := json.Marshal(ce)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Decode(out)
			if err != nil {
				t.Fatalf("decode the SDK's %s: %v", out, err)
			}
			bp, err := back.Payload()
			if err != nil {
				t.Fatalf("payload of the SDK's %s: %v", out, err)
			}
			if bj, pj := mustJSON(t, bp), mustJSON(t, p); bj != pj {
				t.Errorf("payload after the SDK round trip: %s, want %s", bj, pj)
			}
			back.Data, ev.Data = nil, nil
			if !reflect.DeepEqual(back, ev) {
				t.Errorf("envelope after the SDK round trip: %+v, want %+v", back, ev)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
