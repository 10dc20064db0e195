// ui.js: small DOM helpers. Text always goes in as text (never as HTML).

// el builds an element: attrs are attributes (on* are listeners, class is className),
// children are nodes or strings.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}

export const $ = (sel) => document.querySelector(sel);

export function chips(list, cls = "") {
  if (!list || list.length === 0) return el("span", { class: "help" }, "none");
  return list.map((x) => el("span", { class: ("chip " + cls).trim() }, String(x)));
}

export function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

// splitList splits addresses typed one per line or separated by commas or spaces.
export function splitList(text) {
  return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
}

let toastTimer;
export function toast(msg) {
  const t = $("#toast");
  t.textContent = msg;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.textContent = ""), 4000);
}

export async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast("Copied");
  } catch {
    toast("Copy failed: select the text and copy it");
  }
}

// clearErrors empties the field errors of a form (ids prefix-*-error) and their marks.
export function clearErrors(root) {
  root.querySelectorAll(".field-error").forEach((e) => (e.textContent = ""));
  root.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
}

// showProblem shows an API problem at the field it names (prefix-<field>-error, and
// marks prefix-<field>), else in prefix-error.
export function showProblem(prefix, p) {
  const field = (p.field || "").replace(/\[.*$/, "").replace(/^body\./, "").split(".")[0];
  let msg = p.message || String(p);
  if (p.value !== undefined && p.value !== "" && !msg.includes(String(p.value))) msg += " (" + p.value + ")";
  const target = field && document.getElementById(prefix + "-" + field + "-error");
  (target || document.getElementById(prefix + "-error")).textContent = msg;
  const input = field && document.getElementById(prefix + "-" + field);
  if (target && input) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}

// Dialogs close on their [data-close] buttons.
export function wireDialogs() {
  document.querySelectorAll("dialog [data-close]").forEach((b) =>
    b.addEventListener("click", () => b.closest("dialog").close()));
}

export function datetimeToRFC3339(v) {
  return v ? new Date(v + (v.length === 16 ? ":00" : "") + "Z").toISOString() : "";
}

// confirmAction asks a yes/no question in a dialog and resolves true on yes.
export function confirmAction(title, text, yes) {
  const d = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-yes").textContent = yes;
  d.returnValue = "";
  d.showModal();
  return new Promise((resolve) => d.addEventListener("close", () => resolve(d.returnValue === "yes"), { once: true }));
}

const rendered = new WeakMap();

// render fills container with make() unless it already shows data (a live update that
// changed nothing leaves the page alone). When it redraws, the keyboard focus stays on the
// same control: the one with the same data-action in the element with the same data-key.
export function render(container, data, make) {
  const sig = JSON.stringify(data);
  if (rendered.get(container) === sig) return;
  rendered.set(container, sig);
  const a = document.activeElement;
  const row = a && container.contains(a) ? a.closest("[data-key]") : null;
  const action = a?.dataset?.action;
  container.replaceChildren(...make());
  if (row) {
    const again = container.querySelector('[data-key="' + CSS.escape(row.dataset.key) + '"]');
    (action ? again?.querySelector('[data-action="' + CSS.escape(action) + '"]') : again?.querySelector("a, button"))?.focus();
  }
}
