// api.js: the session and calls to keyreg's JSON API (/v1). The browser never keeps the
// registry key: the server holds it for the session cookie (HttpOnly). Writes carry the
// session's CSRF token, kept here in memory only.

let csrf = "";
let minSeq = "";

// seen records the stream sequence of an event the page learnt of (the live stream), so
// that the reads that follow wait until this node's views have applied it.
export function seen(seq) {
  if (seq && (!minSeq || Number(seq) > Number(minSeq))) minSeq = String(seq);
}

// Problem is an API error: an RFC 9457 problem (status, code, detail, field, value).
export class Problem extends Error {
  constructor(status, body) {
    super(body.detail || body.title || "HTTP " + status);
    this.status = status;
    this.code = body.code || "";
    this.field = body.field || "";
    this.value = body.value;
    this.errors = body.errors || [];
  }
}

async function answer(res) {
  const type = res.headers.get("Content-Type") || "";
  const body = type.includes("json") ? await res.json() : {};
  if (!res.ok) {
    const p = new Problem(res.status, body);
    if (res.status === 401) document.dispatchEvent(new CustomEvent("keyreg:signedout"));
    throw p;
  }
  seen(res.headers.get("Keyreg-Sequence")); // a write: later reads see it, on any node
  return { body, headers: res.headers };
}

// call sends a request to the API. opts: body (JSON), reason (recorded in the event),
// ifMatch (a version), query (an object of parameters; arrays repeat).
export async function call(method, path, opts = {}) {
  const headers = { Accept: "application/json" };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-Keyreg-Csrf"] = csrf;
  else if (minSeq) headers["Keyreg-Min-Sequence"] = minSeq;
  if (opts.reason) headers["X-Keyreg-Reason-Encoded"] = encodeURIComponent(opts.reason);
  if (opts.ifMatch) headers["If-Match"] = '"' + opts.ifMatch + '"';
  const res = await fetch(withQuery(path, opts.query), {
    method, headers, credentials: "same-origin",
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  return (await answer(res)).body;
}

// withQuery appends the set parameters of query to path.
export function withQuery(path, query) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) {
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? path + "?" + s : path;
}

// session returns the current session (its CSRF token), or null when signed out.
export async function session() {
  const res = await fetch("/console/session", { credentials: "same-origin" });
  if (!res.ok) return null;
  const s = await res.json();
  csrf = s.csrf;
  return s;
}

export async function signIn(secret) {
  const res = await fetch("/console/session", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify({ secret }),
  });
  const { body } = await answer(res);
  csrf = body.csrf;
}

export async function signOut() {
  await fetch("/console/session", { method: "DELETE", credentials: "same-origin", headers: { "X-Keyreg-Csrf": csrf } });
  csrf = "";
}

// ws returns the path of workspace w's resource rest.
export const ws = (w, rest = "") => "/v1/workspaces/" + encodeURIComponent(w) + rest;

// listAll follows a list's pages (next as after=) and returns every item of field.
export async function listAll(path, field, query = {}) {
  const out = [];
  let after = "";
  for (let i = 0; i < 50; i++) {
    const page = await call("GET", path, { query: { ...query, after, limit: 1000 } });
    out.push(...(page[field] || []));
    if (!page.next) break;
    after = page.next;
  }
  return out;
}
