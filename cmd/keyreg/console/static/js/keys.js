// keys.js: the REST API Keys view (list, create, edit, rotate, revoke) and one key's
// page (details, "as of" a moment, timeline).
import { call, ws, listAll } from "./api.js";
import { $, el, chips, fmtTime, splitList, copy, toast, clearErrors, showProblem, datetimeToRFC3339, render } from "./ui.js";
import { state, refresh, who } from "./app.js";
import { timelineEntry } from "./audit.js";

let current = []; // the keys shown
let editing = null; // the key a dialog acts on

export async function show(view, arg) {
  if (view === "key") return showKey(arg);
  current = await listAll(ws(state.ws, "/keys"), "keys", { status: $("#keys-status").value });
  current.forEach((k) => state.keyNames.set(k.id, k.name));
  render($("#keys-table tbody"), current, () => current.map(keyRow));
}

function cell(label, ...content) {
  return el("td", { "data-label": label }, ...content);
}

const lastUsed = (k) => k.last_used_at ? fmtTime(k.last_used_at) + (k.last_used_ip ? " from " + k.last_used_ip : "") : "never";

function keyRow(k) {
  const active = k.status === "active";
  return el("tr", { "data-key": k.id, "data-name": k.name },
    cell("Name", el("a", { href: "#key/" + k.id }, k.name)),
    cell("Identifier", el("code", {}, k.id)),
    cell("Created by", who(k.created_by, "creator")),
    cell("Created", fmtTime(k.created_at)),
    cell("Last change", fmtTime(k.updated_at)),
    cell("Last used", lastUsed(k)),
    cell("Status", el("span", { class: "status " + k.status }, k.status)),
    cell("Permissions", chips(k.permissions)),
    cell("Allowlist", k.allowlist.length ? chips(k.allowlist) : el("span", { class: "help" }, "any address")),
    cell("Actions",
      el("a", { class: "button small", href: "#key/" + k.id }, "Timeline"),
      active && el("button", { type: "button", class: "small secondary", "data-action": "edit", onclick: () => openEdit(k) }, "Edit"),
      active && el("button", { type: "button", class: "small secondary", "data-action": "rotate", onclick: () => openRotate(k) }, "Rotate"),
      active && el("button", { type: "button", class: "small danger", "data-action": "revoke", onclick: () => openRevoke(k) }, "Revoke")));
}

// permissionBoxes fills a fieldset with the catalogue as checkboxes grouped by area.
function permissionBoxes(fieldset, prefix, checked = []) {
  const groups = new Map();
  for (const p of state.permissions) {
    if (!groups.has(p.group)) groups.set(p.group, []);
    groups.get(p.group).push(p);
  }
  const legend = fieldset.querySelector("legend");
  fieldset.replaceChildren(legend);
  for (const [group, list] of groups) {
    fieldset.append(el("div", { class: "group" }, group));
    for (const p of list) {
      const id = prefix + "-perm-" + p.name.replace(/[^a-z0-9]/gi, "-");
      fieldset.append(el("label", { for: id },
        el("input", { type: "checkbox", id, value: p.name, checked: checked.includes(p.name) }),
        el("span", {}, p.name), el("span", { class: "help" }, p.description)));
    }
  }
}

const checkedPermissions = (fieldset) =>
  [...fieldset.querySelectorAll("input:checked")].map((i) => i.value);

function showSecret(name, secret) {
  $("#secret-key-name").textContent = name;
  $("#secret-value").value = secret;
  $("#secret-dialog").showModal();
  $("#secret-value").select();
}

function openCreate() {
  const f = $("#create-form");
  f.reset();
  clearErrors(f);
  permissionBoxes($("#create-permissions"), "create");
  $("#create-dialog").showModal();
  $("#create-name").focus();
}

async function create(e) {
  e.preventDefault();
  const f = $("#create-form");
  clearErrors(f);
  const body = {
    name: $("#create-name").value.trim(),
    permissions: checkedPermissions($("#create-permissions")),
    allowlist: splitList($("#create-allowlist").value),
  };
  const exp = datetimeToRFC3339($("#create-expires").value);
  if (exp) body.expires_at = exp;
  try {
    const res = await call("POST", ws(state.ws, "/keys"), { body });
    $("#create-dialog").close();
    showSecret(res.key.name, res.secret);
    refresh();
  } catch (err) {
    showProblem("create", err);
  }
}

function openEdit(k) {
  editing = k;
  const f = $("#edit-form");
  f.reset();
  clearErrors(f);
  $("#edit-title").textContent = "Edit " + k.name;
  permissionBoxes($("#edit-permissions"), "edit", k.permissions);
  $("#edit-allowlist").value = k.allowlist.join("\n");
  $("#edit-dialog").showModal();
}

const sameSet = (a, b) => a.length === b.length && a.every((x) => b.includes(x));

async function saveEdit(e) {
  e.preventDefault();
  clearErrors($("#edit-form"));
  const k = editing;
  const reason = $("#edit-reason").value.trim();
  if (!reason) return showProblem("edit", { field: "reason", message: "say why the key changes: the reason is kept in its history" });
  const permissions = checkedPermissions($("#edit-permissions"));
  const allowlist = splitList($("#edit-allowlist").value);
  try {
    let version = k.version;
    if (!sameSet(permissions, k.permissions)) {
      version = (await call("PATCH", ws(state.ws, "/keys/" + k.id), { body: { permissions }, reason, ifMatch: version })).version;
    }
    if (!sameSet(allowlist, k.allowlist)) {
      await call("PUT", ws(state.ws, "/keys/" + k.id + "/allowlist"), { body: { allowlist }, reason, ifMatch: version });
    }
    $("#edit-dialog").close();
    toast("Saved " + k.name);
    refresh();
  } catch (err) {
    showProblem("edit", err);
  }
}

