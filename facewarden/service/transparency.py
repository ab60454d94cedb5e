"""The transparency report as people read it: charts (SVG), a printable HTML document, a CSV.

The numbers come from :func:`facewarden.audit.transparency_report` (counted by the database) and,
where footage release exists, its requests by requester sector. This module only presents them:

* :func:`charts` draws the per-day series with matplotlib (the SVG backend, no pyplot, so that
  requests on several threads each draw their own figure): decisions by outcome, denials by rule;
* :func:`report_html` is one self-contained page for a regulator (inline CSS and SVG, no script,
  nothing fetched), printable as it is;
* :func:`report_csv` is every figure as one tidy table: ``Section, Row, Column, Value``.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
from collections.abc import Iterator, Mapping
from typing import Any

#: Colours of the decision outcomes (the console uses the same).
OUTCOME_COLOURS = {"allowed": "#137a3a", "denied": "#b42318", "failed": "#b54708", "recorded": "#667085"}
OUTCOMES = ("allowed", "denied", "failed", "recorded")
#: Colours of the denial rules, in order of appearance (colour-blind-safe Okabe-Ito palette).
RULE_COLOURS = ("#d55e00", "#0072b2", "#cc79a7", "#e69f00", "#009e73", "#56b4e9", "#000000", "#f0e442")
#: The charts, by name: (title, report key).
CHARTS = {
    "DecisionsPerDay": ("Decisions per day, by outcome", "DecisionsPerDay"),
    "DenialsPerDay": ("Denials per day, by rule", "DenialsPerDay"),
}
#: The tables of the report: (title, report key, row heading, column heading). The report keeps
#: them as {purpose/sector/organisation: {operation or rule: n}}; they are drawn transposed, with
#: the operations (or rules) as rows: there are more of them than purposes or sectors, so the
#: table grows down, not across the page.
MATRICES = (
    ("Operations by purpose", "OperationsByPurpose", "Operation", "Purpose"),
    ("Operations by sector", "OperationsBySector", "Operation", "Sector"),
    ("Operations by organisation", "OperationsByOrganization", "Operation", "Organisation"),
    ("Denials by rule and sector", "DenialsBySector", "Rule", "Sector"),
)


# ---- the figures --------------------------------------------------------------------------------
def headline(report: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The figures a reader sees first: (label, number)."""
    decisions = report.get("Decisions") or {}
    out = [
        ("Decisions allowed", int(decisions.get("allowed", 0))),
        ("Decisions denied", int(decisions.get("denied", 0))),
        ("Calls failed", int(decisions.get("failed", 0))),
        ("Identification searches", int(report.get("IdentificationSearches", 0))),
        ("Subjects erased or consent withdrawn", int(report.get("SubjectsErasedOrWithdrawn", 0))),
        ("Faces erased", int(report.get("FacesErased", 0))),
        ("Policy changes", len(report.get("PolicyChanges") or [])),
    ]
    release = report.get("FootageRelease")
    if isinstance(release, Mapping):
        out.append(("Footage release requests", int(release.get("Requests", 0))))
    if report.get("SectorChanges") is not None:
        moves = len(report.get("EnforcementSectorChanges") or [])
        out.append(("Organisations moved into or out of a deny rule's sectors", moves))
    return out


