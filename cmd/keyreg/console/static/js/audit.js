// audit.js: the Audit view (the workspace's audit log with filters, exports, checkpoint
// status) and the rendering of one event as reviewers read it, shared with a key's
// timeline.
import { call, ws, withQuery } from "./api.js";
import { $, el, chips, fmtTime, showProblem, clearErrors, datetimeToRFC3339, render } from "./ui.js";
import { state, EVENT_TYPES, who } from "./app.js";

const LABELS = {
  created: "Created", renamed: "Renamed", permissions_updated: "Permissions changed",
  allowlist_updated: "Allowlist changed", secret_rotated: "Secret rotated", expiry_changed: "Expiry changed",
  revoked: "Revoked", registered: "Registered", retired: "Retired", permission_defined: "Permission defined",
  expiring: "Expiring soon", expired: "Expired", leaked: "Reported leaked", leak_response_set: "Leak response set",
};

// label names an event type for people: keyreg.key.revoked.v1 -> "Key revoked".
export function label(type) {
  const [, agg, name] = type.split(".");
  const what = LABELS[name] || name;
  return agg.charAt(0).toUpperCase() + agg.slice(1) + ": " + what.charAt(0).toLowerCase() + what.slice(1);
}

// change renders what an event changed: added and removed entries as chips.
export function change(ev) {
  const d = ev.data || {};
  const name = ev.type.split(".")[2];
  const part = (title, list, cls) => list && list.length ? el("div", { class: "change" }, el("span", { class: "help" }, title + " "), chips(list, cls)) : null;
  switch (name) {
    case "created":
      return [part("permissions", d.permissions, "added"), part("allowlist", d.allowlist, "added"), d.name && !d.permissions ? el("div", {}, d.name) : null];
    case "permissions_updated":
      return [part("permissions", d.added, "added"), part("permissions", d.removed, "removed")];
    case "allowlist_updated":
      return [part("allowlist", d.added, "added"), part("allowlist", d.removed, "removed"),
        d.allowlist && d.allowlist.length === 0 ? el("div", { class: "help" }, "now any address") : null];
    case "renamed":
      return el("div", {}, el("span", { class: "chip removed" }, d.previous || ""), " ", el("span", { class: "chip added" }, d.name || ""));
    case "secret_rotated":
      return el("div", {}, "old secret valid until " + fmtTime(d.previous_valid_until));
    case "expiry_changed":
      return el("div", {}, "expires " + (d.expires_at ? fmtTime(d.expires_at) : "never") + " (was " + (d.previous ? fmtTime(d.previous) : "never") + ")");
    case "revoked":
      return el("div", {}, "was " + (d.previous_status || "active"));
    case "registered": case "retired":
      return el("div", {}, d.kind + " " + JSON.stringify(d.name) + (d.platform ? " (" + d.platform + ")" : ""));
    default:
      return null;
  }
}

// timelineEntry renders one history entry {sequence, event}: what, when, who, from where,
// why, and the change. opts.asOf(seq), if given, adds a button to see the state after it.
export function timelineEntry(h, opts = {}) {
  const ev = h.event;
  return el("li", { "data-key": String(h.sequence), "data-type": ev.type },
    el("div", { class: "what" }, label(ev.type)),
    el("div", { class: "meta" }, fmtTime(ev.time), " · by ", who(ev.actor),
      " · from ", el("code", { class: "actorip" }, ev.actorip || "?"), " · seq " + h.sequence),
    el("div", { class: "why" }, ev.reason ? "Reason: " + ev.reason : el("span", { class: "help" }, "no reason given")),
    change(ev),
    opts.asOf ? el("button", { type: "button", class: "small secondary", "data-action": "asof", onclick: () => opts.asOf(String(h.sequence)) }, "Key as of this change") : null);
}

let next = 0;

function filters() {
  return {
    key: $("#audit-key").value, actor: $("#audit-actor").value.trim(), type: $("#audit-type").value,
    since: datetimeToRFC3339($("#audit-since").value), until: datetimeToRFC3339($("#audit-until").value),
  };
}

function row(h) {
  const ev = h.event;
  const [agg, id] = (ev.subject || "").split("/");
  const subject = agg === "key" ? el("a", { href: "#key/" + id }, ev.subject) : el("code", {}, ev.subject || "");
  const td = (l, ...c) => el("td", { "data-label": l }, ...c);
  return el("tr", { "data-key": String(h.sequence) },
    td("Seq", String(h.sequence)), td("When", fmtTime(ev.time)), td("What", label(ev.type)), td("Subject", subject),
    td("Who", who(ev.actor)), td("From", el("code", {}, ev.actorip || "")), td("Why", ev.reason || ""), td("Change", change(ev)));
}

async function load(more) {
  clearErrors($("#audit-form"));
  const f = filters();
  for (const fmt of ["jsonl", "csv"]) $("#export-" + fmt).href = withQuery(ws(state.ws, "/audit/export"), { ...f, format: fmt });
  try {
    const page = await call("GET", ws(state.ws, "/audit"), { query: { ...f, after: more ? next : "", limit: 200 } });
    const body = $("#audit-table tbody");
    if (more) body.append(...page.events.map(row));
    else render(body, page.events, () => page.events.map(row));
    next = page.next || 0;
    $("#audit-more").hidden = !page.next;
  } catch (err) {
    showProblem("audit", err);
  }
}

// checkpoint shows the last signed checkpoint of the audit tree (GET /v1/audit/checkpoint,
// readable with any valid key).
async function checkpoint() {
  const box = $("#checkpoint");
  let cp;
  try {
    cp = await call("GET", "/v1/audit/checkpoint");
  } catch (err) {
    const text = err.status === 404 ? "No checkpoint sealed yet." : "Checkpoint status unavailable: " + err.message;
    box.replaceChildren(el("h3", {}, "Checkpoint"), el("p", { id: "checkpoint-status" }, text));
    return;
  }
  box.replaceChildren(el("h3", {}, "Checkpoint"), el("p", { id: "checkpoint-status" },
    "Last sealed " + fmtTime(cp.sealed_at) + " · tree size " + cp.tree_size + " · root ", el("code", {}, cp.root_hash)));
}

export async function show() {
  const keySel = $("#audit-key");
  const chosen = keySel.value;
  const keys = await call("GET", ws(state.ws, "/keys"), { query: { limit: 1000 } });
  keys.keys.forEach((k) => state.keyNames.set(k.id, k.name));
  keySel.replaceChildren(new Option("any key", ""), ...keys.keys.map((k) => new Option(k.name + " (" + k.id + ")", k.id)));
  keySel.value = chosen;
  await Promise.all([load(false), checkpoint()]);
}

export function wire() {
  $("#audit-type").append(...EVENT_TYPES.map((t) => new Option(label(t) + " (" + t + ")", t)));
  $("#audit-form").addEventListener("submit", (e) => {
    e.preventDefault();
    load(false);
  });
  $("#audit-more").addEventListener("click", () => load(true));
}
