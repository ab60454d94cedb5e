// facewarden console: the Redact and Footage release tabs (loaded after console.js, whose helpers
// it uses: api, el, flash, guard, fmt, fmtTime, loaders, collectionIds). Data is inserted as text.
"use strict";

// ---- redact a photo --------------------------------------------------------------------------
async function loadRedact() {
  let ids = [];
  try { ids = await collectionIds(); } catch (e) { ids = []; }
  for (const sel of [$("#keep-collection"), $("#redact-video-form select[name=KeepCollectionId]")]) {
    const cur = sel.value;
    sel.replaceChildren(el("option", { value: "" }, "(nobody)"), ...ids.map(id => el("option", { value: id }, id)));
    if (ids.includes(cur)) sel.value = cur;
  }
}

function bytesToBlob(b64, type) {
  const bin = atob(b64), buf = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) buf[i] = bin.charCodeAt(i);
  return new Blob([buf], { type });
}

async function redactPhoto(ev) {
  const f = ev.target, out = $("#redact-result"); out.replaceChildren();
  const form = new FormData();
  form.append("Image", f.Image.files[0]);
  form.append("Method", f.Method.value); form.append("Shape", f.Shape.value);
  if (f.KeepCollectionId.value) form.append("KeepCollectionId", f.KeepCollectionId.value);
  const r = await api("POST", "/v1/redact", form);
  const type = `image/${(r.Format || "jpeg").toLowerCase()}`;
  const url = URL.createObjectURL(bytesToBlob(r.Image.Bytes, type));
  const name = f.Image.files[0].name.replace(/(\.[^.]*)?$/, ".redacted$1");
  out.append(
    el("p", { class: "card", id: "redact-summary" },
      `${r.FacesHidden} of ${r.FacesFound} face(s) hidden` + (r.FacesKept ? `, ${r.FacesKept} kept visible (consenting)` : "") +
      ` — ${r.Format}, metadata (EXIF, GPS) removed. `, el("a", { href: url, download: name, id: "redact-download" }, "Download")),
    el("img", { src: url, alt: "the redacted photo", id: "redacted-image", class: "preview" }));
  flash(`${r.FacesHidden} face(s) hidden.`);
}

// ---- redact a video: upload into the organisation's bucket, a StartFaceRedaction job, the copy ----
function authHeader() { return { Authorization: `Bearer ${store.getItem("fw.key")}:${store.getItem("fw.secret")}` }; }

async function fetchOk(path, init) {
  const res = await fetch(path, init);
  if (!res.ok) {
    let data = {}; try { data = await res.json(); } catch (e) { data = {}; }
    throw new Error(`${data.error || "Error"}: ${data.message || res.statusText}`);
  }
  return res;
}

function people(n) { return `${fmt(n || 0)} ${n === 1 ? "person" : "people"}`; }

async function redactVideo(ev) {
  const f = ev.target, out = $("#redact-video-result"); out.replaceChildren();
  const file = f.Video.files[0];
  const who = await api("GET", "/v1/whoami");
  const bucket = (who.Principal || {}).Organization;
  const name = `console/${Date.now()}-${file.name.replace(/[^A-Za-z0-9._-]/g, "_")}`;
  const bar = el("progress", { id: "redact-video-progress", max: "100", value: "0", "aria-label": "Redaction progress" });
  const status = el("span", { class: "muted" }, "uploading…");
  out.append(el("p", { class: "card" }, bar, " ", status));
  await fetchOk(`/v1/videos${query({ Name: name })}`,
    { method: "POST", headers: { ...authHeader(), "Content-Type": "application/octet-stream" }, body: file });
  const body = { Video: { S3Object: { Bucket: bucket, Name: name } }, Method: f.Method.value, Shape: f.Shape.value };
  if (f.KeepCollectionId.value) body.KeepCollectionId = f.KeepCollectionId.value;
  const job = await api("POST", "/v1/video/face-redaction", body);
  let r;
  for (;;) {
    r = await api("GET", `/v1/video/face-redaction/${enc(job.JobId)}`);
    bar.value = Math.round((r.Progress || 0) * 100);
    status.textContent = `redacting… ${bar.value}%`;
    if (r.JobStatus !== "IN_PROGRESS") break;
    await new Promise(ok => setTimeout(ok, 1000));
  }
  if (r.JobStatus !== "SUCCEEDED") throw new Error(`The redaction failed: ${r.StatusMessage || r.JobStatus}`);
  const res = await fetchOk(`/v1/video/face-redaction/${enc(job.JobId)}/video`, { headers: authHeader() });
  const url = URL.createObjectURL(await res.blob());
  const done = r.Redaction || {}, dot = file.name.lastIndexOf(".");
  const saveAs = dot > 0 ? `${file.name.slice(0, dot)}.redacted${file.name.slice(dot)}` : `${file.name}.redacted`;
  out.replaceChildren(
    el("p", { class: "card", id: "redact-video-summary" },
      `${people(done.TracksHidden)} hidden` + (done.TracksKept ? `, ${people(done.TracksKept)} kept visible (consenting)` : "") +
      ` in ${fmt(done.MaskedFaceFrames)} face-frames — audio kept. `,
      el("a", { href: url, download: saveAs, id: "redact-video-download" }, "Download")),
    el("video", { src: url, controls: "", id: "redacted-video", class: "preview", "aria-label": "the redacted video" }));
  flash(`${people(done.TracksHidden)} hidden in the video.`);
}