def transpose(matrix: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """{a: {b: n}} -> {b: {a: n}}, rows sorted."""
    out: dict[str, dict[str, int]] = {}
    for a, row in matrix.items():
        for b, n in row.items():
            out.setdefault(b, {})[a] = int(n)
    return dict(sorted(out.items()))


def _matrix_rows(matrix: Mapping[str, Mapping[str, int]]) -> tuple[list[str], list[tuple[str, list[int]]]]:
    columns = sorted({c for row in matrix.values() for c in row})
    rows = [(r, [int(matrix[r].get(c, 0)) for c in columns]) for r in sorted(matrix)]
    return columns, rows


def matrices(report: Mapping[str, Any]) -> Iterator[tuple[str, str, str, dict[str, dict[str, int]]]]:
    """(title, row heading, column heading, {row: {column: n}}) of each table of the report."""
    for title, key, row_head, col_head in MATRICES:
        yield title, row_head, col_head, transpose(report.get(key) or {})
    release = report.get("FootageRelease")
    if isinstance(release, Mapping) and release.get("RequestsByRequesterSector") is not None:
        yield (
            "Footage release requests by requester sector",
            "Sector",
            "Outcome",
            {  # a request's status as a word
                sector: {str(status).lower(): int(n) for status, n in row.items()}
                for sector, row in release["RequestsByRequesterSector"].items()
            },
        )


# ---- charts ---------------------------------------------------------------------------------------
def _days(series: Mapping[str, Any]) -> list[dt.date]:
    return [dt.date.fromisoformat(d) for d in sorted(series)]


def chart_svg(title: str, series: Mapping[str, Mapping[str, int]], colours: Mapping[str, str]) -> str:
    """A stacked bar chart of ``{day: {category: n}}`` as SVG text (one bar per UTC day)."""
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 3), dpi=100)
    FigureCanvasSVG(fig)
    ax = fig.add_subplot()
    days = _days(series)
    categories = [c for c in colours if any(series[d].get(c) for d in series)]
    if days:
        x = [d.toordinal() for d in days]
        bottom = [0] * len(days)
        for c in categories:
            values = [int(series[d.isoformat()].get(c, 0)) for d in days]
            ax.bar(x, values, width=0.8, bottom=bottom, color=colours[c], label=c)
            bottom = [b + v for b, v in zip(bottom, values)]
        # a week wide at least, so that a bar is never wider than a day's
        pad = max(1.0, (7 - (x[-1] - x[0] + 1)) / 2 + 0.5)
        ax.set_xlim(x[0] - pad, x[-1] + pad)
        step = -(-(x[-1] - x[0] + 1) // 7)  # at most seven dates along the axis
        ticks = list(range(x[0], x[-1] + 1, step))
        ax.set_xticks(ticks, [dt.date.fromordinal(t).isoformat() for t in ticks])
        if categories:
            ax.legend(loc="upper left", frameon=False, fontsize=9, ncols=min(4, len(categories)))
            ax.set_ylim(0, max(bottom) * 1.3 + 1)
    else:
        ax.text(0.5, 0.5, "nothing in this period", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_ylabel("records per day", fontsize=9)
    ax.tick_params(labelsize=8.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    out = io.StringIO()
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "facewarden"}):
        fig.savefig(out, format="svg", metadata={k: None for k in ("Date", "Creator", "Format", "Type")})
    text = out.getvalue()
    return text[text.index("<svg") :]  # without the XML prolog and DOCTYPE: embeddable as it is


def rule_colours(report: Mapping[str, Any]) -> dict[str, str]:
    """A colour for each rule that denied anything (the most frequent first)."""
    rules = list(report.get("DenialsByRule") or {})
    for day in (report.get("DenialsPerDay") or {}).values():
        rules.extend(r for r in day if r not in rules)
    return {r: RULE_COLOURS[i % len(RULE_COLOURS)] for i, r in enumerate(rules)}


def charts(report: Mapping[str, Any]) -> dict[str, str]:
    """The report's charts as SVG text, by name (see :data:`CHARTS`)."""
    return {
        "DecisionsPerDay": chart_svg(
            CHARTS["DecisionsPerDay"][0], report.get("DecisionsPerDay") or {}, OUTCOME_COLOURS
        ),
        "DenialsPerDay": chart_svg(
            CHARTS["DenialsPerDay"][0], report.get("DenialsPerDay") or {}, rule_colours(report)
        ),
    }


# ---- the safeguards built into the code, and the collections by consent mode --------------------------
#: The collections' consent modes, in words.
CONSENT_MODES = {
    "Consent": "consent per face",
    "Household": "household (a person's own library)",
    "HouseholdRefused": "household, refused until converted",
}


def built_in_lines(report: Mapping[str, Any]) -> list[str]:
    """The safeguards built into the code (in force whatever the policy file says), in words."""
    b = report.get("BuiltInSafeguards")
    if not isinstance(b, Mapping):
        return []
    out = []
    for r in b.get("Rules") or []:
        who = ", ".join(r.get("Sectors") or []) or "every sector"
        purposes = f" with purposes {', '.join(r['Purposes'])}" if r.get("Purposes") else ""
        exempt = "; exempt: " + ", ".join(e["Name"] for e in r["Exemptions"]) if r.get("Exemptions") else ""
        out.append(
            f"{r['Id']} (in force, indefinite): {', '.join(r['Operations'])} denied to {who}{purposes}{exempt}"
        )
    h = b.get("Household") or {}
    out.append(
        f"household collections (no per-face consent): organisations of sector {h.get('Sector')} only, "
        f"at most {h.get('MaxFaces')} faces each"
    )
    return out


# ---- CSV --------------------------------------------------------------------------------------------
def report_rows(report: Mapping[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """Every figure of the report as (section, row, column, value)."""
    for key in ("Since", "From", "To"):
        yield "Period", key, "", str(report.get(key) or "")
    for label, n in headline(report):
        yield "Headline", label, "", str(n)
    yield "Headline", "Console reads (not counted above)", "", str(int(report.get("ConsoleReads", 0)))
    for key in ("DecisionsPerDay", "DenialsPerDay"):
        for day, row in sorted((report.get(key) or {}).items()):
            for column, n in sorted(row.items()):
                yield key, day, column, str(n)
    for key in ("OperationsByPurpose", "OperationsBySector", "OperationsByOrganization", "DenialsBySector"):
        for row_name, row in sorted((report.get(key) or {}).items()):
            for column, n in sorted(row.items()):
                yield key, row_name, column, str(n)
    for rule, n in (report.get("DenialsByRule") or {}).items():
        yield "DenialsByRule", rule, "", str(n)
    for change in report.get("PolicyChanges") or []:
        yield "PolicyChanges", str(change.get("Time", "")), "PolicyHash", str(change.get("PolicyHash", ""))
    for line in built_in_lines(report):
        name, _, text = line.partition(" ")
        yield "BuiltInSafeguards", name, "", text
    for mode, row in (report.get("Collections") or {}).items():
        for column, n in row.items():
            yield "CollectionsByConsentMode", mode, column, str(n)
    for change in report.get("SectorChanges") or []:
        time = str(change.get("Time", ""))
        for key in ("Organization", "From", "To"):
            yield "SectorChanges", time, key, str(change.get(key) or "")
        for key in ("DenyRulesEntered", "DenyRulesLeft"):
            yield "SectorChanges", time, key, " ".join(change.get(key) or [])
    release = report.get("FootageRelease")
    if isinstance(release, Mapping):
        for sector, row in sorted((release.get("RequestsByRequesterSector") or {}).items()):
            for status, n in sorted(row.items()):
                yield "FootageReleaseRequestsBySector", sector, status, str(n)
        for k, v in release.items():
            if isinstance(v, (int, float)):
                yield "FootageRelease", k, "", str(v)


def report_csv(report: Mapping[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(("Section", "Row", "Column", "Value"))
    w.writerows(report_rows(report))
    return out.getvalue()


# ---- HTML -------------------------------------------------------------------------------------------
_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1d2330; max-width: 60rem; margin: 1.5rem auto; padding: 0 1rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.6rem; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr)); gap: .5rem; }
.figure { border: 1px solid #d9dee7; border-radius: 6px; padding: .5rem .7rem; }
.figure b { display: block; font-size: 1.4rem; }
table { border-collapse: collapse; margin: .4rem 0; font-size: .9rem; }
th, td { border: 1px solid #d9dee7; padding: .25rem .5rem; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td:first-child { white-space: nowrap; }
svg { max-width: 100%; height: auto; }
.muted { color: #667085; }
@media print { body { margin: 0; } h2 { break-after: avoid; } table, svg { break-inside: avoid; } }
"""


def _table(row_head: str, matrix: Mapping[str, Mapping[str, int]]) -> str:
    columns, rows = _matrix_rows(matrix)
    if not rows:
        return '<p class="muted">None.</p>'
    e = html.escape
    total = len(columns) > 1  # a row's total, where there is more than one column to add up
    head = "".join(f'<th class="n">{e(c)}</th>' for c in columns) + (
        '<th class="n">Total</th>' if total else ""
    )
    body = "".join(
        f"<tr><th>{e(r)}</th>" + "".join(f'<td class="n">{n or ""}</td>' for n in values)
        + (f'<td class="n"><b>{sum(values)}</b></td>' if total else "") + "</tr>"
        for r, values in rows
    )  # fmt: skip
    return f"<table><tr><th>{e(row_head)}</th>{head}</tr>{body}</table>"


def when(value: Any) -> str:
    """An ISO 8601 time of the log as people read it: "16 Nov 2026, 08:30" (UTC); "—" if none."""
    if not value:
        return "—"
    try:
        t = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(dt.UTC)
    except ValueError:
        return str(value)
    return f"{t.day} {t:%b %Y, %H:%M}"


def _moves(change: Mapping[str, Any]) -> str:
    """ "left moratorium; entered ..." for a sector change across a deny rule's sectors."""
    return "; ".join(
        f"{verb} {', '.join(change.get(key) or [])}"
        for verb, key in (("left", "DenyRulesLeft"), ("entered", "DenyRulesEntered"))
        if change.get(key)
    )


def report_html(
    report: Mapping[str, Any], svgs: Mapping[str, str], *, generated: str, policy_hash: str
) -> str:
    """One self-contained, printable HTML page of the report (no script, nothing fetched)."""
    e = html.escape
    period = f"{when(report.get('From'))} to {when(report.get('To'))}"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>facewarden transparency report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Transparency report</h1>",
        f"<p>What this facewarden installation did, for whom, and what it refused: every decision in its "
        f"audit log from {e(period)} (UTC){', counted from ' + e(when(report['Since'])) if report.get('Since') else ''}. "
        f"Generated {e(when(generated))} (UTC); policy in force sha256 <code>{e(policy_hash)}</code>.</p>",
        '<div class="figures">',
        *(f'<div class="figure"><b>{n}</b>{e(label)}</div>' for label, n in headline(report)),
        "</div>",
        f'<p class="muted">The console\'s own reads to draw its pages ({int(report.get("ConsoleReads", 0))}) '
        "are not counted above.</p>",
    ]
    built_in = built_in_lines(report)
    if built_in:
        parts.append("<h2>Safeguards built into the code (in force whatever the policy file says)</h2><ul>")
        parts += [f"<li>{e(line)}</li>" for line in built_in]
        parts.append("</ul>")
    collections = report.get("Collections")
    if isinstance(collections, Mapping):
        parts.append("<h2>Collections by consent mode (now)</h2>")
        parts.append(
            '<table><tr><th>Consent mode</th><th class="n">Collections</th><th class="n">Faces</th></tr>'
        )
        parts += [
            f'<tr><th>{e(CONSENT_MODES.get(str(mode), str(mode)))}</th><td class="n">{int(row.get("Collections", 0))}</td>'
            f'<td class="n">{int(row.get("Faces", 0))}</td></tr>'
            for mode, row in collections.items()
        ]
        parts.append("</table>")
    parts.append("<h2>Over time (per UTC day)</h2>")  # (each chart has its title)
    parts += [f'<div class="chart">{svgs.get(name, "")}</div>' for name in CHARTS]
    denials = report.get("DenialsByRule") or {}
    parts.append("<h2>Denials by rule</h2>")
    parts.append(_table("Rule", {r: {"Denials": int(n)} for r, n in denials.items()}))
    for title, row_head, _col, matrix in matrices(report):
        parts += [f"<h2>{e(title)}</h2>", _table(row_head, matrix)]
    release = report.get("FootageRelease")
    if isinstance(release, Mapping):
        parts.append(
            f'<p class="muted">Items released {int(release.get("ItemsReleased", 0))}, downloaded '
            f"{int(release.get('ItemsDownloaded', 0))}; faces redacted {int(release.get('FacesRedacted', 0))}, "
            f"kept visible (consenting) {int(release.get('FacesKeptVisible', 0))}.</p>"
        )
    sector_changes = report.get("SectorChanges")
    if sector_changes is not None:
        parts.append("<h2>Sector changes</h2>")
        if sector_changes:
            parts.append(
                "<table><tr><th>Time (UTC)</th><th>Organisation</th><th>From</th><th>To</th><th>Deny rules</th></tr>"
            )
            parts += [
                f"<tr><td>{e(when(c.get('Time')))}</td><td>{e(str(c.get('Organization') or ''))}</td>"
                f"<td>{e(str(c.get('From') or ''))}</td><td>{e(str(c.get('To') or ''))}</td>"
                f"<td>{e(_moves(c))}</td></tr>"
                for c in sector_changes
            ]
            parts.append("</table>")
        else:
            parts.append('<p class="muted">None.</p>')
    changes = report.get("PolicyChanges") or []
    parts.append("<h2>Policy changes</h2>")
    if changes:
        parts.append("<table><tr><th>Time (UTC)</th><th>Policy</th><th>Version</th><th>SHA-256</th></tr>")
        parts += [
            f"<tr><td>{e(when(c.get('Time')))}</td><td>{e(str(c.get('name', '')))}</td>"
            f"<td>{e(str(c.get('version', '')))}</td><td><code>{e(str(c.get('PolicyHash', '')))}</code></td></tr>"
            for c in changes
        ]
        parts.append("</table>")
    else:
        parts.append('<p class="muted">None.</p>')
    parts.append("</body></html>\n")
    return "\n".join(parts)
