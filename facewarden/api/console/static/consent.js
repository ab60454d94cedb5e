// facewarden console: the Consent tab — the register, search by subject, grant and withdraw
// (loaded after console.js, whose helpers it uses). Withdrawal erases the subject's faces from
// the collections the consent covered; the page asks before it does.
"use strict";

let consentQuery = {};

function consentStatus(c) {
  if (c.WithdrawnAt != null) {
    return [el("span", { class: "badge ended" }, "Withdrawn"), el("div", { class: "small muted" }, fmtDate(c.WithdrawnAt) +
      (c.WithdrawnReason && c.WithdrawnReason !== "withdrawn" ? ` (${c.WithdrawnReason})` : ""))];
  }
  if (!c.Active) return [el("span", { class: "badge ended" }, c.ExpiresAt != null ? "Expired" : "Not active"), el("div", { class: "small muted" }, fmtDate(c.ExpiresAt))];
  return el("span", { class: "badge active" }, "Active");
}

function scopeText(c) { return !c.CollectionId || c.CollectionId === "*" ? "every collection" : c.CollectionId; }

async function withdrawConsent(c) {
  const scope = scopeText(c);
  const ok = confirm(`Withdraw ${c.Subject}'s consent for ${scope}?\n\n` +
    `This erases ${c.Subject}'s faces (their templates) from ${scope === "every collection" ? "every collection it covered" : "collection " + scope}, ` +
    "unless another active consent still covers them. It cannot be undone; the audit log records it.");
  if (!ok) return;
  const q = { Subject: c.Subject };
  if (c.CollectionId && c.CollectionId !== "*") q.CollectionId = c.CollectionId;
  if (c.Organization && c.Organization !== (me.Principal || {}).Organization) q.Organization = c.Organization;
  const r = await api("DELETE", `/v1/admin/consents${query(q)}`);
  await loadConsent();
  flash(`Consent withdrawn: ${r.ConsentsWithdrawn} consent(s); ${r.FacesErased} face(s) of ${c.Subject} erased.`);
}

async function loadConsent() {
  const r = await api("GET", `/v1/admin/consents${query({ Subject: consentQuery.Subject })}`);
  const out = $("#consent-list"); out.replaceChildren();
  let rows = r.Consents || [];
  const show = consentQuery.Show || "all";
  if (show === "active") rows = rows.filter(c => c.Active);
  if (show === "ended") rows = rows.filter(c => !c.Active);
  rows.sort((a, b) => (b.GrantedAt || 0) - (a.GrantedAt || 0));
  const lookedFor = consentQuery.Subject ? ` of ${consentQuery.Subject}` : "";
  if (!rows.length) { out.append(el("p", { class: "muted", id: "consent-empty" }, `No consent records${lookedFor}.`)); return; }
  const orgs = new Set(rows.map(c => c.Organization));
  const canWithdraw = offered.has("WithdrawConsent");
  // five columns, so that the register fits an 800 px window: the dates share one, the withdraw
  // button sits under the status it changes
  out.append(el("div", { class: "scroll" }, el("table", { id: "consent" },
    el("caption", {}, `${rows.length} consent record(s)${lookedFor}, newest first (dates in UTC)`),
    el("thead", {}, el("tr", {}, ["Subject", "Collection", ...(orgs.size > 1 ? ["Organisation"] : []), "Evidence", "Granted / expires", "Status"]
      .map(h => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map(c => el("tr", { class: c.Active ? "active" : "ended", "data-subject": c.Subject },
      el("td", { class: "subject" }, c.Subject), el("td", { class: "wrap" }, scopeText(c)),
      orgs.size > 1 ? el("td", { class: "wrap" }, c.Organization || "") : [],
      el("td", { class: "evidence" }, c.Evidence || "", el("div", { class: "muted small mono", title: "consent id" }, c.ConsentId || "")),
      el("td", { class: "nowrap" }, fmtDate(c.GrantedAt),
        el("div", { class: "small muted" }, c.ExpiresAt != null ? `expires ${fmtDate(c.ExpiresAt)}` : "no expiry")),
      el("td", { class: "status" }, consentStatus(c),
        c.Active && canWithdraw ? el("div", {}, el("button", { class: "small danger withdraw", "aria-label": `Withdraw ${c.Subject}'s consent for ${scopeText(c)}`,
          onclick: guard(() => withdrawConsent(c)) }, "Withdraw")) : [])))))));
}

async function loadConsentTab() {
  $("#grant-card").hidden = !offered.has("GrantConsent");
  try { await loadCollectionChoices(); } catch (e) { /* a key without ListCollections can still grant for every collection */ }
  await loadConsent();
}

async function grantConsent(ev) {
  const f = ev.target;
  const req = { Subject: f.Subject.value.trim(), Evidence: f.Evidence.value.trim() };
  if (f.CollectionId.value) req.CollectionId = f.CollectionId.value;
  if (f.ExpiresAt.value) req.ExpiresAt = f.ExpiresAt.value;
  const r = await api("POST", "/v1/admin/consents", req);
  f.reset();
  await loadConsent();
  flash(`Consent of ${req.Subject} recorded (${r.Consent.ConsentId}).`);
}

document.addEventListener("DOMContentLoaded", () => {
  loaders.consent = loadConsentTab;
  $("#consent-search").addEventListener("submit", guard(async (ev) => {
    const f = ev.target;
    consentQuery = { Subject: f.Subject.value.trim(), Show: f.Show.value };
    await loadConsent();
  }));
  $("#consent-search").addEventListener("reset", () => { consentQuery = {}; setTimeout(() => loadConsent().catch(e => flash(e.message, "error")), 0); });
  $("#grant-form").addEventListener("submit", guard(grantConsent));
});
