package events

import (
	"slices"
	"strings"
)

// PermissionInfo is an entry of the permission catalogue: a permission, what it allows,
// and the group it is listed under. Workspace is set for a workspace's own permissions
// (see WorkspacePermissionDefined) and empty for the built-in ones.
type PermissionInfo struct {
	Name        Permission `json:"name"`
	Description string     `json:"description"`
	Group       string     `json:"group"`
	Workspace   Workspace  `json:"workspace,omitempty"`
}

// Registry permissions: what a key may do with keyreg itself. PermAdmin holds in every
// workspace and exists only on keys of SystemWorkspace; the others hold in the workspace
// of the key that has them.
const (
	PermAdmin            Permission = "keyreg.admin"
	PermKeysRead         Permission = "keyreg.keys.read"
	PermKeysWrite        Permission = "keyreg.keys.write"
	PermIdentifiersRead  Permission = "keyreg.identifiers.read"
	PermIdentifiersWrite Permission = "keyreg.identifiers.write"
	PermAuditRead        Permission = "keyreg.audit.read"
	PermEventsRead       Permission = "keyreg.events.read"
	PermVerify           Permission = "keyreg.verify"
	PermWebhooksRead     Permission = "keyreg.webhooks.read"
	PermWebhooksWrite    Permission = "keyreg.webhooks.write"
)

// RegistryPrefix starts every registry permission. A workspace cannot define a
// permission of its own with it.
const RegistryPrefix = "keyreg."

// IsRegistry reports whether p is a registry permission (keyreg.*), which a caller may
// grant only if it holds it.
func (p Permission) IsRegistry() bool { return strings.HasPrefix(string(p), RegistryPrefix) }

// GroupRegistry is the group of the registry permissions in the catalogue.
const GroupRegistry = "keyreg"

// GroupWorkspace is the group of a workspace's own permissions.
const GroupWorkspace = "workspace"

