// facewarden console: a thin page over the /v1 API. No framework, no build step, nothing fetched
// from anywhere but this server. Data is only ever inserted as text (never as HTML).
//
// This file holds what every tab shares (the API, DOM helpers, sign-in, the tabs) and the
// Collections, Enrol and Policy tabs. Each other tab is its own file (search.js, consent.js,
// audit.js, report.js, release.js), loaded after this one; it registers its loader with
// `loaders.NAME = fn` and wires its forms on DOMContentLoaded.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const store = window.sessionStorage;
let offered = new Set();
let me = {};

// ---- the API ---------------------------------------------------------------------------------
// GET requests are the console's reads to draw a page: they carry X-Facewarden-Console-Read, so
// that the audit record of a declared read (a listing, the log, the report) says "console read"
// and the Audit log tab can hide the console's own traffic. The server marks nothing else.
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${store.getItem("fw.key")}:${store.getItem("fw.secret")}` };
  if (method === "GET") headers["X-Facewarden-Console-Read"] = "1";
  const init = { method, headers };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const res = await fetch(path, init);
  let data = null;
  try { data = await res.json(); } catch (e) { data = { error: `HTTP ${res.status}`, message: res.statusText }; }
  if (!res.ok) {
    const err = new Error(`${data.error || "Error"}: ${data.message || res.statusText}`);
    err.code = data.error; err.status = res.status;
    throw err;
  }
  return data;
}
const enc = encodeURIComponent;
function query(params) {
  const q = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "" && v !== false)
    .map(([k, v]) => `${enc(k)}=${enc(v)}`).join("&");
  return q ? `?${q}` : "";
}

// ---- small DOM helpers -----------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "width") node.style.width = v;  // CSSOM, allowed by the page's CSP
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}
function flash(text, kind = "ok") { const f = $("#flash"); f.textContent = text; f.className = kind; }
function toDate(v) {
  if (v == null || v === "") return null;
  const d = typeof v === "number" ? new Date(v * 1000) : new Date(v);
  return isNaN(d) ? null : d;
}
// Times are shown in UTC, as the audit log and the report count them: "1 Dec 2026, 16:04".
const timeFormat = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", timeZone: "UTC" });
const dateFormat = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", year: "numeric", timeZone: "UTC" });
const secondsFormat = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZone: "UTC" });
const clockFormat = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit", timeZone: "UTC" });
function fmtClock(v) { const d = toDate(v); return d ? clockFormat.format(d) : ""; }
function fmtSeconds(v) { const d = toDate(v); return d ? secondsFormat.format(d) : (v == null ? "" : String(v)); }
// An operation's name with line-break opportunities between its words (SearchFaces<wbr>ByImage).
function opName(name) {
  const words = String(name || "").split(/(?=[A-Z][a-z])/);
  return words.flatMap((w, i) => (i ? [document.createElement("wbr"), w] : [w]));
}
function fmtTime(v) { const d = toDate(v); return d ? timeFormat.format(d) : (v == null ? "" : String(v)); }
function fmtDate(v) { const d = toDate(v); return d ? dateFormat.format(d) : (v == null ? "" : String(v)); }
function fmt(v) {
  if (v == null) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : Math.abs(v) < 0.01 ? v.toExponential(1) : v.toFixed(2);
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (Array.isArray(v)) return v.map(fmt).join(", ");
  if (typeof v === "object") return Object.entries(v).map(([k, x]) => `${k}: ${fmt(x)}`).join("; ");
  return String(v);
}
function busy(form, on) { $$("button", form).forEach(b => { b.disabled = on; }); }
function guard(fn) {
  return async (ev) => {
    if (ev && ev.type === "submit") ev.preventDefault();
    const form = ev && ev.target && ev.target.closest ? ev.target.closest("form") : null;
    if (form) busy(form, true);
    try { await fn(ev); } catch (e) { flash(e.message, "error"); } finally { if (form) busy(form, false); }
  };
}
// A table of counts {row: {column: n}} with totals; empty cells for zero.
function matrixTable(rowHead, matrix, attrs = {}) {
  const rows = Object.keys(matrix).sort();
  const cols = Array.from(new Set(rows.flatMap(r => Object.keys(matrix[r])))).sort();
  if (!rows.length) return el("p", { class: "muted" }, "None in this period.");
  const total = r => cols.reduce((s, c) => s + (matrix[r][c] || 0), 0);
  return el("div", { class: "scroll" }, el("table", { class: "matrix", ...attrs },
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, rowHead), cols.map(c => el("th", { scope: "col", class: "num" }, c)),
      cols.length > 1 ? el("th", { scope: "col", class: "num" }, "Total") : [])),
    el("tbody", {}, rows.map(r => el("tr", {}, el("th", { scope: "row" }, opName(r)),
      cols.map(c => el("td", { class: "num" }, matrix[r][c] ? String(matrix[r][c]) : "")),
      cols.length > 1 ? el("td", { class: "num total" }, String(total(r))) : [])))));
}
// A tab's loader failed (e.g. this key may not read it): say why in the tab itself.
function tabError(panel, e) {
  const why = e.code === "AccessDeniedException" || e.status === 403
    ? "This key may not see this. " : "";
  const p = el("p", { class: "card error tab-error", role: "alert" }, why + e.message);
  panel.prepend(p);
}

// ---- sign in ---------------------------------------------------------------------------------
async function signIn(key, secret) {
  store.setItem("fw.key", key); store.setItem("fw.secret", secret);
  try { me = await api("GET", "/v1/whoami"); }
  catch (e) { store.removeItem("fw.key"); store.removeItem("fw.secret"); throw e; }
  const ops = await api("GET", "/v1/operations");
  offered = new Set(ops.Operations);
  const p = me.Principal || {};
  $("#who").textContent = `${me.AccessKeyId}` + (p.Organization ? ` — ${p.Organization} (${p.Sector}), purpose ${p.Purpose}` : "");
  $("#signin-view").hidden = true; $("#app-view").hidden = false; $("#signout").hidden = false;
  $$("#tabs [role=tab]").forEach(b => { b.hidden = b.dataset.needs ? !offered.has(b.dataset.needs) : false; });
  $("#consent-fields").hidden = !offered.has("GrantConsent");
  $$("#consent-fields input").forEach(i => { i.disabled = !offered.has("GrantConsent"); });
  await showTab("collections");
}
function signOut() { store.clear(); location.reload(); }

// ---- tabs (WAI-ARIA tabs: arrow keys, Home and End move between them) -------------------------
const loaders = {
  collections: loadCollections, enrol: loadCollectionChoices, policy: loadPolicy,
};
async function showTab(name, focus = false) {
  $$("#tabs [role=tab]").forEach(b => {
    const on = b.dataset.tab === name;
    b.classList.toggle("active", on); b.setAttribute("aria-selected", on ? "true" : "false");
    b.tabIndex = on ? 0 : -1;
    if (on && focus) b.focus();
  });
  $$(".tab").forEach(t => { t.hidden = t.id !== `tab-${name}`; });
  const panel = $(`#tab-${name}`);
  $$(".tab-error", panel).forEach(n => n.remove());
  flash("");
  try { if (loaders[name]) await loaders[name](); } catch (e) { tabError(panel, e); flash(e.message, "error"); }
}
function tabKeys(ev) {
  const tabs = $$("#tabs [role=tab]").filter(b => !b.hidden);
  const i = tabs.indexOf(document.activeElement);
  if (i < 0) return;
  const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[ev.key];
  if (next === undefined) return;
  ev.preventDefault();
  showTab(tabs[(next + tabs.length) % tabs.length].dataset.tab, true);
}

