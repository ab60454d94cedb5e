// facewarden console: the Audit log tab (loaded after console.js, whose helpers it uses).
// Filters are applied by the server (ExportAudit), which pages through the whole log; the
// console's own reads are hidden unless asked for. A record's detail opens on click or Enter.
"use strict";

const auditState = { filters: {}, tokens: [], token: undefined, pageSize: 50, generation: 0 };

const AUDIT_FIELDS = [
  ["seq", "Sequence"], ["time", "Time (UTC)"], ["org", "Organisation"], ["sector", "Sector"], ["key", "Access key"],
  ["purpose", "Purpose"], ["operation", "Operation"], ["collection", "Collection"], ["decision", "Decision"],
  ["rule", "Rule"], ["reason", "Reason"], ["counts", "Counts"], ["matched_face_ids", "Matched face ids"],
  ["applied_threshold", "Applied threshold"], ["subjects", "Subjects (pseudonyms)"], ["details", "Details"],
  ["policy_hash", "Policy SHA-256"],
];

function auditFilters(f) {
  const v = name => f[name].value.trim();
  const subject = v("Subject");
  const iso = s => (s ? new Date(s + "Z").toISOString() : "");  // the inputs are in UTC, like the log
  return {
    Since: iso(v("Since")), Until: iso(v("Until")), Decision: v("Decision"), Rule: v("Rule"), Operation: v("Operation"),
    Organization: v("Organization"), AccessKeyId: v("AccessKeyId"), Collection: v("Collection"),
    ...(subject.startsWith("subj-") ? { SubjectRef: subject } : { Subject: subject }),
    HideConsoleReads: !f.ShowConsoleReads.checked,
  };
}

async function loadVerify() {
  const v = $("#audit-verify");
  v.replaceChildren();
  if (!offered.has("VerifyAudit")) return;
  try {
    const res = await api("GET", "/v1/admin/audit/verify");
    v.className = "card " + (res.Ok ? "ok" : "error");
    v.append(el("strong", {}, res.Ok ? "✔ Audit chain verified: " : "✘ Audit chain BROKEN: "),
      res.Ok ? (res.Problem || `${res.Records} records`) : `at record ${res.FirstBadSequence} (${res.Kind}): ${res.Problem}`);
  } catch (e) { v.className = "card error"; v.textContent = `The chain could not be verified with this key: ${e.message}`; }
}

function detailValue(k, v) {
  if (v == null || (Array.isArray(v) && !v.length) || (typeof v === "object" && !Object.keys(v).length)) return el("span", { class: "muted" }, "—");
  if (k === "time") return `${fmtSeconds(v)} (${v})`;
  if (k === "subjects") {
    return el("span", {}, v.map(ref => el("button", { type: "button", class: "link chip", title: "Show every record about this subject",
      onclick: () => { const f = $("#audit-filters"); f.reset(); f.Subject.value = ref; f.requestSubmit(); } }, ref)));
  }
  if (typeof v === "object" && !Array.isArray(v)) {
    return el("dl", { class: "inline" }, Object.entries(v).flatMap(([a, b]) => [el("dt", {}, a), el("dd", {}, fmt(b))]));
  }
  return fmt(v);
}

function auditDetail(line) {
  const a = line.record || line;
  const known = new Set(AUDIT_FIELDS.map(([k]) => k));
  const items = [...AUDIT_FIELDS.filter(([k]) => k in a), ...Object.keys(a).filter(k => !known.has(k)).map(k => [k, k])];
  return el("dl", { class: "detail" },
    items.flatMap(([k, label]) => [el("dt", {}, label), el("dd", {}, detailValue(k, a[k]))]),
    line.hash ? [el("dt", {}, "Record hash"), el("dd", { class: "mono" }, line.hash),
      el("dt", {}, "Previous hash"), el("dd", { class: "mono" }, line.prev_hash),
      el("dt", {}, "Signature (Ed25519)"), el("dd", { class: "mono" }, line.sig)] : []);
}

