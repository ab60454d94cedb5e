// facewarden console: the Search tab (loaded after console.js, whose helpers it uses).
// The photo is shown from the chosen file (it is not stored anywhere); the searched face is boxed
// and everything else dimmed. Of the enrolled faces nothing is shown but their ids and external ids:
// no stored images exist.
"use strict";

const THRESHOLD_SOURCES = {
  requested: "the threshold asked for",
  floor: "the floor of this key's purpose",
  gallery_size: "the size of the collection (the expected false matches may not exceed the policy's cap)",
};

function sci(x) { return x == null ? "" : (x === 0 ? "0" : Number(x).toExponential(1)); }

function thresholdCard(t, r) {
  const parts = [el("strong", {}, `Threshold applied: similarity ≥ ${fmt(t.Similarity)}`)];
  if (t.Source) parts.push(`, set by ${THRESHOLD_SOURCES[t.Source] || t.Source}${t.Reason ? " (" + t.Reason + ")" : ""}.`);
  const facts = [];
  if (t.FalseMatchRate != null) facts.push(`false match rate at this threshold ${sci(t.FalseMatchRate)}`);
  if (t.GallerySize != null) facts.push(`gallery size ${t.GallerySize} (${t.GallerySizeCounts || "faces"})`);
  if (t.ExpectedFalseMatches != null) facts.push(`expected false matches per search ${sci(t.ExpectedFalseMatches)}` +
    (t.MaxExpectedFalseMatches != null ? ` (cap ${fmt(t.MaxExpectedFalseMatches)})` : ""));
  if (t.RequestedSimilarity != null && t.Source !== "requested") facts.push(`asked for ${fmt(t.RequestedSimilarity)}`);
  if (r.SearchedFaceConfidence != null) facts.push(`searched face detected with confidence ${fmt(r.SearchedFaceConfidence)}`);
  const card = el("div", { class: "card", id: "threshold" }, el("p", {}, ...parts), el("p", { class: "muted" }, facts.join("; ") + "."));
  if (t.WithheldByCap != null) {
    card.append(el("p", { id: "withheld", class: t.WithheldByCap ? "warn" : "muted" },
      `${t.WithheldByCap} match(es) above the requested threshold withheld by the cap on expected false matches.`));
  }
  if (t.CapMet === false) {
    card.append(el("p", { class: "warn" }, "This collection is too large for the cap: even the highest threshold expects more false matches than the policy allows."));
  }
  return card;
}

function photoWithBox(file, box) {
  const url = URL.createObjectURL(file);
  const img = el("img", { src: url, alt: "the searched photo", id: "search-photo" });
  const frame = el("div", { class: "photo-frame" }, img);
  const fig = el("figure", { class: "photo", id: "search-figure" }, frame);
  if (box) {
    const b = el("div", { class: "facebox", id: "search-box", role: "img", "aria-label": "the face that was searched" });
    b.style.left = `${box.Left * 100}%`; b.style.top = `${box.Top * 100}%`;
    b.style.width = `${box.Width * 100}%`; b.style.height = `${box.Height * 100}%`;
    frame.append(b);
  }
  fig.append(el("figcaption", { class: "muted" }, box ? "The face that was searched (the largest), boxed; the rest of the photo is dimmed." : "No face was found."));
  return fig;
}

async function search(ev) {
  const f = ev.target, out = $("#search-result"); out.replaceChildren();
  const file = f.Image.files[0];
  const form = new FormData();
  form.append("Image", file);
  if (f.MaxFaces.value) form.append("MaxFaces", f.MaxFaces.value);
  if (f.FaceMatchThreshold.value) form.append("FaceMatchThreshold", f.FaceMatchThreshold.value);
  const r = await api("POST", `/v1/collections/${enc(f.CollectionId.value)}/search`, form);
  const matches = r.FaceMatches || [];
  const side = el("div", { class: "search-side" }, thresholdCard(r.AppliedThreshold || {}, r));
  if (!matches.length) {
    side.append(el("p", { class: "muted", id: "no-match" }, "No enrolled face reaches the threshold."));
  } else {
    side.append(el("table", { id: "matches" },
      el("caption", {}, `${matches.length} match(es), most similar first`),
      el("thead", {}, el("tr", {}, ["Subject (external id)", "Face id", "Similarity"].map(h => el("th", { scope: "col" }, h)))),
      el("tbody", {}, matches.map(m => el("tr", {},
        el("td", {}, m.Face.ExternalImageId || m.Face.UserId || ""), el("td", { class: "mono" }, m.Face.FaceId),
        el("td", { class: "num similarity-cell" }, el("span", { class: "similarity" }, fmt(m.Similarity)),
          el("div", { class: "barbox", "aria-hidden": "true" }, el("div", { class: "bar", width: `${Math.max(1, Math.min(100, m.Similarity))}%` }))))))));
  }
  out.append(el("div", { class: "search-view" }, photoWithBox(file, r.SearchedFaceBoundingBox), side));
  flash(`${matches.length} match(es).`);
}

document.addEventListener("DOMContentLoaded", () => {
  loaders.search = loadCollectionChoices;
  $("#search-form").addEventListener("submit", guard(search));
});