// catalogue is every built-in permission: the platform's REST API key permissions
// (the endpoint permissions of the marketing platform's API Keys page, by group, as its
// documentation lists them) and the registry's own. Names are unique.
var catalogue = []PermissionInfo{
	// User data.
	{"users.track", "Record user attributes, custom events and purchases.", "User data", ""},
	{"users.delete", "Delete any user.", "User data", ""},
	{"users.alias.new", "Create a new alias for an existing user.", "User data", ""},
	{"users.alias.update", "Update an alias of an existing user.", "User data", ""},
	{"users.identify", "Identify an alias-only user with an external ID.", "User data", ""},
	{"users.export.ids", "Query user profiles by user ID.", "User data", ""},
	{"users.export.segment", "Query user profiles by segment.", "User data", ""},
	{"users.export.global_control_group", "Query user profiles in the Global Control Group.", "User data", ""},
	{"users.merge", "Merge two existing users into each other.", "User data", ""},
	{"users.external_ids.rename", "Change the external ID of an existing user.", "User data", ""},
	{"users.external_ids.remove", "Remove the external ID of an existing user.", "User data", ""},
	// Email.
	{"email.unsubscribe", "Query unsubscribed email addresses.", "Email", ""},
	{"email.status", "Change an email address's subscription status.", "Email", ""},
	{"email.hard_bounces", "Query hard-bounced email addresses.", "Email", ""},
	{"email.bounce.remove", "Remove email addresses from the hard bounce list.", "Email", ""},
	{"email.spam.remove", "Remove email addresses from the spam list.", "Email", ""},
	{"email.blacklist", "Blocklist email addresses.", "Email", ""},
	// Messages.
	{"messages.send", "Send an immediate message to specific users.", "Messages", ""},
	{"messages.schedule.create", "Schedule a message to be sent at a given time.", "Messages", ""},
	{"messages.schedule.update", "Update a scheduled message.", "Messages", ""},
	{"messages.schedule.delete", "Delete a scheduled message.", "Messages", ""},
	{"messages.schedule_broadcasts", "Query every scheduled broadcast message.", "Messages", ""},
	{"messages.live_activity.update", "Update an iOS Live Activity.", "Messages", ""},
	// Campaigns.
	{"campaigns.trigger.send", "Trigger the sending of an existing campaign.", "Campaigns", ""},
	{"campaigns.trigger.schedule.create", "Schedule a future send of an API-triggered campaign.", "Campaigns", ""},
	{"campaigns.trigger.schedule.update", "Update a scheduled API-triggered campaign.", "Campaigns", ""},
	{"campaigns.trigger.schedule.delete", "Delete a scheduled API-triggered campaign.", "Campaigns", ""},
	{"campaigns.list", "Query the list of campaigns.", "Campaigns", ""},
	{"campaigns.data_series", "Query campaign analytics over a time range.", "Campaigns", ""},
	{"campaigns.details", "Query the details of a campaign.", "Campaigns", ""},
	{"campaigns.url_info.details", "Query the URL details of a campaign's message variation.", "Campaigns", ""},
	{"sends.data_series", "Query message send analytics over a time range.", "Campaigns", ""},
	{"sends.id.create", "Create a send ID for message blast tracking.", "Campaigns", ""},
	{"transactional.send", "Send a transactional message through a transactional campaign.", "Campaigns", ""},
	// Canvas.
	{"canvas.trigger.send", "Trigger the sending of an existing Canvas.", "Canvas", ""},
	{"canvas.trigger.schedule.create", "Schedule a future send of an API-triggered Canvas.", "Canvas", ""},
	{"canvas.trigger.schedule.update", "Update a scheduled API-triggered Canvas.", "Canvas", ""},
	{"canvas.trigger.schedule.delete", "Delete a scheduled API-triggered Canvas.", "Canvas", ""},
	{"canvas.list", "Query the list of Canvases.", "Canvas", ""},
	{"canvas.data_series", "Query Canvas analytics over a time range.", "Canvas", ""},
	{"canvas.details", "Query the details of a Canvas.", "Canvas", ""},
	{"canvas.data_summary", "Query rollups of Canvas analytics over a time range.", "Canvas", ""},
	{"canvas.url_info.details", "Query the URL details of a Canvas step's message variation.", "Canvas", ""},
	// Segments.
	{"segments.list", "Query the list of segments.", "Segments", ""},
	{"segments.data_series", "Query segment analytics over a time range.", "Segments", ""},
	{"segments.details", "Query the details of a segment.", "Segments", ""},
	// Purchases.
	{"purchases.product_list", "Query the list of products purchased in the app.", "Purchases", ""},
	{"purchases.revenue_series", "Query the money spent per day in the app over a time range.", "Purchases", ""},
	{"purchases.quantity_series", "Query the number of purchases per day in the app over a time range.", "Purchases", ""},
	// Custom events and attributes.
	{"events.list", "Query the list of custom events.", "Events", ""},
	{"events.data_series", "Query occurrences of a custom event over a time range.", "Events", ""},
	{"events.get", "Export custom events with their properties.", "Events", ""},
	{"custom_attributes.get", "Export custom attributes with their properties.", "Events", ""},
	// Sessions and KPIs.
	{"sessions.data_series", "Query sessions per day over a time range.", "Sessions", ""},
	{"kpi.dau.data_series", "Query daily active users over a time range.", "KPIs", ""},
	{"kpi.mau.data_series", "Query unique active users over a rolling 30 days, over a time range.", "KPIs", ""},
	{"kpi.new_users.data_series", "Query new users per day over a time range.", "KPIs", ""},
	{"kpi.uninstalls.data_series", "Query app uninstalls per day over a time range.", "KPIs", ""},
	// Templates and Content Blocks.
	{"templates.email.create", "Create an email template.", "Templates", ""},
	{"templates.email.update", "Update an email template.", "Templates", ""},
	{"templates.email.info", "Query the details of an email template.", "Templates", ""},
	{"templates.email.list", "Query the list of email templates.", "Templates", ""},
	{"content_blocks.info", "Query the details of a Content Block.", "Content Blocks", ""},
	{"content_blocks.list", "Query the list of Content Blocks.", "Content Blocks", ""},
	{"content_blocks.create", "Create a Content Block.", "Content Blocks", ""},
	{"content_blocks.update", "Update a Content Block.", "Content Blocks", ""},
	// SSO.
	{"sso.saml.login", "Set up identity provider-initiated login.", "SSO", ""},
	// Preference center.
	{"preference_center.get", "Query a preference center.", "Preference center", ""},
	{"preference_center.list", "Query the list of preference centers.", "Preference center", ""},
	{"preference_center.update", "Create or update a preference center.", "Preference center", ""},
	{"preference_center.user.get", "Get a user's preference center link.", "Preference center", ""},
	// Subscription groups.
	{"subscription.status.set", "Set users' subscription group status.", "Subscription", ""},
	{"subscription.status.get", "Query users' subscription group status.", "Subscription", ""},
	{"subscription.groups.get", "Query the subscription groups users are explicitly in or out of.", "Subscription", ""},
	// SMS.
	{"sms.invalid_phone_numbers", "Query invalid phone numbers.", "SMS", ""},
	{"sms.invalid_phone_numbers.remove", "Remove the invalid phone number flag from users.", "SMS", ""},
	// Catalogs.
	{"catalogs.create", "Create a catalog.", "Catalogs", ""},
	{"catalogs.get", "Query the list of catalogs.", "Catalogs", ""},
	{"catalogs.delete", "Delete a catalog.", "Catalogs", ""},
	{"catalogs.add_items", "Add items to a catalog.", "Catalogs", ""},
	{"catalogs.update_items", "Update items of a catalog.", "Catalogs", ""},
	{"catalogs.delete_items", "Delete items of a catalog.", "Catalogs", ""},
	{"catalogs.replace_items", "Replace items of a catalog.", "Catalogs", ""},
	{"catalogs.get_items", "Preview the items of a catalog.", "Catalogs", ""},
	{"catalogs.get_item", "Query one item of a catalog.", "Catalogs", ""},
	{"catalogs.create_item", "Create one item in a catalog.", "Catalogs", ""},
	{"catalogs.update_item", "Update one item of a catalog.", "Catalogs", ""},
	{"catalogs.replace_item", "Replace one item of a catalog.", "Catalogs", ""},
	{"catalogs.delete_item", "Delete one item of a catalog.", "Catalogs", ""},
	// Cloud Data Ingestion and media library.
	{"cdi.integration_list", "Query the list of Cloud Data Ingestion integrations.", "Cloud Data Ingestion", ""},
	{"cdi.integration_job_status", "Query the sync status of a Cloud Data Ingestion integration.", "Cloud Data Ingestion", ""},
	{"cdi.integration_sync", "Trigger a sync of a Cloud Data Ingestion integration.", "Cloud Data Ingestion", ""},
	{"media_library.create", "Upload an asset to the media library.", "Media library", ""},
	// SDK authentication.
	{"sdk_authentication.create", "Create an SDK authentication key for an app.", "SDK authentication", ""},
	{"sdk_authentication.primary", "Make an SDK authentication key the app's primary key.", "SDK authentication", ""},
	{"sdk_authentication.delete", "Delete an SDK authentication key of an app.", "SDK authentication", ""},
	{"sdk_authentication.keys", "Query the SDK authentication keys of an app.", "SDK authentication", ""},
	// The registry's own permissions.
	{PermAdmin, "Everything, in every workspace: workspaces, replay, all keys. Only on keys of workspace system.", GroupRegistry, ""},
	{PermKeysRead, "List and show the workspace's keys.", GroupRegistry, ""},
	{PermKeysWrite, "Create, change, rotate and revoke the workspace's keys; define workspace permissions.", GroupRegistry, ""},
	{PermIdentifiersRead, "List and show the workspace's identifiers.", GroupRegistry, ""},
	{PermIdentifiersWrite, "Register, rename and retire the workspace's identifiers.", GroupRegistry, ""},
	{PermAuditRead, "Read and export the workspace's audit log and key histories.", GroupRegistry, ""},
	{PermEventsRead, "Follow the workspace's events (Server-Sent Events).", GroupRegistry, ""},
	{PermVerify, "Verify the workspace's keys (POST /v1/verify).", GroupRegistry, ""},
	{PermWebhooksRead, "List and show the workspace's webhooks and their deliveries.", GroupRegistry, ""},
	{PermWebhooksWrite, "Register and remove the workspace's webhooks.", GroupRegistry, ""},
}