// ---- footage release ---------------------------------------------------------------------------
function isoFromLocal(v) { return v ? new Date(v).toISOString() : v; }

async function loadRelease() {
  await loadFootage();  // first: the owner's decision forms list the library
  await loadRequests();
}

let footageRows = [];
async function loadFootage() {
  const body = $("#footage tbody"); body.replaceChildren();
  footageRows = (await api("GET", "/v1/releases/footage")).Footage || [];
  for (const f of footageRows) {
    body.append(el("tr", {}, el("td", {}, f.FootageId), el("td", {}, f.Name), el("td", {}, f.Media),
      el("td", {}, f.Place || ""), el("td", {}, fmtTime(f.AddedAt))));
  }
  if (!footageRows.length) body.append(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "No footage yet.")));
}

async function addFootage(ev) {
  const f = ev.target, form = new FormData();
  form.append("Image", f.Image.files[0]); form.append("Name", f.Image.files[0].name);
  if (f.Place.value) form.append("Place", f.Place.value);
  const r = await api("POST", "/v1/releases/footage", form);
  flash(`Added ${r.Name} (${r.FootageId}) to your library.`); f.reset(); await loadRelease();
}

async function requestFootage(ev) {
  const f = ev.target;
  const req = { OwnerOrganization: f.OwnerOrganization.value.trim(), Place: f.Place.value, Reason: f.Reason.value,
    LegalBasis: f.LegalBasis.value, TimeRange: { Start: isoFromLocal(f.Start.value), End: isoFromLocal(f.End.value) } };
  if (f.Reference.value) req.Reference = f.Reference.value;
  const r = await api("POST", "/v1/releases", req);
  flash(`Request ${r.RequestId} sent to ${r.OwnerOrganization}.`); f.reset(); await loadRequests();
}

function requestSummary(q) {
  return [
    el("div", {}, el("strong", {}, q.RequestId), ` — ${q.Status}`),
    el("div", { class: "muted" }, `${q.RequesterOrganization} (${q.RequesterSector || "?"}) → ${q.OwnerOrganization}; ` +
      `${fmtTime(q.TimeRange.Start)} to ${fmtTime(q.TimeRange.End)}, ${q.Place}`),
    el("div", {}, `Reason: ${q.Reason}. Legal basis: ${q.LegalBasis}${q.Reference ? " " + q.Reference : ""}.`),
    q.DecisionReason ? el("div", {}, `Decision: ${q.DecisionReason}`) : "",
    q.ExpiresAt ? el("div", { class: "muted" }, `Downloadable until ${fmtTime(q.ExpiresAt)}`) : "",
  ];
}

