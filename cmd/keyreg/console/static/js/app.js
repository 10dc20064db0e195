// app.js: the console's entry point: sign-in, the workspace switcher, routing between
// the views (the URL's #fragment) and the live event stream of the workspace.
import { call, session, signIn, signOut, ws, listAll, seen, Problem } from "./api.js";
import { $, el, toast, wireDialogs, showProblem, clearErrors } from "./ui.js";
import * as keys from "./keys.js";
import * as idents from "./identifiers.js";
import * as audit from "./audit.js";

// EVENT_TYPES are the event types the live stream names (SSE "event:" field).
export const EVENT_TYPES = [
  "keyreg.workspace.created.v1", "keyreg.workspace.permission_defined.v1", "keyreg.workspace.leak_response_set.v1",
  "keyreg.key.created.v1", "keyreg.key.renamed.v1", "keyreg.key.permissions_updated.v1",
  "keyreg.key.allowlist_updated.v1", "keyreg.key.secret_rotated.v1", "keyreg.key.expiry_changed.v1",
  "keyreg.key.revoked.v1", "keyreg.key.expiring.v1", "keyreg.key.expired.v1", "keyreg.key.leaked.v1",
  "keyreg.identifier.registered.v1", "keyreg.identifier.renamed.v1", "keyreg.identifier.retired.v1",
];

// state is what every view shares.
export const state = { ws: "", workspaces: [], permissions: [], keyNames: new Map() };

// who shows a key id (an actor, a creator) with its name when it is a key of this workspace.
export function who(id, cls = "actor") {
  const name = state.keyNames.get(id);
  return [el("code", { class: cls }, id || "?"), name ? el("span", { class: "help" }, " (" + name + ")") : null];
}

const views = { keys, key: keys, apps: idents, identifiers: idents, audit };

// route shows the view the URL names; a move to another view (not a live redraw) puts
// the keyboard focus on its heading.
function route(e) {
  const [name, arg] = location.hash.replace(/^#/, "").split("/");
  const view = views[name] ? name : "keys";
  document.querySelectorAll(".view").forEach((v) => (v.hidden = v.id !== view + "-view"));
  document.querySelectorAll("#nav a").forEach((a) => {
    if (a.dataset.view === view || (view === "key" && a.dataset.view === "keys")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  if (e && e.type === "hashchange") document.querySelector("#" + view + "-view h2")?.focus({ preventScroll: true });
  state.view = view;
  state.arg = arg ? decodeURIComponent(arg) : "";
  return refresh();
}

// refresh redraws the current view from the API.
export async function refresh() {
  if (!state.ws) return;
  try {
    await views[state.view].show(state.view, state.arg);
  } catch (e) {
    if (!(e instanceof Problem && e.status === 401)) toast(e.message);
  }
}

let source;
let pending;

// follow opens the workspace's event stream; each event redraws the current view.
function follow() {
  if (source) source.close();
  const live = $("#live");
  live.textContent = "connecting…";
  live.classList.remove("on");
  source = new EventSource(ws(state.ws, "/events"));
  source.addEventListener("open", () => {
    live.textContent = "live";
    live.classList.add("on");
  });
  source.addEventListener("error", () => {
    live.classList.remove("on");
    live.textContent = source.readyState === EventSource.CLOSED ? "not live" : "reconnecting…";
  });
  const onEvent = (e) => {
    seen(e.lastEventId);
    document.body.dataset.lastEvent = e.lastEventId;
    clearTimeout(pending);
    pending = setTimeout(refresh, 100); // a burst of events redraws once
  };
  EVENT_TYPES.forEach((t) => source.addEventListener(t, onEvent));
  source.addEventListener("message", onEvent);
}

async function loadWorkspace(id) {
  state.ws = id;
  state.keyNames = new Map();
  localStorage.setItem("keyreg.console.workspace", id); // only the workspace id, never a key
  const cat = await call("GET", "/v1/permissions", { query: { workspace: id } });
  state.permissions = cat.permissions;
  follow();
  await route();
}

async function start() {
  $("#signin-view").hidden = true;
  $("#session-bar").hidden = false;
  $("#nav").hidden = false;
  state.workspaces = await listAll("/v1/workspaces", "workspaces");
  const sel = $("#workspace");
  sel.replaceChildren(...state.workspaces.map((w) => new Option(w.name ? w.name + " (" + w.id + ")" : w.id, w.id)));
  const saved = localStorage.getItem("keyreg.console.workspace");
  const first = state.workspaces.find((w) => w.id === saved) || state.workspaces.find((w) => w.id !== "system") || state.workspaces[0];
  if (!first) return toast("This key sees no workspace");
  sel.value = first.id;
  await loadWorkspace(first.id);
}

function showSignIn() {
  if (source) source.close();
  state.ws = "";
  document.querySelectorAll(".view").forEach((v) => (v.hidden = true));
  $("#session-bar").hidden = true;
  $("#nav").hidden = true;
  $("#signin-view").hidden = false;
  $("#signin-secret").focus();
}

document.addEventListener("keyreg:signedout", showSignIn);

document.addEventListener("DOMContentLoaded", async () => {
  wireDialogs();
  keys.wire();
  idents.wire();
  audit.wire();
  $("#signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors($("#signin-form"));
    const input = $("#signin-secret");
    try {
      await signIn(input.value.trim());
      input.value = ""; // the page keeps no copy of the key
      await start();
    } catch (err) {
      showProblem("signin", err);
      input.setAttribute("aria-invalid", "true");
    }
  });
  $("#signout").addEventListener("click", async () => {
    await signOut();
    showSignIn();
  });
  $("#workspace").addEventListener("change", (e) => loadWorkspace(e.target.value));
  window.addEventListener("hashchange", route);
  if (await session()) await start();
  else showSignIn();
});