async function collectionIds() {
  const ids = []; let token;
  do {
    const page = await api("GET", "/v1/collections" + query({ NextToken: token }));
    ids.push(...(page.CollectionIds || [])); token = page.NextToken;
  } while (token);
  return ids;
}

// ---- collections -----------------------------------------------------------------------------
async function loadCollections() {
  const body = $("#collections tbody"); body.replaceChildren();
  for (const id of await collectionIds()) {
    let d = null, why = "";
    try { d = await api("GET", `/v1/collections/${enc(id)}`); } catch (e) { why = e.message; }
    const household = d && d.ConsentMode === "household";
    const kind = !d ? "" : household
      ? el("span", { class: "badge household", title: "A personal photo library: no per-face consent; only its owner's photo-organisation keys may use it" }, "Household")
      : el("span", { class: "badge" }, "Consent per face");
    body.append(el("tr", { "data-collection": id, class: household ? "household" : null },
      el("th", { scope: "row" }, id), el("td", {}, kind),
      d ? [el("td", { class: "num" }, fmt(d.FaceCount)), el("td", {}, d.FaceModelVersion || ""),
        el("td", {}, d.RetentionDays != null ? `${d.RetentionDays} days` : ""), el("td", { class: "nowrap" }, fmtDate(d.CreationTimestamp))]
        : el("td", { colspan: "4", class: "error" }, why),
      el("td", {}, el("button", { class: "small danger", "aria-label": `Delete collection ${id}`, onclick: guard(async () => {
        if (!confirm(`Delete collection ${id} and all its faces?`)) return;
        await api("DELETE", `/v1/collections/${enc(id)}`); flash(`Deleted ${id}.`); await loadCollections();
      }) }, "Delete"))));
  }
  if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No collections yet.")));
}
async function loadCollectionChoices() {
  const ids = await collectionIds();
  for (const sel of $$(".collection-select")) {
    const cur = sel.value;
    const extra = sel.dataset.any ? [el("option", { value: "" }, sel.dataset.any)] : [];
    sel.replaceChildren(...extra, ...ids.map(id => el("option", { value: id }, id)));
    if (ids.includes(cur)) sel.value = cur;
  }
}

