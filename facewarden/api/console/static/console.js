// facewarden console: a thin page over the /v1 API. No framework, no build step, nothing fetched
// from anywhere but this server. Data is only ever inserted as text (never as HTML).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const store = window.sessionStorage;
let offered = new Set();

// ---- the API ---------------------------------------------------------------------------------
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${store.getItem("fw.key")}:${store.getItem("fw.secret")}` };
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

// ---- small DOM helpers -----------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "width") node.style.width = v;  // CSSOM, allowed by the page's CSP
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}
function flash(text, kind = "ok") { const f = $("#flash"); f.textContent = text; f.className = kind; }
function fmtTime(v) {
  if (v == null || v === "") return "";
  const d = typeof v === "number" ? new Date(v * 1000) : new Date(v);
  return isNaN(d) ? String(v) : d.toISOString().replace("T", " ").slice(0, 19);
}
function fmt(v) {
  if (v == null) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(2);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}
function table(rows, columns) {
  const cols = columns || Array.from(rows.reduce((s, r) => { Object.keys(r).forEach(k => s.add(k)); return s; }, new Set()));
  return el("table", {}, el("thead", {}, el("tr", {}, cols.map(c => el("th", {}, c)))),
    el("tbody", {}, rows.map(r => el("tr", {}, cols.map(c => el("td", {}, /(At|Time|Timestamp)$/.test(c) ? fmtTime(r[c]) : fmt(r[c])))))));
}
function busy(form, on) { $$("button", form).forEach(b => { b.disabled = on; }); }
function guard(fn) {
  return async (ev) => {
    if (ev) ev.preventDefault();
    const form = ev && ev.target && ev.target.closest ? ev.target.closest("form") : null;
    if (form) busy(form, true);
    try { await fn(ev); } catch (e) { flash(e.message, "error"); } finally { if (form) busy(form, false); }
  };
}

// ---- sign in ---------------------------------------------------------------------------------
async function signIn(key, secret) {
  store.setItem("fw.key", key); store.setItem("fw.secret", secret);
  let me;
  try { me = await api("GET", "/v1/whoami"); }
  catch (e) { store.removeItem("fw.key"); store.removeItem("fw.secret"); throw e; }
  const ops = await api("GET", "/v1/operations");
  offered = new Set(ops.Operations);
  const p = me.Principal || {};
  $("#who").textContent = `${me.AccessKeyId}` + (p.Organization ? ` — ${p.Organization} (${p.Sector}), purpose ${p.Purpose}` : "");
  $("#signin-view").hidden = true; $("#app-view").hidden = false; $("#signout").hidden = false;
  $$("#tabs button").forEach(b => { b.hidden = b.dataset.needs ? !offered.has(b.dataset.needs) : false; });
  $("#consent-fields").hidden = !offered.has("GrantConsent");
  $$("#consent-fields input").forEach(i => { i.disabled = !offered.has("GrantConsent"); });
  await showTab("collections");
}
function signOut() { store.clear(); location.reload(); }

// ---- tabs ------------------------------------------------------------------------------------
const loaders = {
  collections: loadCollections, enrol: loadCollectionChoices, search: loadCollectionChoices,
  consent: loadConsent, audit: loadAudit, policy: loadPolicy, report: loadReport,
};
async function showTab(name) {
  $$("#tabs button").forEach(b => b.classList.toggle("active", b.dataset.tab === name));
  $$(".tab").forEach(t => { t.hidden = t.id !== `tab-${name}`; });
  flash("");
  try { await loaders[name](); } catch (e) { flash(e.message, "error"); }
}

async function collectionIds() {
  const ids = []; let token;
  do {
    const page = await api("GET", "/v1/collections" + (token ? `?NextToken=${enc(token)}` : ""));
    ids.push(...(page.CollectionIds || [])); token = page.NextToken;
  } while (token);
  return ids;
}
async function loadCollections() {
  const body = $("#collections tbody"); body.replaceChildren();
  for (const id of await collectionIds()) {
    let d = {};
    try { d = await api("GET", `/v1/collections/${enc(id)}`); } catch (e) { d = {}; }
    body.append(el("tr", {}, el("td", {}, id), el("td", { class: "num" }, fmt(d.FaceCount)), el("td", {}, d.FaceModelVersion || ""),
      el("td", {}, fmtTime(d.CreationTimestamp)),
      el("td", {}, el("button", { class: "small", onclick: guard(async () => {
        if (!confirm(`Delete collection ${id} and all its faces?`)) return;
        await api("DELETE", `/v1/collections/${enc(id)}`); flash(`Deleted ${id}.`); await loadCollections();
      }) }, "Delete"))));
  }
  if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "No collections yet.")));
}
async function loadCollectionChoices() {
  const ids = await collectionIds();
  for (const sel of $$(".collection-select")) {
    const cur = sel.value;
    sel.replaceChildren(...ids.map(id => el("option", { value: id }, id)));
    if (ids.includes(cur)) sel.value = cur;
  }
}

// ---- collections, enrolment, search ----------------------------------------------------------
async function createCollection(ev) {
  const f = ev.target;
  const req = { CollectionId: f.CollectionId.value.trim() };
  if (f.Household.checked) req.ConsentMode = "household";
  await api("POST", "/v1/collections", req);
  flash(`Created collection ${req.CollectionId}.`); f.reset(); await loadCollections();
}

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

async function search(ev) {
  const f = ev.target, out = $("#search-result"); out.replaceChildren();
  const form = new FormData();
  form.append("Image", f.Image.files[0]);
  if (f.MaxFaces.value) form.append("MaxFaces", f.MaxFaces.value);
  const r = await api("POST", `/v1/collections/${enc(f.CollectionId.value)}/search`, form);
  const t = r.AppliedThreshold || {};
  out.append(el("p", { class: "card", id: "threshold" },
    `Threshold applied: similarity ≥ ${fmt(t.Similarity)}` + (t.Source ? ` (${t.Source}${t.Reason ? ": " + t.Reason : ""})` : "") +
    (r.SearchedFaceConfidence != null ? ` — searched face confidence ${fmt(r.SearchedFaceConfidence)}` : "")));
  const matches = r.FaceMatches || [];
  if (!matches.length) { out.append(el("p", { class: "muted", id: "no-match" }, "No match at or above the threshold.")); return; }
  out.append(el("table", { id: "matches" },
    el("thead", {}, el("tr", {}, ["Subject", "FaceId", "Similarity", ""].map(h => el("th", {}, h)))),
    el("tbody", {}, matches.map(m => el("tr", {},
      el("td", {}, m.Face.ExternalImageId || m.Face.UserId || ""), el("td", {}, m.Face.FaceId),
      el("td", { class: "num similarity" }, fmt(m.Similarity)),
      el("td", {}, el("div", { class: "barbox" }, el("div", { class: "bar", width: `${Math.max(1, Math.min(100, m.Similarity))}%` }))))))));
  flash(`${matches.length} match(es).`);
}

// ---- administration views --------------------------------------------------------------------
async function loadConsent() {
  const r = await api("GET", "/v1/admin/consents");
  const rows = r.Consents || [];
  const tab = $("#tab-consent"); tab.replaceChildren();
  if (!rows.length) { tab.append(el("p", { class: "muted" }, "No consent records.")); return; }
  const cols = ["Subject", "CollectionId", "Organization", "Evidence", "GrantedAt", "ExpiresAt", "Active", "WithdrawnAt", "WithdrawnReason", "ConsentId"];
  const t = table(rows, cols); t.id = "consent";
  if (offered.has("WithdrawConsent")) {
    $("thead tr", t).append(el("th", {}, ""));
    $$("tbody tr", t).forEach((tr, i) => {
      const c = rows[i];
      tr.append(el("td", {}, !c.Active ? "" : el("button", { class: "small", onclick: guard(async () => {
        if (!confirm(`Withdraw ${c.Subject}'s consent for ${c.CollectionId}? Their faces there will be erased.`)) return;
        const q = `Subject=${enc(c.Subject)}` + (c.CollectionId && c.CollectionId !== "*" ? `&CollectionId=${enc(c.CollectionId)}` : "");
        await api("DELETE", `/v1/admin/consents?${q}`); flash("Consent withdrawn; the subject's templates were erased."); await loadConsent();
      }) }, "Withdraw")));
    });
  }
  tab.append(t);
}

