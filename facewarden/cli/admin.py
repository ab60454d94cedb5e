"""Organisations, keys, policy, consent, data-subject rights, the audit log and the transparency report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from ..service import OPERATIONS
from ..service import admin as admin_ops
from ..service import consent as consent_ops
from ..service import retention as retention_ops
from ..service.params import Empty, Time, to_wire
from . import App, When, main, pass_app
from .gallery import _table


# ---- organisations and keys ----------------------------------------------------------------------
@main.group()
def org() -> None:
    """Organisations and their declared sectors."""


@org.command("create")
@click.argument("name")
@click.option(
    "--sector",
    required=True,
    help="Declared sector: commercial, education, healthcare, research, nonprofit, "
    "government, law_enforcement, immigration_enforcement, ...",
)
@click.option("--description", default="")
@pass_app
def org_create(app: App, name: str, sector: str, description: str) -> None:
    r = app.run(admin_ops.create_organization, admin_ops.CreateOrganizationRequest(name, sector, description))
    app.emit(r, lambda r: click.echo(f"created organisation {name} (sector: {sector})"))


@org.command("set-sector")
@click.argument("name")
@click.argument("sector")
@pass_app
def org_set_sector(app: App, name: str, sector: str) -> None:
    """Change the declared sector of organisation NAME (audited). The sector is what the moratorium
    decides on: a move into or out of law_enforcement or immigration_enforcement is flagged in the
    audit log and listed in the transparency report."""
    r = app.run(admin_ops.set_organization_sector, admin_ops.SetOrganizationSectorRequest(name, sector))

    def human(r: admin_ops.SetOrganizationSectorResult) -> None:
        click.echo(f"{name}: sector {r.previous_sector} -> {sector} (recorded in the audit log)")
        if r.rules_entered:
            click.echo(f"NOTE: {name}'s keys now fall under rule(s) {', '.join(r.rules_entered)}.")
        if r.rules_left:
            click.echo(f"NOTE: {name}'s keys no longer fall under rule(s) {', '.join(r.rules_left)}.")

    app.emit(r, human)


@org.command("list")
@pass_app
def org_list(app: App) -> None:
    r = app.run(admin_ops.list_organizations, Empty())
    app.emit(r, lambda r: _table(r.organizations, ["Name", "Sector", "Owner", "CreatedAt"], ("CreatedAt",)))


@main.group()
def key() -> None:
    """Access keys: bound to an organisation, a declared purpose and optionally to collections."""


@key.command("create")
@click.option("--org", "org_name", required=True)
@click.option(
    "--purpose",
    required=True,
    help="photo_organisation, access_control, identity_verification, research_audit, ...",
)
@click.option("--collections", default=None, help="Comma-separated collections this key is limited to.")
@click.option("--expires", type=When(), default=None, help="Expiry date (ISO 8601, e.g. 2027-01-31).")
@click.option("--description", default="")
@pass_app
def key_create(
    app: App, org_name: str, purpose: str, collections: str | None, expires: Time | None, description: str
) -> None:
    """Create a key; its secret is printed once."""
    req = admin_ops.CreateKeyRequest(
        org_name,
        purpose,
        [c.strip() for c in collections.split(",") if c.strip()] if collections else None,
        expires,
        description,
    )
    k = app.run(admin_ops.create_key, req).access_key
    if app.json:
        click.echo(json.dumps({"AccessKeyId": k["AccessKeyId"], "SecretAccessKey": k["SecretAccessKey"]}))
    else:
        click.echo(
            f"AccessKeyId:     {k['AccessKeyId']}\nSecretAccessKey: {k['SecretAccessKey']}\n"
            f"(purpose {k['Purpose']}, organisation {k['Organization']}; the secret is not shown again)"
        )


@key.command("list")
@pass_app
def key_list(app: App) -> None:
    r = app.run(admin_ops.list_keys, admin_ops.ListKeysRequest())
    app.emit(
        r,
        lambda r: _table(
            r.keys,
            ["AccessKeyId", "Organization", "Sector", "Purpose", "Collections", "ExpiresAt", "Status"],
            ("ExpiresAt",),
        ),
    )


@key.command("revoke")
@click.argument("key_id")
@pass_app
def key_revoke(app: App, key_id: str) -> None:
    app.emit(
        app.run(admin_ops.revoke_key, admin_ops.RevokeKeyRequest(key_id)),
        lambda r: click.echo(f"revoked {key_id}"),
    )


# ---- policy ------------------------------------------------------------------------------------------
@main.group()
def policy() -> None:
    """The use policy in force (a versioned TOML file; every change is in the audit log)."""


@policy.command("show")
@pass_app
def policy_show(app: App) -> None:
    p = app.run(admin_ops.describe_policy, Empty()).policy
    app.emit(p, lambda p: click.echo(f"{builtin_summary(p['BuiltIn'])}\n# {p['Name']} (version {p['Version']}, "
                                     f"sha256 {p['Sha256']})\n{p['Text']}"))  # fmt: skip


def builtin_summary(b: dict[str, Any]) -> str:
    """The built-in safeguards in force, as comment lines above the policy file."""
    lines = ["# Built into facewarden, in force whatever the file says (a file may only tighten them):"]
    for r in b["Rules"]:
        who = ", ".join(r["Sectors"] or []) or "every sector"
        if r["Purposes"]:
            who += " with purposes " + ", ".join(r["Purposes"])
        ex = "; exempt: " + ", ".join(e["Name"] for e in r["Exemptions"]) if r["Exemptions"] else ""
        lines.append(f"#   {r['Id']}: {', '.join(r['Operations'])} denied to {who}, indefinitely{ex}")
    lines.append(f"#   floors: {', '.join(f'{k} {v:g}' for k, v in b['Floors'].items())}, "
                 f"other purposes {b['NewPurposeFloor']:g}")  # fmt: skip
    lines.append("#   quotas: " + ", ".join(f"{q['Id']} {q['PerKeyPerDay']}/key/day" for q in b["Quotas"]))
    h = b["Household"]
    lines.append(
        f"#   max_expected_false_matches <= {b['MaxExpectedFalseMatchesCeiling']:g}"
        + "".join(f", {k} <= {v:g}" for k, v in b.get("PurposeMaxExpectedFalseMatchesCeilings", {}).items())
        + "; household collections: "
        f"sector {h['Sector']} only, {', '.join(h['Purposes'])} keys, at most {h['MaxFaces']} faces"
    )
    return "\n".join(lines)


@policy.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@pass_app
def policy_check(app: App, file: str) -> None:
    """Validate FILE without applying it (a file that would weaken a built-in safeguard is refused)."""
    r = app.run(admin_ops.check_policy, admin_ops.CheckPolicyRequest(Path(file).read_text(), file))
    app.emit(r, lambda r: click.echo(f"{file}: valid (version {r.version}, sha256 {r.sha256})"))


@policy.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@pass_app
def policy_apply(app: App, file: str) -> None:
    """Put FILE in force (recorded in the audit log with its hash)."""
    r = app.run(admin_ops.apply_policy, admin_ops.ApplyPolicyRequest(Path(file).read_text()))
    app.emit(
        r,
        lambda r: click.echo(("applied" if r.changed else "unchanged") + f": sha256 {r.policy['Sha256']}"),
    )


@main.command()
@pass_app
def operations(app: App) -> None:
    """The operations this installation offers, each with its kind (what policy decides on)."""
    rows = [
        {
            "Operation": name,
            "Kind": op.kind.value,
            "Route": f"{op.rest.method} {op.rest.path}" if op.rest else f"POST /v1/operations/{name}",
        }
        for name, op in sorted(OPERATIONS.items(), key=lambda kv: (kv[1].kind.value, kv[0]))
    ]
    app.emit({"Operations": rows}, lambda r: _table(rows, ["Kind", "Operation", "Route"]))


# ---- consent and data-subject rights --------------------------------------------------------------------
@main.group()
def consent() -> None:
    """The consent register: no face is enrolled without it."""


@consent.command("grant")
@click.argument("subject")
@click.option("--collection", "collection_id", required=True)
@click.option(
    "--evidence", required=True, help="Where the signed consent is kept (a reference, not the document)."
)
@click.option(
    "--expires",
    type=When(),
    default=None,
    help="Expiry date (ISO 8601); an expired consent counts as withdrawn.",
)
@pass_app
def consent_grant(app: App, subject: str, collection_id: str, evidence: str, expires: Time | None) -> None:
    req = consent_ops.GrantConsentRequest(subject, evidence, collection_id, expires)
    app.emit(
        app.run(consent_ops.grant_consent, req),
        lambda r: click.echo(f"consent recorded for {subject} in {collection_id}"),
    )


@consent.command("list")
@click.option("--collection", "collection_id", default=None)
@pass_app
def consent_list(app: App, collection_id: str | None) -> None:
    r = app.run(
        consent_ops.list_consents, consent_ops.ListConsentsRequest(collection_id=collection_id or None)
    )
    app.emit(
        r,
        lambda r: _table(
            r.consents,
            ["Subject", "CollectionId", "Evidence", "GrantedAt", "ExpiresAt", "WithdrawnAt"],
            ("GrantedAt", "ExpiresAt", "WithdrawnAt"),
        ),
    )


@consent.command("withdraw")
@click.argument("subject")
@click.option("--collection", "collection_id", required=True)
@pass_app
def consent_withdraw(app: App, subject: str, collection_id: str) -> None:
    """Withdraw consent: the subject's templates in the collection are erased at once."""
    r = app.run(consent_ops.withdraw_consent, consent_ops.WithdrawConsentRequest(subject, collection_id))
    app.emit(r, lambda r: click.echo(f"withdrawn; {r.faces_erased} face(s) erased"))