function toggleDetail(group, tr, line) {
  const open = $("tr.detail-row", group);
  if (open) { open.remove(); tr.setAttribute("aria-expanded", "false"); return; }
  group.append(el("tr", { class: "detail-row" }, el("td", { colspan: "7" }, auditDetail(line))));
  tr.setAttribute("aria-expanded", "true");
}

function decisionBadge(d) {
  return el("span", { class: `badge ${d === "allowed" ? "allow" : d === "denied" ? "deny" : d === "failed" ? "fail" : "recorded"}` }, d || "");
}

async function loadAuditPage() {
  const q = { ...auditState.filters, NewestFirst: true, MaxResults: auditState.pageSize, NextToken: auditState.token };
  const generation = ++auditState.generation;
  const r = await api("GET", `/v1/admin/audit${query(q)}`);
  if (generation !== auditState.generation) return;  // a newer page was asked for meanwhile
  const lines = (r.Lines || []).map(l => JSON.parse(l));
  const table = $("#audit");
  $$("tbody", table).forEach(b => b.remove());
  // one tbody per record: its row, the reason of a refusal or failure, and its detail when open
  for (const line of lines) {
    const a = line.record || line;
    const consoleRead = a.details && a.details.console_read;
    const tr = el("tr", { tabindex: "0", class: "record", "data-seq": a.seq, "data-decision": a.decision, "aria-expanded": "false",
      title: "Show the whole record" },
      el("td", { class: "num" }, fmt(a.seq)),
      el("td", { class: "nowrap" }, fmtDate(a.time), el("div", { class: "small muted" }, fmtClock(a.time))),
      el("td", {}, a.org || el("span", { class: "muted" }, "(nobody)"), a.key ? el("div", { class: "mono small muted key" }, a.key) : ""),
      el("td", { class: "operation" }, opName(a.operation || ""), consoleRead ? el("div", { class: "small muted" }, "console read") : ""),
      el("td", {}, a.collection || ""),
      el("td", { class: "decision" }, decisionBadge(a.decision)),
      el("td", { class: "rule" }, a.rule || ""));
    const group = el("tbody", { class: `record-group ${a.decision || ""}` }, tr);
    if (a.decision !== "allowed" && a.reason) {
      group.append(el("tr", { class: "reason-row" }, el("td", {}), el("td", { colspan: "6", class: "small" }, a.reason)));
    }
    const toggle = () => toggleDetail(group, tr, line);
    tr.addEventListener("click", toggle);
    tr.addEventListener("keydown", ev => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); toggle(); } });
    table.append(group);
  }
  if (!lines.length) table.append(el("tbody", {}, el("tr", {}, el("td", { colspan: "7", class: "muted", id: "audit-empty" }, "No record matches these filters."))));
  auditState.next = r.NextToken;
  const page = auditState.tokens.length + 1;
  $("#audit-page").textContent = `Page ${page}: ${lines.length} record(s), newest first` + (r.NextToken ? "" : " — the end of the log");
  $("#audit-newer").disabled = !auditState.tokens.length;
  $("#audit-older").disabled = !r.NextToken;
  $("#audit").dataset.generation = String(generation);
}

async function loadAudit() {
  await Promise.all([loadVerify(), loadAuditPage()]);
}

async function applyAuditFilters(ev) {
  auditState.filters = auditFilters(ev.target);
  auditState.pageSize = Number(ev.target.PageSize.value) || 50;
  auditState.tokens = []; auditState.token = undefined;
  await loadAuditPage();
}

document.addEventListener("DOMContentLoaded", () => {
  loaders.audit = loadAudit;
  const f = $("#audit-filters");
  auditState.filters = auditFilters(f);
  f.addEventListener("submit", guard(applyAuditFilters));
  f.addEventListener("reset", () => setTimeout(() => f.requestSubmit(), 0));
  $("#audit-older").addEventListener("click", guard(async () => {
    auditState.tokens.push(auditState.token); auditState.token = auditState.next; await loadAuditPage();
  }));
  $("#audit-newer").addEventListener("click", guard(async () => {
    auditState.token = auditState.tokens.pop(); await loadAuditPage();
  }));
});
