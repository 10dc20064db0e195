// identifiers.js: the Identification view (app identifiers per platform: register,
// rename, retire) and the Additional API Identifiers view (pick a kind, search by name as
// you type, the chosen identifier shown under the dropdown).
import { call, ws, listAll } from "./api.js";
import { $, el, fmtTime, copy, toast, clearErrors, showProblem, confirmAction, render } from "./ui.js";
import { state, refresh } from "./app.js";

let renaming = null;

export async function show(view) {
  if (view === "apps") return showApps();
  return search();
}

async function showApps() {
  const apps = await listAll(ws(state.ws, "/identifiers"), "identifiers", { kind: "app" });
  const byPlatform = new Map();
  for (const a of apps) {
    const p = a.platform || "other";
    if (!byPlatform.has(p)) byPlatform.set(p, []);
    byPlatform.get(p).push(a);
  }
  const sections = [...byPlatform.keys()].sort().map((p) => el("div", { class: "card platform" },
    el("h3", {}, p),
    el("ul", {}, ...byPlatform.get(p).map((a) => el("li", { "data-key": a.id, "data-name": a.name },
      el("strong", {}, a.name), " ", el("code", {}, a.id), " ",
      el("button", { type: "button", class: "small secondary", onclick: () => copy(a.id), "aria-label": "Copy the identifier of " + a.name }, "Copy"),
      el("button", { type: "button", class: "small secondary", "data-action": "rename", onclick: () => openRename(a) }, "Rename"),
      el("button", { type: "button", class: "small danger", "data-action": "retire", onclick: () => retire(a) }, "Retire"),
      el("span", { class: "help" }, " registered " + fmtTime(a.created_at)))))));
  render($("#apps-list"), apps, () => (sections.length ? sections : [el("p", { class: "help" }, "No app identifiers yet.")]));
}

async function registerApp(e) {
  e.preventDefault();
  clearErrors($("#app-form"));
  try {
    await call("POST", ws(state.ws, "/identifiers"), { body: { kind: "app", name: $("#app-name").value.trim(), platform: $("#app-platform").value } });
    $("#app-name").value = "";
    refresh();
  } catch (err) {
    showProblem("app", err);
  }
}

function openRename(a) {
  renaming = a;
  clearErrors($("#rename-form"));
  $("#rename-name").value = a.name;
  $("#rename-dialog").showModal();
}

async function rename(e) {
  e.preventDefault();
  clearErrors($("#rename-form"));
  try {
    await call("PATCH", ws(state.ws, "/identifiers/" + renaming.id), { body: { name: $("#rename-name").value.trim() }, ifMatch: renaming.version });
    $("#rename-dialog").close();
    refresh();
  } catch (err) {
    showProblem("rename", err);
  }
}

async function retire(a) {
  if (!(await confirmAction("Retire " + a.name + "?", "Its name becomes free again; its history is kept.", "Retire"))) return;
  try {
    await call("DELETE", ws(state.ws, "/identifiers/" + a.id), { ifMatch: a.version });
    toast("Retired " + a.name);
    refresh();
  } catch (err) {
    toast(err.message);
  }
}

let searchSeq = 0;

// search lists the identifiers of the chosen kind whose name starts with what is typed.
async function search() {
  const seq = ++searchSeq;
  const q = $("#id-search").value;
  const page = await call("GET", ws(state.ws, "/identifiers"), { query: { kind: $("#id-kind").value, q, limit: 50 } });
  if (seq !== searchSeq) return; // a later keystroke's answer wins
  const list = page.identifiers;
  $("#id-search-status").textContent = list.length ? list.length + (page.next ? "+" : "") + " found" : "Nothing found";
  render($("#id-results"), list, () => list.map((i) => el("li", { "data-key": i.id },
    el("button", { type: "button", onclick: () => choose(i) }, i.name))));
}

function choose(i) {
  $("#id-chosen-name").textContent = i.name;
  $("#id-chosen-value").textContent = i.id;
  $("#id-chosen").hidden = false;
  $("#id-chosen-copy").focus();
}

async function registerIdentifier(e) {
  e.preventDefault();
  clearErrors($("#id-form"));
  try {
    const i = await call("POST", ws(state.ws, "/identifiers"), { body: { kind: $("#id-kind").value, name: $("#id-name").value.trim() } });
    $("#id-name").value = "";
    toast("Registered " + i.name);
    choose(i);
    search();
  } catch (err) {
    showProblem("id", err);
  }
}

export function wire() {
  $("#app-form").addEventListener("submit", registerApp);
  $("#rename-form").addEventListener("submit", rename);
  $("#id-form").addEventListener("submit", registerIdentifier);
  $("#id-search").addEventListener("input", () => search().catch((err) => toast(err.message)));
  $("#id-kind").addEventListener("change", () => {
    $("#id-chosen").hidden = true;
    search().catch((err) => toast(err.message));
  });
  $("#id-chosen-copy").addEventListener("click", () => copy($("#id-chosen-value").textContent));
}