@main.group()
def subject() -> None:
    """Data-subject rights: what is held about a person, and erasure."""


@subject.command("export")
@click.argument("subject_id")
@click.option("--include-templates", is_flag=True, help="Also export the biometric templates (audited).")
@pass_app
def subject_export(app: App, subject_id: str, include_templates: bool) -> None:
    r = app.run(admin_ops.export_subject, admin_ops.ExportSubjectRequest(subject_id, include_templates))
    click.echo(json.dumps(to_wire(r), indent=None if app.json else 1, default=str))


@subject.command("erase")
@click.argument("subject_id")
@pass_app
def subject_erase(app: App, subject_id: str) -> None:
    r = app.run(admin_ops.erase_subject, admin_ops.EraseSubjectRequest(subject_id))
    app.emit(
        r,
        lambda r: click.echo(
            f"erased {r.faces_erased} face(s) and {r.consents_erased} consent record(s) of {subject_id}"
        ),
    )


# ---- audit and transparency -----------------------------------------------------------------------------------
@main.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@pass_app
def audit_verify(app: App) -> None:
    """Exit 0 if the log is intact, 1 naming the first bad record if not."""
    r = app.run(admin_ops.verify_audit, Empty())

    def human(r: admin_ops.VerifyAuditResult) -> None:
        if r.ok:
            click.echo(f"audit log intact: {r.records} records")
        else:
            click.echo(f"audit log BROKEN at sequence {r.first_bad_sequence}: {r.kind}: {r.problem}")

    app.emit(r, human)
    if not r.ok:
        raise click.exceptions.Exit(1)