async function createCollection(ev) {
  const f = ev.target;
  const req = { CollectionId: f.CollectionId.value.trim() };
  if (f.Household.checked) req.ConsentMode = "household";
  if (f.RetentionDays.value) req.RetentionDays = Number(f.RetentionDays.value);
  await api("POST", "/v1/collections", req);
  flash(`Created collection ${req.CollectionId}.`); f.reset(); await loadCollections();
}

// ---- enrolment -------------------------------------------------------------------------------
async function enrol(ev) {
  const f = ev.target, out = $("#enrol-result"); out.replaceChildren();
  const collection = f.CollectionId.value, subject = f.ExternalImageId.value.trim();
  if (offered.has("GrantConsent")) {
    const consent = { Subject: subject, CollectionId: collection, Evidence: f.Evidence.value.trim() };
    if (f.ExpiresAt.value) consent.ExpiresAt = f.ExpiresAt.value;
    const c = await api("POST", "/v1/admin/consents", consent);
    out.append(el("p", { class: "ok" }, `Consent recorded: ${c.Consent.ConsentId}.`));
  }
  const form = new FormData();
  form.append("Image", f.Image.files[0]); form.append("ExternalImageId", subject); form.append("MaxFaces", "1");
  const r = await api("POST", `/v1/collections/${enc(collection)}/faces`, form);
  const recs = r.FaceRecords || [];
  out.append(el("p", { class: recs.length ? "ok" : "error" },
    recs.length ? `Enrolled ${subject}: face ${recs[0].Face.FaceId} (confidence ${fmt(recs[0].Face.Confidence)}).`
                : `No face was enrolled${(r.UnindexedFaces || []).length ? ": " + r.UnindexedFaces.map(u => (u.Reasons || []).join(", ")).join("; ") : "."}`));
  flash(recs.length ? `Enrolled ${subject} in ${collection}.` : "Nothing enrolled.", recs.length ? "ok" : "error");
}

// ---- policy ----------------------------------------------------------------------------------
// A rule built into the code, in words: "moratorium (in force, indefinite): compare, ... denied to ...".
function builtInRule(r) {
  return `${r.Id} (in force, indefinite): ${r.Operations.join(", ")} denied to ` +
    `${(r.Sectors || []).join(", ") || "every sector"}${r.Purposes ? " with purposes " + r.Purposes.join(", ") : ""}` +
    `${r.Exemptions.length ? "; exempt: " + r.Exemptions.map((e) => e.Name).join(", ") : ""}`;
}

function builtInLines(b) {
  // The safeguards built into the code: in force whatever the policy file says.
  if (!b) return "";
  const h = b.Household || {};
  return ["# Built into facewarden, in force whatever the file says (a file may only tighten them):",
    ...(b.Rules || []).map((r) => `#   ${builtInRule(r)}`),
    `#   quotas: ${(b.Quotas || []).map((q) => `${q.Id} ${q.PerKeyPerDay}/key/day`).join(", ")}; ` +
    `max_expected_false_matches <= ${b.MaxExpectedFalseMatchesCeiling}` +
    Object.entries(b.PurposeMaxExpectedFalseMatchesCeilings || {}).map(([k, v]) => `, ${k} <= ${v}`).join(""),
    `#   household collections: sector ${h.Sector} only, at most ${h.MaxFaces} faces`].join("\n") + "\n";
}

async function loadPolicy() {
  const r = await api("GET", "/v1/admin/policy");
  const p = r.Policy || {};
  $("#policy").textContent = `${builtInLines(p.BuiltIn)}# ${p.Name || ""} (version ${p.Version}), sha256 ${p.Sha256}\n# ${p.Source || ""}\n\n${p.Text || ""}`;
}

// ---- wiring ----------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("#signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target; $("#signin-error").textContent = ""; busy(f, true);
    try { await signIn(f.key.value.trim(), f.secret.value); }
    catch (e) { $("#signin-error").textContent = e.message; }
    finally { busy(f, false); }
  });
  $("#signout").addEventListener("click", signOut);
  $$("#tabs [role=tab]").forEach(b => b.addEventListener("click", () => showTab(b.dataset.tab)));
  $("#tabs").addEventListener("keydown", tabKeys);
  $("#create-collection").addEventListener("submit", guard(createCollection));
  $("#enrol-form").addEventListener("submit", guard(enrol));
});
// Resume a signed-in session once every tab's script has registered its loader.
window.addEventListener("load", () => {
  if (store.getItem("fw.key")) signIn(store.getItem("fw.key"), store.getItem("fw.secret")).catch(() => {});
});
