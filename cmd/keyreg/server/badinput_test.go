package server_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// TestBadInputCatalogue sends bad requests of every kind. Each gets its expected status
// and problem code (and field, for invalid input) as application/problem+json, and the
// stream's last sequence is unchanged after it.
func TestBadInputCatalogue(t *testing.T) {
	n := startNode(t, "", listenNATS)
	f := newFixture(t, n, "acme")
	newFixture(t, n, "other")
	key := f.createKey(map[string]any{"name": "k", "permissions": []string{"users.track"}})
	revoked := f.createKey(map[string]any{"name": "revoked", "permissions": allWorkspacePerms})
	f.json("DELETE", "/v1/workspaces/acme/keys/"+revoked.Key.ID, f.writer, nil, 200, nil)
	var otherKey wire.KeyWithSecret
	n.json("POST", "/v1/workspaces/other/keys", n.root, map[string]any{"name": "o", "permissions": allWorkspacePerms}, 201, &otherKey)
	var ident wire.Identifier
	f.json("POST", "/v1/workspaces/acme/identifiers", f.writer, map[string]any{"kind": "segment", "name": "Taken"}, 201, &ident)
	var retired wire.Identifier
	f.json("POST", "/v1/workspaces/acme/identifiers", f.writer, map[string]any{"kind": "segment", "name": "Old"}, 201, &retired)
	f.json("DELETE", "/v1/workspaces/acme/identifiers/"+retired.ID, f.writer, nil, 200, nil)
	ipLimited := f.createKey(map[string]any{"name": "ip limited", "permissions": allWorkspacePerms, "allowlist": []string{"192.0.2.0/24"}})
	writeOnly := f.createKey(map[string]any{"name": "write only", "permissions": []string{"keyreg.keys.write"}}).Secret

	keys := "/v1/workspaces/acme/keys"
	k := keys + "/" + key.Key.ID
	rk := keys + "/" + revoked.Key.ID
	ids := "/v1/workspaces/acme/identifiers"
	manyCIDRs := make([]string, 1001)
	for i := range manyCIDRs {
		manyCIDRs[i] = "10.0.0.1"
	}
	many, _ := json.Marshal(map[string]any{"allowlist": manyCIDRs})
	big := `{"name":"` + strings.Repeat("a", 1<<20) + `"}`

	cases := []struct {
		name, method, path, token, body string
		headers                         []string
		status                          int
		code, field, value              string
	}{
		// Allowlists.
		{"CIDRBadLength", "PUT", k + "/allowlist", f.writer, `{"allowlist":["10.0.0.0/33"]}`, nil, 400, "invalid_input", "allowlist", "10.0.0.0/33"},
		{"CIDRHostname", "PUT", k + "/allowlist", f.writer, `{"allowlist":["example.com"]}`, nil, 400, "invalid_input", "allowlist", "example.com"},
		{"CIDRIPv6Zone", "PUT", k + "/allowlist", f.writer, `{"allowlist":["fe80::1%eth0"]}`, nil, 400, "invalid_input", "allowlist", "fe80::1%eth0"},
		{"CIDRIPv6ZonePrefix", "PUT", k + "/allowlist", f.writer, `{"allowlist":["fe80::%eth0/64"]}`, nil, 400, "invalid_input", "allowlist", "fe80::%eth0/64"},
		{"CIDROctetRange", "POST", keys, f.writer, `{"name":"x","allowlist":["256.1.1.1"]}`, nil, 400, "invalid_input", "allowlist", "256.1.1.1"},
		{"CIDREmpty", "POST", keys, f.writer, `{"name":"x","allowlist":[""]}`, nil, 400, "invalid_input", "allowlist", ""},
		{"CIDRTooMany", "PUT", k + "/allowlist", f.writer, string(many), nil, 400, "invalid_input", "allowlist", "1001 entries"},
		{"AllowlistNotArray", "PUT", k + "/allowlist", f.writer, `{"allowlist":"10.0.0.0/8"}`, nil, 400, "invalid_input", "allowlist", ""},
		{"AllowlistMissing", "PUT", k + "/allowlist", f.writer, `{}`, nil, 400, "invalid_input", "allowlist", ""},
		// Names.
		{"NameControlChar", "POST", keys, f.writer, `{"name":"a\u0001b"}`, nil, 400, "invalid_input", "name", `a\u0001b`},
		{"NameNewline", "PATCH", k, f.writer, `{"name":"a\nb"}`, nil, 400, "invalid_input", "name", `a\u000ab`},
		{"NameNonUTF8", "POST", keys, f.writer, "{\"name\":\"a\xffb\"}", nil, 400, "invalid_input", "name", ""},
		// Pages of the lists.
		{"PageLimitZero", "GET", keys + "?limit=0", f.writer, "", nil, 400, "invalid_input", "limit", "0"},
		{"PageLimitTooBig", "GET", ids + "?limit=1001", f.writer, "", nil, 400, "invalid_input", "limit", "1001"},
		{"PageLimitNotNumber", "GET", "/v1/workspaces?limit=ten", n.root, "", nil, 400, "invalid_input", "limit", "ten"},
		{"PageKeysAfterNotID", "GET", keys + "?after=zzz", f.writer, "", nil, 400, "invalid_input", "after", "zzz"},
		{"PageKeysAsOfAfterNotID", "GET", keys + "?as_of=1&after=zzz", f.writer, "", nil, 400, "invalid_input", "after", "zzz"},
		{"PageIdentifiersAfterNotCursor", "GET", ids + "?after=bm9wZQ", f.writer, "", nil, 400, "invalid_input", "after", "bm9wZQ"},
		{"PageIdentifiersAfterNotBase64", "GET", ids + "?after=%25%25", f.writer, "", nil, 400, "invalid_input", "after", "%%"},
		{"PageWorkspacesAfterNotID", "GET", "/v1/workspaces?after=NOPE!", n.root, "", nil, 400, "invalid_input", "after", "NOPE!"},
		// Quotas are in TestQuotaExceeded (they need a server with small quotas).
		{"NameEmpty", "POST", keys, f.writer, `{"name":"   "}`, nil, 400, "invalid_input", "name", "   "},
		{"NameTooLong", "POST", keys, f.writer, `{"name":"` + strings.Repeat("é", 128) + `"}`, nil, 400, "invalid_input", "name", ""},
		{"NameMissing", "POST", keys, f.writer, `{"permissions":[]}`, nil, 400, "invalid_input", "name", ""},
		{"NameNotString", "POST", keys, f.writer, `{"name":42}`, nil, 400, "invalid_input", "name", ""},
		{"IdentifierNameControl", "POST", ids, f.writer, `{"kind":"segment","name":"x\u007f"}`, nil, 400, "invalid_input", "name", `x\u007f`},
		// Permissions and expiry.
		{"PermissionUpperCase", "POST", keys, f.writer, `{"name":"x","permissions":["Users.Track"]}`, nil, 400, "invalid_input", "permissions", "Users.Track"},
		{"PermissionSpace", "PATCH", k, f.writer, `{"permissions":["users track"]}`, nil, 400, "invalid_input", "permissions", "users track"},
		{"ExpiryInPast", "POST", keys, f.writer, `{"name":"x","expires_at":"2001-01-01T00:00:00Z"}`, nil, 400, "invalid_input", "expires_at", ""},
		{"ExpiryNotATime", "POST", keys, f.writer, `{"name":"x","expires_at":"tomorrow"}`, nil, 400, "invalid_input", "expires_at", "tomorrow"},
		{"GraceNegative", "POST", k + "/rotate", f.writer, `{"grace_seconds":-1}`, nil, 400, "invalid_input", "grace_seconds", "-1"},
		{"GraceTooLong", "POST", k + "/rotate", f.writer, `{"grace_seconds":99999999}`, nil, 400, "invalid_input", "grace_seconds", "99999999"},
		// Bodies.
		{"UnknownField", "POST", keys, f.writer, `{"name":"x","colour":"red"}`, nil, 400, "unknown_field", "colour", "colour"},
		{"UnknownFieldPatch", "PATCH", k, f.writer, `{"nmae":"x"}`, nil, 400, "unknown_field", "nmae", "nmae"},
		{"MalformedJSON", "POST", keys, f.writer, `{"name":`, nil, 400, "malformed_json", "body", ""},
		{"NotJSON", "POST", keys, f.writer, `name=x`, nil, 400, "malformed_json", "body", ""},
		{"BodyTooLarge", "POST", keys, f.writer, big, nil, 413, "body_too_large", "", ""},
		{"BodyTooLargeIdempotent", "POST", keys, f.writer, big, []string{"Idempotency-Key", "big-1"}, 413, "body_too_large", "", ""},
		// Least privilege and the permission catalogue.
		{"GrantAuditRead", "POST", keys, writeOnly, `{"name":"x","permissions":["keyreg.audit.read"]}`, nil, 403, "forbidden", "permissions", "keyreg.audit.read"},
		{"GrantEventsRead", "POST", keys, writeOnly, `{"name":"x","permissions":["keyreg.events.read"]}`, nil, 403, "forbidden", "permissions", "keyreg.events.read"},
		{"GrantKeysReadPatch", "PATCH", k, writeOnly, `{"permissions":["keyreg.keys.read"]}`, nil, 403, "forbidden", "permissions", "keyreg.keys.read"},
		{"AdminOutsideSystem", "POST", keys, n.root, `{"name":"x","permissions":["keyreg.admin"]}`, nil, 400, "invalid_input", "permissions", "keyreg.admin"},
		{"PermissionTypo", "POST", keys, f.writer, `{"name":"x","permissions":["users.trak"]}`, nil, 400, "invalid_input", "permissions", "users.trak"},
		{"PermissionTypoPatch", "PATCH", k, f.writer, `{"permissions":["users.track","keyreg.admn"]}`, nil, 400, "invalid_input", "permissions", "keyreg.admn"},
		{"PermissionUnknown", "POST", keys, f.writer, `{"name":"x","permissions":["reports.weekly"]}`, nil, 400, "invalid_input", "permissions", "reports.weekly"},
		{"DefineBuiltIn", "POST", "/v1/workspaces/acme/permissions", f.writer, `{"name":"users.track","description":"x"}`, nil, 400, "invalid_input", "name", "users.track"},
		{"DefineRegistry", "POST", "/v1/workspaces/acme/permissions", f.writer, `{"name":"keyreg.reports","description":"x"}`, nil, 400, "invalid_input", "name", "keyreg.reports"},
		{"DefineBadSyntax", "POST", "/v1/workspaces/acme/permissions", f.writer, `{"name":"Reports Weekly","description":"x"}`, nil, 400, "invalid_input", "name", "Reports Weekly"},
		{"DefineHiddenDescription", "POST", "/v1/workspaces/acme/permissions", f.writer, `{"name":"reports.weekly","description":"x\u200by"}`, nil, 400, "invalid_input", "description", `x\u200by`},
		{"DefineWithoutWrite", "POST", "/v1/workspaces/acme/permissions", key.Secret, `{"name":"reports.weekly","description":"x"}`, nil, 403, "forbidden", "", ""},
		// Honest names.
		{"NameRightToLeftOverride", "POST", keys, f.writer, `{"name":"txt.exe\u202egpj"}`, nil, 400, "invalid_input", "name", `txt.exe\u202egpj`},
		{"NameZeroWidthSpace", "PATCH", k, f.writer, `{"name":"Prod\u200bkey"}`, nil, 400, "invalid_input", "name", `Prod\u200bkey`},
		{"NameByteOrderMark", "POST", ids, f.writer, `{"kind":"segment","name":"\ufeffVIP"}`, nil, 400, "invalid_input", "name", `\ufeffVIP`},
		{"WorkspaceNameBidi", "POST", "/v1/workspaces", n.root, `{"id":"beta","name":"Beta\u2067"}`, nil, 400, "invalid_input", "name", `Beta\u2067`},
		// Kinds, platforms, slugs, ids.
		{"UnknownKind", "POST", ids, f.writer, `{"kind":"widget","name":"x"}`, nil, 400, "invalid_input", "kind", "widget"},
		{"AppWithoutPlatform", "POST", ids, f.writer, `{"kind":"app","name":"x"}`, nil, 400, "invalid_input", "platform", ""},
		{"PlatformOnSegment", "POST", ids, f.writer, `{"kind":"segment","name":"x","platform":"ios"}`, nil, 400, "invalid_input", "platform", "ios"},
		{"ListUnknownKind", "GET", ids + "?kind=widget", f.writer, "", nil, 400, "invalid_input", "kind", "widget"},
		{"WorkspaceSlugUpper", "POST", "/v1/workspaces", n.root, `{"id":"Acme","name":"x"}`, nil, 400, "invalid_input", "workspace", "Acme"},
		{"WorkspaceSlugDot", "POST", "/v1/workspaces", n.root, `{"id":"ac.me","name":"x"}`, nil, 400, "invalid_input", "workspace", "ac.me"},
		{"WorkspaceSlugWildcard", "POST", "/v1/workspaces", n.root, `{"id":"acme>","name":"x"}`, nil, 400, "invalid_input", "workspace", "acme>"},
		{"WorkspaceSlugTooLong", "POST", "/v1/workspaces", n.root, `{"id":"` + strings.Repeat("a", 64) + `","name":"x"}`, nil, 400, "invalid_input", "workspace", strings.Repeat("a", 64)},
		{"WorkspaceExists", "POST", "/v1/workspaces", n.root, `{"id":"acme","name":"again"}`, nil, 409, "already_exists", "", ""},
		{"KeyIDNotULID", "PATCH", keys + "/not-a-ulid", f.writer, `{"name":"x"}`, nil, 400, "invalid_input", "key_id", "not-a-ulid"},
		{"KeyUnknown", "GET", keys + "/01ARZ3NDEKTSV4RRFFQ69G5FAV", f.writer, "", nil, 404, "not_found", "", ""},
		{"KeyUnknownWrite", "PUT", keys + "/01ARZ3NDEKTSV4RRFFQ69G5FAV/allowlist", f.writer, `{"allowlist":[]}`, nil, 404, "not_found", "", ""},
		{"StatusFilterUnknown", "GET", keys + "?status=sleeping", f.writer, "", nil, 400, "invalid_input", "status", "sleeping"},
		{"IfMatchGarbage", "PATCH", k, f.writer, `{"name":"x"}`, []string{"If-Match", "yesterday"}, 400, "invalid_input", "If-Match", "yesterday"},
		{"IfMatchStale", "PATCH", k, f.writer, `{"name":"x"}`, []string{"If-Match", `"1"`}, 412, "precondition_failed", "", ""},
		// Names taken, retired, revoked.
		{"NameTaken", "POST", ids, f.writer, `{"kind":"segment","name":"TAKEN"}`, nil, 409, "name_taken", "", ""},
		{"RenameRetired", "PATCH", ids + "/" + retired.ID, f.writer, `{"name":"new"}`, nil, 409, "identifier_retired", "", ""},
		{"RevokedRename", "PATCH", rk, f.writer, `{"name":"x"}`, nil, 409, "key_revoked", "", ""},
		{"RevokedAllowlist", "PUT", rk + "/allowlist", f.writer, `{"allowlist":[]}`, nil, 409, "key_revoked", "", ""},
		{"RevokedRotate", "POST", rk + "/rotate", f.writer, `{}`, nil, 409, "key_revoked", "", ""},
		{"RevokedRevoke", "DELETE", rk, f.writer, "", nil, 409, "key_revoked", "", ""},
		// Tokens.
		{"TokenMissing", "GET", keys, "", "", nil, 401, "unauthorized", "", ""},
		{"TokenMalformed", "GET", keys, "kr_garbage", "", nil, 401, "unauthorized", "", ""},
		{"TokenWrong", "GET", keys, flipLast(f.writer), "", nil, 401, "unauthorized", "", ""},
		{"TokenUnknown", "POST", keys, "kr_" + strings.Repeat("0", 43) + "0Hd0Ya", `{"name":"x"}`, nil, 401, "unauthorized", "", ""},
		{"TokenRevoked", "POST", keys, revoked.Secret, `{"name":"x"}`, nil, 401, "unauthorized", "", ""},
		{"TokenOtherWorkspace", "POST", keys, otherKey.Secret, `{"name":"x"}`, nil, 404, "not_found", "", ""},
		{"TokenLacksPermission", "POST", keys, key.Secret, `{"name":"x"}`, nil, 403, "forbidden", "", ""},
		{"NoSuchEndpoint", "GET", "/v1/nothing", f.writer, "", nil, 404, "not_found", "", ""},
		{"TokenFromRefusedIP", "GET", keys, ipLimited.Secret, "", nil, 403, "ip_not_allowed", "", ""},
		{"NotAdminCreatesWorkspace", "POST", "/v1/workspaces", f.writer, `{"id":"x","name":"x"}`, nil, 403, "forbidden", "", ""},
		// Verify.
		{"VerifyBadIP", "POST", "/v1/verify", f.writer, `{"key":"kr_x","ip":"999.1.1.1"}`, nil, 400, "invalid_input", "ip", "999.1.1.1"},
		{"VerifyIPZone", "POST", "/v1/verify", f.writer, `{"key":"kr_x","ip":"fe80::1%eth0"}`, nil, 400, "invalid_input", "ip", "fe80::1%eth0"},
		{"VerifyIPPrefix", "POST", "/v1/verify", f.writer, `{"key":"kr_x","ip":"10.0.0.0/8"}`, nil, 400, "invalid_input", "ip", "10.0.0.0/8"},
		{"VerifyIPEmpty", "POST", "/v1/verify", f.writer, `{"key":"kr_x","ip":""}`, nil, 400, "invalid_input", "ip", ""},
		{"VerifyIPMissing", "POST", "/v1/verify", f.writer, `{"key":"kr_x"}`, nil, 400, "invalid_input", "ip", ""},
		{"VerifyKeyNotString", "POST", "/v1/verify", f.writer, `{"key":42,"ip":"10.0.0.1"}`, nil, 400, "invalid_input", "key", ""},
		{"VerifyBadPermission", "POST", "/v1/verify", f.writer, `{"key":"kr_x","ip":"10.0.0.1","permission":"A B"}`, nil, 400, "invalid_input", "permission", "A B"},
		{"VerifyUnknownField", "POST", "/v1/verify", f.writer, `{"key":"kr_x","ip":"10.0.0.1","secret":"y"}`, nil, 400, "unknown_field", "secret", "secret"},
		{"VerifyNoToken", "POST", "/v1/verify", "", `{"key":"kr_x","ip":"10.0.0.1"}`, nil, 401, "unauthorized", "", ""},
		{"VerifyRevokedToken", "POST", "/v1/verify", revoked.Secret, `{"key":"kr_x","ip":"10.0.0.1"}`, nil, 401, "unauthorized", "", ""},
		{"VerifyLacksPermission", "POST", "/v1/verify", key.Secret, `{"key":"kr_x","ip":"10.0.0.1"}`, nil, 403, "forbidden", "", ""},
		{"MethodNotAllowed", "PUT", "/v1/workspaces", n.root, `{}`, nil, 405, "method_not_allowed", "", ""},
		{"MethodInvented", "BREW", "/v1/workspaces", n.root, "", nil, 405, "method_not_allowed", "", ""},
		// Strict JSON (issue 10 finding 6): null for a list, a key twice.
		{"AllowlistNull", "PUT", k + "/allowlist", f.writer, `{"allowlist":null}`, nil, 400, "invalid_input", "allowlist", "null"},
		{"AllowlistNullCreate", "POST", keys, f.writer, `{"name":"x","allowlist":null}`, nil, 400, "invalid_input", "allowlist", "null"},
		{"PermissionsNullPatch", "PATCH", k, f.writer, `{"permissions":null}`, nil, 400, "invalid_input", "permissions", "null"},
		{"AllowlistTwice", "PUT", k + "/allowlist", f.writer, `{"allowlist":["1.1.1.1"],"allowlist":[]}`, nil, 400, "invalid_input", "allowlist", "allowlist"},
		{"NameTwice", "POST", keys, f.writer, `{"name":"x","name":"y"}`, nil, 400, "invalid_input", "name", "name"},
		{"IdentifierKindTwice", "POST", ids, f.writer, `{"kind":"segment","name":"n","kind":"app"}`, nil, 400, "invalid_input", "kind", "kind"},
		// Long bad values are echoed shortened (issue 10 finding 2).
		{"VerifyHugeIP", "POST", "/v1/verify", n.root, `{"key":"kr_x","ip":"` + strings.Repeat("9", 100_000) + `"}`, nil, 400, "invalid_input", "ip", strings.Repeat("9", 64) + "…"},
		{"UnknownFieldHuge", "POST", keys, f.writer, `{"name":"x","` + strings.Repeat("c", 10_000) + `":1}`, nil, 400, "unknown_field", strings.Repeat("c", 64) + "…", strings.Repeat("c", 64) + "…"},
		{"IdempotencyKeyTooLong", "POST", keys, f.writer, `{"name":"x"}`, []string{"Idempotency-Key", strings.Repeat("i", 300)}, 400, "invalid_input", "Idempotency-Key", strings.Repeat("i", 64) + "…"},
		// Path ids (issue 10 finding 12): parsed before use; a NATS wildcard is no id.
		{"KeyIDWildcardAsOf", "GET", keys + "/*?as_of=99", f.writer, "", nil, 400, "invalid_input", "key_id", "*"},
		{"KeyIDWildcardGet", "GET", keys + "/*", f.writer, "", nil, 400, "invalid_input", "key_id", "*"},
		{"KeyIDGreaterHistory", "GET", keys + "/%3E/history", f.writer, "", nil, 400, "invalid_input", "key_id", ">"},
		{"KeyIDWildcardRevoke", "DELETE", keys + "/*", f.writer, "", nil, 400, "invalid_input", "key_id", "*"},
		{"IdentifierIDWildcardAsOf", "GET", ids + "/*?as_of=99", f.writer, "", nil, 400, "invalid_input", "identifier_id", "*"},
		{"IdentifierIDLowerCase", "GET", ids + "/" + strings.ToLower(ident.ID), f.writer, "", nil, 400, "invalid_input", "identifier_id", strings.ToLower(ident.ID)},
		{"WorkspaceWildcardAsOf", "GET", "/v1/workspaces/*/keys?as_of=99", n.root, "", nil, 400, "invalid_input", "workspace", "*"},
		{"WorkspaceWildcardAudit", "GET", "/v1/workspaces/*/audit", n.root, "", nil, 400, "invalid_input", "workspace", "*"},
		{"WorkspaceGreaterWrite", "POST", "/v1/workspaces/ac%3E/keys", n.root, `{"name":"x"}`, nil, 400, "invalid_input", "workspace", "ac>"},
		// NATS subscribers.
		{"SubscriberNameUpper", "POST", "/v1/subscribers", n.root, `{"name":"Billing"}`, nil, 400, "invalid_input", "name", "Billing"},
		{"SubscriberNameDot", "POST", "/v1/subscribers", n.root, `{"name":"a.b"}`, nil, 400, "invalid_input", "name", "a.b"},
		{"SubscriberNameWildcard", "POST", "/v1/subscribers", n.root, `{"name":"a>"}`, nil, 400, "invalid_input", "name", "a>"},
		{"SubscriberNameSpace", "POST", "/v1/subscribers", n.root, `{"name":"a b"}`, nil, 400, "invalid_input", "name", "a b"},
		{"SubscriberNameEmpty", "POST", "/v1/subscribers", n.root, `{"name":""}`, nil, 400, "invalid_input", "name", ""},
		{"SubscriberNameDigitFirst", "POST", "/v1/subscribers", n.root, `{"name":"1svc"}`, nil, 400, "invalid_input", "name", "1svc"},
		{"SubscriberNameTooLong", "POST", "/v1/subscribers", n.root, `{"name":"` + strings.Repeat("a", 33) + `"}`, nil, 400, "invalid_input", "name", ""},
		{"SubscriberNameKeyreg", "POST", "/v1/subscribers", n.root, `{"name":"keyreg"}`, nil, 400, "invalid_input", "name", "keyreg"},
		{"SubscriberMaxConsumersTooMany", "POST", "/v1/subscribers", n.root, `{"name":"svc","max_consumers":101}`, nil, 400, "invalid_input", "max_consumers", "101"},
		{"SubscriberMaxConsumersNegative", "POST", "/v1/subscribers", n.root, `{"name":"svc","max_consumers":-1}`, nil, 400, "invalid_input", "max_consumers", "-1"},
		{"SubscriberUnknownField", "POST", "/v1/subscribers", n.root, `{"name":"svc","password":"x"}`, nil, 400, "unknown_field", "password", "password"},
		{"SubscriberNotAdmin", "POST", "/v1/subscribers", f.writer, `{"name":"svc"}`, nil, 403, "forbidden", "", ""},
		{"SubscriberRemoveUnknown", "DELETE", "/v1/subscribers/nobody", n.root, "", nil, 404, "not_found", "", ""},
		{"SubscriberRemoveBadName", "DELETE", "/v1/subscribers/No_Such", n.root, "", nil, 400, "invalid_input", "name", "No_Such"},
	}

	if len(cases) < 40 {
		t.Fatalf("catalogue has %d cases, want at least 40", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := n.lastSeq()
			var body any
			if c.body != "" {
				body = c.body
			}
			st, h, b := n.do(c.method, c.path, c.token, body, c.headers...)
			if st != c.status {
				t.Fatalf("status %d, want %d: %s", st, c.status, b)
			}
			if ct := h.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q, want application/problem+json", ct)
			}
			var p problemBody
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatalf("body is not a problem: %s", b)
			}
			if p.Code != c.code || p.Status != c.status {
				t.Errorf("code %q status %d, want %q %d: %s", p.Code, p.Status, c.code, c.status, b)
			}
			if c.field != "" && p.Field != c.field {
				t.Errorf("field %q, want %q: %s", p.Field, c.field, b)
			}
			if c.value != "" && p.Value != c.value {
				t.Errorf("value %q, want %q: %s", p.Value, c.value, b)
			}
			if c.token != "" && strings.Contains(string(b), c.token) {
				t.Errorf("the answer echoes the bearer token")
			}
			if after := n.lastSeq(); after != before {
				t.Errorf("the stream moved from %d to %d", before, after)
			}
		})
	}
}