@audit.command("export")
@click.option("--since", type=When(), default=None, help="From this date or time on (ISO 8601, UTC).")
@click.option("--until", type=When(), default=None, help="Before this date or time.")
@click.option("--subject", "subject_id", default=None, help="A data subject's id, or pseudonym (subj-...).")
@click.option("--decision", type=click.Choice(["allowed", "denied", "failed", "recorded"]), default=None)
@click.option("--rule", default=None, help="The rule that decided, e.g. moratorium.")
@click.option("--operation", default=None, help="e.g. SearchFacesByImage.")
@click.option("--org", "organization", default=None, help="The calling organisation.")
@click.option("--key", "access_key_id", default=None, help="The access key id.")
@click.option("--collection", default=None)
@click.option("--hide-console-reads", is_flag=True, help="Leave out the web console's own reads.")
@pass_app
def audit_export(
    app: App,
    since: Time | None,
    until: Time | None,
    subject_id: str | None,
    decision: str | None,
    rule: str | None,
    operation: str | None,
    organization: str | None,
    access_key_id: str | None,
    collection: str | None,
    hide_console_reads: bool,
) -> None:
    """The records as JSON lines (all of them, or those the options select)."""
    pseudonym = subject_id if subject_id and subject_id.startswith("subj-") else None
    req = admin_ops.ExportAuditRequest(
        since,
        None if pseudonym else subject_id or None,
        until=until,
        decision=decision,
        rule=rule,
        operation=operation,
        organization=organization,
        access_key_id=access_key_id,
        collection=collection,
        subject_ref=pseudonym,
        hide_console_reads=hide_console_reads,
    )
    while True:  # a page at a time, so that a long log streams
        page = app.run(admin_ops.export_audit, req)
        for line in page.lines:
            click.echo(line)
        if page.next_token is None:
            return
        req = dataclasses.replace(req, next_token=page.next_token)


@main.group()
def retention() -> None:
    """Erase what retention periods and expired consents no longer allow (already hidden from reads)."""


@retention.command("sweep")
@pass_app
def retention_sweep(app: App) -> None:
    """Run the retention sweep now (`facewarden serve` also runs it on a timer)."""
    r = app.run(retention_ops.run_retention_sweep, Empty())
    app.emit(r, lambda r: click.echo(", ".join(f"{k}: {v}" for k, v in r.sweep.items())))


@main.group()
def report() -> None:
    """Reports for the public and the regulator."""


@report.command("transparency")
@click.option("--since", type=When(), default=None, help="ISO date.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "html", "csv"]),
    default="json",
    help="json (the figures), html (a printable page with its charts, for a regulator) or csv.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write to this file."
)
@pass_app
def report_transparency(app: App, since: Time | None, fmt: str, out: Path | None) -> None:
    """Operations by purpose, sector and organisation, denials by rule, per day."""
    if fmt == "json":
        r = app.run(admin_ops.get_transparency_report, admin_ops.TransparencyReportRequest(since)).report
        text = json.dumps(r, indent=None if app.json else 1, default=str) + "\n"
    else:
        req = admin_ops.ExportTransparencyReportRequest(fmt, since)
        text = app.run(admin_ops.export_transparency_report, req).document
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)
        click.echo(f"wrote {out}", err=True)