function decisionForm(q) {
  const boxes = footageRows.map(f => el("label", { class: "inline" },
    el("input", { type: "checkbox", name: "FootageIds", value: f.FootageId }), ` ${f.Name} (${f.FootageId})`));
  const release = el("form", { class: "grid release-form" },
    el("fieldset", {}, el("legend", {}, "Release redacted copies of"), ...(boxes.length ? boxes : [el("span", { class: "muted" }, "Your library is empty.")])),
    el("label", {}, "Expires in (days)", el("input", { name: "ExpiresInDays", type: "number", min: "0.01", max: "30", step: "any", value: "7" })),
    el("button", { type: "submit" }, "Release redacted copies"));
  release.addEventListener("submit", guard(async () => {
    const ids = Array.from(release.querySelectorAll("input[name=FootageIds]:checked")).map(i => i.value);
    if (!ids.length) throw new Error("Choose at least one file of your library.");
    await api("POST", `/v1/releases/${enc(q.RequestId)}/release`, { FootageIds: ids, ExpiresInDays: Number(release.ExpiresInDays.value) });
    flash(`Released ${ids.length} redacted cop${ids.length === 1 ? "y" : "ies"} for ${q.RequestId}.`); await loadRequests();
  }));
  const decline = el("form", { class: "row decline-form" },
    el("label", {}, "Reason for declining", el("input", { name: "Reason", required: "" })),
    el("button", { type: "submit", class: "decline" }, "Decline"));
  decline.addEventListener("submit", guard(async () => {
    await api("POST", `/v1/releases/${enc(q.RequestId)}/decline`, { Reason: decline.Reason.value });
    flash(`Declined ${q.RequestId}.`); await loadRequests();
  }));
  return [release, decline];
}

async function downloadItem(q, item) {
  const res = await fetchOk(`/v1/releases/${enc(q.RequestId)}/items/${enc(item.ItemId)}`, { headers: authHeader() });
  const disposition = res.headers.get("content-disposition") || "";
  const m = /filename="?([^";]+)"?/.exec(disposition);
  const a = el("a", { href: URL.createObjectURL(await res.blob()), download: m ? m[1] : `${item.ItemId}` });
  document.body.append(a); a.click(); a.remove();
  flash(`Downloaded ${item.Name} (redacted). It cannot be downloaded again.`);
  await loadRequests();
}

function itemsTable(q, mine) {
  if (!(q.Items || []).length) return "";
  return el("table", { class: "items" },
    el("thead", {}, el("tr", {}, ["Item", "File", "Status", "Faces hidden", "Kept", ""].map(h => el("th", {}, h)))),
    el("tbody", {}, q.Items.map(i => el("tr", {},
      el("td", {}, i.ItemId), el("td", {}, i.Name), el("td", {}, i.Status + (i.Message ? ` (${i.Message})` : "")),
      el("td", { class: "num" }, fmt(i.FacesHidden)), el("td", { class: "num" }, fmt(i.FacesKept)),
      el("td", {}, mine && i.Status === "READY" && q.Status === "RELEASED"
        ? el("button", { class: "download", onclick: guard(() => downloadItem(q, i)) }, "Download (once)") : "")))));
}

async function loadRequests() {
  const [r, who] = await Promise.all([api("GET", "/v1/releases?Role=any"), api("GET", "/v1/whoami")]);
  const me = (who.Principal || {}).Organization || "";
  const incoming = $("#incoming"), outgoing = $("#outgoing");
  incoming.replaceChildren(); outgoing.replaceChildren();
  for (const q of r.ReleaseRequests || []) {
    const mineAsRequester = q.RequesterOrganization === me;
    const card = el("div", { class: "card request", "data-request": q.RequestId, "data-status": q.Status }, ...requestSummary(q));
    if (!mineAsRequester && q.Status === "PENDING") card.append(...decisionForm(q));
    const items = itemsTable(q, mineAsRequester);
    if (items) card.append(items);
    (mineAsRequester ? outgoing : incoming).append(card);
  }
  if (!incoming.children.length) incoming.append(el("p", { class: "muted" }, "No requests to your organisation."));
  if (!outgoing.children.length) outgoing.append(el("p", { class: "muted" }, "Your organisation has made no requests."));
}

document.addEventListener("DOMContentLoaded", () => {
  loaders.redact = loadRedact;
  loaders.release = loadRelease;
  $("#redact-form").addEventListener("submit", guard(redactPhoto));
  $("#redact-video-form").addEventListener("submit", guard(redactVideo));
  $("#release-request-form").addEventListener("submit", guard(requestFootage));
  $("#footage-form").addEventListener("submit", guard(addFootage));
});