function openRotate(k) {
  editing = k;
  clearErrors($("#rotate-form"));
  $("#rotate-title").textContent = "Rotate the secret of " + k.name;
  $("#rotate-dialog").showModal();
}

async function rotate(e) {
  e.preventDefault();
  clearErrors($("#rotate-form"));
  const k = editing;
  try {
    const res = await call("POST", ws(state.ws, "/keys/" + k.id + "/rotate"), {
      body: { grace_seconds: Number($("#rotate-grace").value || 0) }, reason: $("#rotate-reason").value.trim(), ifMatch: k.version,
    });
    $("#rotate-dialog").close();
    showSecret(k.name, res.secret);
    refresh();
  } catch (err) {
    showProblem("rotate", { ...err, field: err.field === "grace_seconds" ? "grace" : err.field, message: err.message });
  }
}

function openRevoke(k) {
  editing = k;
  const f = $("#revoke-form");
  f.reset();
  clearErrors(f);
  $("#revoke-name").textContent = k.name;
  $("#revoke-dialog").showModal();
}

async function revoke(e) {
  e.preventDefault();
  clearErrors($("#revoke-form"));
  const k = editing;
  const reason = $("#revoke-reason").value.trim();
  if (!reason || !$("#revoke-confirm").checked) {
    return showProblem("revoke", { message: "give a reason and tick the confirmation" });
  }
  try {
    await call("DELETE", ws(state.ws, "/keys/" + k.id), { reason, ifMatch: k.version });
    $("#revoke-dialog").close();
    toast("Revoked " + k.name);
    refresh();
  } catch (err) {
    showProblem("revoke", err);
  }
}

// showKey shows one key: its details, its state as of a moment, and its timeline.
let shownKey = "";

async function showKey(id) {
  if (shownKey !== id) {
    shownKey = id;
    $("#asof-result").hidden = true;
    $("#asof-input").value = "";
  }
  const k = await call("GET", ws(state.ws, "/keys/" + id));
  $("#key-title").textContent = k.name;
  const row = (t, ...d) => [el("dt", {}, t), el("dd", {}, ...d)];
  render($("#key-details"), k, () => [
    ...row("Identifier", el("code", {}, k.id)), ...row("Status", el("span", { class: "status " + k.status, id: "key-status" }, k.status)),
    ...row("Created", fmtTime(k.created_at), " by ", el("code", {}, k.created_by || "")), ...row("Last change", fmtTime(k.updated_at)), ...row("Last used", lastUsed(k)),
    ...row("Permissions", chips(k.permissions)), ...row("Allowlist", k.allowlist.length ? chips(k.allowlist) : "any address"),
    ...(k.expires_at ? row("Expires", fmtTime(k.expires_at)) : []),
    ...(k.previous_secret_valid_until ? row("Old secret valid until", fmtTime(k.previous_secret_valid_until)) : [])]);
  const history = (await listAll(ws(state.ws, "/keys/" + id + "/history"), "events")).reverse();
  render($("#timeline"), history, () => history.map((h) => timelineEntry(h, { asOf: (seq) => showAsOf(id, seq) })));
}

// showAsOf shows the key as it was at a moment (an RFC 3339 time or a stream sequence).
async function showAsOf(id, at) {
  const out = $("#asof-result");
  $("#asof-input").value = at;
  clearErrors($("#asof-form"));
  try {
    const k = await call("GET", ws(state.ws, "/keys/" + id), { query: { as_of: at } });
    out.replaceChildren(el("h3", {}, "As of " + at),
      el("dl", { class: "details" },
        el("dt", {}, "Name"), el("dd", {}, k.name),
        el("dt", {}, "Status"), el("dd", {}, el("span", { class: "status " + k.status }, k.status)),
        el("dt", {}, "Permissions"), el("dd", {}, chips(k.permissions)),
        el("dt", {}, "Allowlist"), el("dd", { id: "asof-allowlist" }, k.allowlist.length ? chips(k.allowlist) : "any address"),
        el("dt", {}, "Version"), el("dd", {}, String(k.version))));
    out.hidden = false;
  } catch (err) {
    out.hidden = true;
    showProblem("asof", { message: err.message });
  }
}

export function wire() {
  $("#key-new").addEventListener("click", openCreate);
  $("#create-form").addEventListener("submit", create);
  $("#edit-form").addEventListener("submit", saveEdit);
  $("#rotate-form").addEventListener("submit", rotate);
  $("#revoke-form").addEventListener("submit", revoke);
  $("#keys-status").addEventListener("change", refresh);
  $("#secret-copy").addEventListener("click", () => copy($("#secret-value").value));
  $("#secret-dialog").addEventListener("close", () => ($("#secret-value").value = "")); // gone once closed
  $("#asof-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const at = $("#asof-input").value.trim();
    if (at) showAsOf(state.arg, at);
  });
}