async function loadAudit() {
  const v = $("#audit-verify");
  if (offered.has("VerifyAudit")) {
    try {
      const res = await api("GET", "/v1/admin/audit/verify");
      v.className = "card " + (res.Ok ? "ok" : "error");
      v.textContent = (res.Ok ? "✔ Audit chain verified: " : "✘ Audit chain BROKEN: ") + (res.Problem || `${res.Records} records`);
    } catch (e) { v.className = "card error"; v.textContent = e.message; }
  } else { v.textContent = ""; }
  const r = await api("GET", "/v1/admin/audit?NewestFirst=true&MaxResults=200");
  const rows = (r.Lines || []).map(l => { const line = JSON.parse(l); return line.record || line; });
  const body = $("#audit tbody"); body.replaceChildren();
  for (const a of rows) {
    body.append(el("tr", {}, el("td", { class: "num" }, fmt(a.seq)), el("td", {}, fmtTime(a.time)), el("td", {}, a.org || ""),
      el("td", {}, a.key || ""), el("td", { class: "operation" }, a.operation || ""), el("td", {}, a.collection || ""),
      el("td", { class: a.decision === "allowed" ? "allow" : a.decision === "denied" ? "deny" : "recorded" }, a.decision || ""), el("td", {}, a.rule || ""),
      el("td", {}, a.reason || "")));
  }
}

async function loadPolicy() {
  const r = await api("GET", "/v1/admin/policy");
  const p = r.Policy || {};
  $("#policy").textContent = `# ${p.Name || ""} (version ${p.Version}), sha256 ${p.Sha256}\n# ${p.Source || ""}\n\n${p.Text || ""}`;
}

async function loadReport() {
  const r = await api("GET", "/v1/admin/transparency-report");
  const out = $("#report"); out.replaceChildren();
  const rep = r.Report || r;
  for (const [k, v] of Object.entries(rep)) {
    if (Array.isArray(v) && v.length && typeof v[0] === "object") out.append(el("h2", {}, k), table(v));
    else if (v && typeof v === "object" && !Array.isArray(v)) out.append(el("h2", {}, k), table(Object.entries(v).map(([a, b]) => ({ [k]: a, value: b }))));
    else out.append(el("p", {}, el("strong", {}, `${k}: `), fmt(v)));
  }
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
  $$("#tabs button").forEach(b => b.addEventListener("click", () => showTab(b.dataset.tab)));
  $("#create-collection").addEventListener("submit", guard(createCollection));
  $("#enrol-form").addEventListener("submit", guard(enrol));
  $("#search-form").addEventListener("submit", guard(search));
  if (store.getItem("fw.key")) signIn(store.getItem("fw.key"), store.getItem("fw.secret")).catch(() => {});
});
