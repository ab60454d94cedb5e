// facewarden console: the Transparency tab — the report as a person reads it (loaded after
// console.js, whose helpers it uses). The charts are SVG drawn by the server (matplotlib) and shown
// as images; the HTML and CSV exports are files for a regulator; Print prints this page alone.
"use strict";

let reportSince = "";

function figure(label, n, id) {
  return el("div", { class: "figure", id }, el("span", { class: "n" }, String(n)), el("span", { class: "label" }, label));
}

function svgImage(svg, alt, id) {
  return el("img", { src: "data:image/svg+xml;charset=utf-8," + enc(svg), alt, id, class: "chart" });
}

// {sector: {PENDING: n, ...}} -> {sector: {pending: n, ...}}: a request's status as a word
function statusWords(m) {
  return Object.fromEntries(Object.entries(m).map(([k, row]) => [k, Object.fromEntries(Object.entries(row).map(([s, n]) => [s.toLowerCase(), n]))]));
}

function section(title, ...content) {
  return el("section", { class: "card report-section" }, el("h2", {}, title), ...content);
}

function renderReport(rep, charts) {
  const out = $("#report"); out.replaceChildren();
  const d = rep.Decisions || {};
  const period = rep.From ? `${fmtTime(rep.From)} to ${fmtTime(rep.To)} (UTC)` : "no records yet";
  out.append(el("p", { class: "lead" }, "What this installation did, for whom, and what it refused: every decision in the audit log from ",
    el("strong", {}, period), rep.Since ? `, counted from ${fmtTime(rep.Since)}` : "", "."));
  const figures = el("div", { class: "figures", id: "headline" },
    figure("decisions allowed", d.allowed || 0, "fig-allowed"), figure("decisions denied", d.denied || 0, "fig-denied"),
    figure("calls failed", d.failed || 0, "fig-failed"), figure("identification searches", rep.IdentificationSearches || 0, "fig-searches"),
    figure("subjects erased or consent withdrawn", rep.SubjectsErasedOrWithdrawn || 0, "fig-erasures"),
    figure("faces erased", rep.FacesErased || 0, "fig-faces-erased"),
    figure("policy changes", (rep.PolicyChanges || []).length, "fig-policy"));
  const release = rep.FootageRelease;
  if (release) figures.append(figure("footage release requests", release.Requests || 0, "fig-release"));
  const enforcementMoves = rep.EnforcementSectorChanges || [];
  if (rep.SectorChanges) {
    const f = figure("organisations moved into or out of a deny rule's sectors", enforcementMoves.length, "fig-sector-moves");
    if (enforcementMoves.length) f.classList.add("alert");
    figures.append(f);
  }
  out.append(figures,
    el("p", { class: "muted small" }, `The console's own reads to draw its pages (${rep.ConsoleReads || 0}) are not counted here.`));

  // Now, whatever the period: the safeguards built into the code, and the collections by consent mode.
  const b = rep.BuiltInSafeguards;
  if (b) {
    const h = b.Household || {};
    out.append(section("Safeguards built into the code (in force whatever the policy file says)",
      el("ul", { id: "built-in" }, (b.Rules || []).map(r => el("li", {}, builtInRule(r))),
        el("li", {}, `household collections (no per-face consent): organisations of sector ${h.Sector} only, ` +
          `at most ${h.MaxFaces} faces each`))));
  }
  const cols = rep.Collections;
  if (cols) {
    const named = { Consent: "consent per face", Household: "household (a person's own library)",
      HouseholdRefused: "household, refused until converted" };
    out.append(section("Collections by consent mode (now)", el("table", { id: "collections-by-consent" },
      el("thead", {}, el("tr", {}, ["Consent mode", "Collections", "Faces"].map(h => el("th", { scope: "col" }, h)))),
      el("tbody", {}, Object.entries(cols).map(([k, v]) => el("tr", { "data-mode": k }, el("th", { scope: "row" }, named[k] || k),
        el("td", { class: "num" }, String(v.Collections)), el("td", { class: "num" }, String(v.Faces))))))));
  }

  if (charts) {
    out.append(el("section", { class: "card report-section" },
      el("h2", {}, "Over time (per UTC day)"),
      el("div", { class: "charts" },
        svgImage(charts.DecisionsPerDay, "Chart: decisions per day, by outcome (allowed, denied, failed)", "chart-decisions"),
        svgImage(charts.DenialsPerDay, "Chart: denials per day, by rule", "chart-denials"))));
  }
  const byRule = Object.fromEntries(Object.entries(rep.DenialsByRule || {}).map(([r, n]) => [r, { Denials: n }]));
  const transpose = m => {
    const t = {};
    for (const [a, row] of Object.entries(m || {})) for (const [b, n] of Object.entries(row)) (t[b] = t[b] || {})[a] = n;
    return t;
  };
  const grid = el("div", { class: "report-grid" });
  out.append(grid);
  grid.append(
    section("What was refused: denials by rule", matrixTable("Rule", byRule, { id: "denials-by-rule" })),
    section("Denials by rule and sector", matrixTable("Rule", transpose(rep.DenialsBySector), { id: "denials-by-sector" })),
    section("Operations by purpose", el("p", { class: "muted small" }, "Calls allowed (and failed) by the purpose of the key that made them."),
      matrixTable("Operation", transpose(rep.OperationsByPurpose), { id: "ops-by-purpose" })),
    section("Operations by sector", el("p", { class: "muted small" }, "By the sector the calling organisation declared."),
      matrixTable("Operation", transpose(rep.OperationsBySector), { id: "ops-by-sector" })),
    section("Operations by organisation", matrixTable("Operation", transpose(rep.OperationsByOrganization), { id: "ops-by-org" })));
  if (release) {
    grid.append(section("Footage release requests by requester sector",
      matrixTable("Requester sector", statusWords(release.RequestsByRequesterSector || {}), { id: "release-by-sector" }),
      el("p", { class: "muted small" }, `Items released ${release.ItemsReleased || 0}, downloaded ${release.ItemsDownloaded || 0}; ` +
        `faces redacted ${release.FacesRedacted || 0}, kept visible (consenting) ${release.FacesKeptVisible || 0}.`)));
  }
  const sectorChanges = rep.SectorChanges || [];
  if (rep.SectorChanges) {
    const rules = (names, verb) => (names.length ? [el("span", { class: "badge deny" }, `${verb} ${names.join(", ")}`), " "] : []);
    grid.append(section("Sector changes",
      el("p", { class: "muted small" }, "An organisation's declared sector decides which rules apply to it (the moratorium's sectors above all): " +
        "every change is listed, and those into or out of a deny rule's sectors are marked."),
      sectorChanges.length ? el("div", { class: "scroll" }, el("table", { id: "sector-changes" },
        el("thead", {}, el("tr", {}, ["Time (UTC)", "Organisation", "From", "To", "Deny rules"].map(h => el("th", { scope: "col" }, h)))),
        el("tbody", {}, sectorChanges.map(c => el("tr", {}, el("td", { class: "nowrap" }, fmtTime(c.Time)), el("td", {}, c.Organization || ""),
          el("td", {}, c.From || ""), el("td", {}, c.To || ""),
          el("td", {}, ...rules(c.DenyRulesLeft || [], "left"), ...rules(c.DenyRulesEntered || [], "entered")))))))
        : el("p", { class: "muted" }, "None in this period.")));
  }
  const changes = rep.PolicyChanges || [];
  out.append(section("Policy changes", changes.length ? el("table", { id: "policy-changes" },
    el("thead", {}, el("tr", {}, ["Time (UTC)", "Policy", "Version", "SHA-256"].map(h => el("th", { scope: "col" }, h)))),
    el("tbody", {}, changes.map(c => el("tr", {}, el("td", { class: "nowrap" }, fmtTime(c.Time)), el("td", {}, c.name || ""),
      el("td", {}, fmt(c.version)), el("td", { class: "mono small wrap" }, c.PolicyHash || "")))))
    : el("p", { class: "muted" }, "None in this period.")));
}

async function loadReport() {
  const r = await api("GET", `/v1/admin/transparency-report${query({ Since: reportSince, Charts: true })}`);
  renderReport(r.Report || {}, r.Charts);
}

async function exportReport(format) {
  const r = await api("GET", `/v1/admin/transparency-report/export${query({ Format: format, Since: reportSince })}`);
  const a = el("a", { href: URL.createObjectURL(new Blob([r.Document], { type: r.MediaType })), download: r.FileName });
  document.body.append(a); a.click(); a.remove();
  flash(`Downloaded ${r.FileName}.`);
}

document.addEventListener("DOMContentLoaded", () => {
  loaders.report = loadReport;
  $("#report-form").addEventListener("submit", guard(async (ev) => {
    const v = ev.target.Since.value;
    reportSince = v ? new Date(v + "T00:00:00Z").toISOString() : "";
    await loadReport();
  }));
  $("#report-html").addEventListener("click", guard(() => exportReport("html")));
  $("#report-csv").addEventListener("click", guard(() => exportReport("csv")));
  $("#report-print").addEventListener("click", () => window.print());
});