var catalogueIndex = func() map[Permission]int {
	m := make(map[Permission]int, len(catalogue))
	for i, p := range catalogue {
		m[p.Name] = i
	}
	return m
}()

// Catalogue returns a copy of the built-in permissions, platform permissions first by
// group, then the registry's.
func Catalogue() []PermissionInfo { return slices.Clone(catalogue) }

// LookupPermission returns the built-in catalogue entry of p.
func LookupPermission(p Permission) (PermissionInfo, bool) {
	i, ok := catalogueIndex[p]
	if !ok {
		return PermissionInfo{}, false
	}
	return catalogue[i], true
}

// KnownPermission reports whether p is in the built-in catalogue or among own, a
// workspace's own permissions.
func KnownPermission(p Permission, own []PermissionInfo) bool {
	if _, ok := catalogueIndex[p]; ok {
		return true
	}
	return slices.ContainsFunc(own, func(o PermissionInfo) bool { return o.Name == p })
}

// SuggestPermission returns the permission of the catalogue or of own closest to p, if
// one is close enough to be a likely typo: at most 2 edits (an insertion, deletion,
// substitution or swap of adjacent characters each), and at most a third of p's length.
// Ties go to the first in catalogue order, then own.
func SuggestPermission(p Permission, own []PermissionInfo) (Permission, bool) {
	limit := min(2, max(1, len(p)/3))
	best, bestD := Permission(""), limit+1
	try := func(c Permission) {
		if d := editDistance(string(p), string(c), bestD); d < bestD {
			best, bestD = c, d
		}
	}
	for _, c := range catalogue {
		try(c.Name)
	}
	for _, c := range own {
		try(c.Name)
	}
	return best, best != ""
}

// editDistance is the optimal string alignment distance between a and b (Levenshtein
// plus swaps of adjacent bytes), or bound when it is at least bound.
func editDistance(a, b string, bound int) int {
	if d := len(a) - len(b); d >= bound || -d >= bound {
		return bound
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			v := min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				v = min(v, prev2[j-2]+1)
			}
			cur[j] = v
			rowMin = min(rowMin, v)
		}
		if rowMin >= bound {
			return bound
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return min(prev[len(b)], bound)
}
