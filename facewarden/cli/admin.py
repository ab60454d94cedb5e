"""Organisations, keys, policy, consent, data-subject rights, the audit log and the transparency report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from . import App, main, pass_app
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
    r = app.call("CreateOrganization", {"Name": name, "Sector": sector, "Description": description})
    app.emit(r, lambda r: click.echo(f"created organisation {name} (sector: {sector})"))


@org.command("list")
@pass_app
def org_list(app: App) -> None:
    r = app.call("ListOrganizations", {})
    app.emit(r, lambda r: _table(r["Organizations"], ["Name", "Sector", "Owner", "CreatedAt"]))


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
@click.option("--expires", default=None, help="Expiry date (ISO 8601, e.g. 2027-01-31).")
@click.option("--description", default="")
@pass_app
def key_create(
    app: App, org_name: str, purpose: str, collections: str | None, expires: str | None, description: str
) -> None:
    """Create a key; its secret is printed once."""
    req: dict[str, Any] = {"Organization": org_name, "Purpose": purpose, "Description": description}
    if collections:
        req["Collections"] = [c.strip() for c in collections.split(",") if c.strip()]
    if expires:
        req["ExpiresAt"] = expires
    k = app.call("CreateKey", req)["AccessKey"]
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
    r = app.call("ListKeys", {})
    app.emit(
        r,
        lambda r: _table(
            r["Keys"],
            ["AccessKeyId", "Organization", "Sector", "Purpose", "Collections", "ExpiresAt", "RevokedAt"],
        ),
    )


@key.command("revoke")
@click.argument("key_id")
@pass_app
def key_revoke(app: App, key_id: str) -> None:
    app.emit(app.call("RevokeKey", {"AccessKeyId": key_id}), lambda r: click.echo(f"revoked {key_id}"))


# ---- policy ------------------------------------------------------------------------------------------
@main.group()
def policy() -> None:
    """The use policy in force (a versioned TOML file; every change is in the audit log)."""


@policy.command("show")
@pass_app
def policy_show(app: App) -> None:
    p = app.call("DescribePolicy", {})["Policy"]
    app.emit(
        p, lambda p: click.echo(f"# {p['Name']} (version {p['Version']}, sha256 {p['Sha256']})\n{p['Text']}")
    )


@policy.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@pass_app
def policy_check(app: App, file: str) -> None:
    """Validate FILE without applying it."""
    from ..policy.rules import Policy

    p = Policy.parse(Path(file).read_text(), source=file)
    app.emit(
        {"Valid": True, "Version": p.version, "Sha256": p.sha256},
        lambda r: click.echo(f"{file}: valid (version {p.version})"),
    )


@policy.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@pass_app
def policy_apply(app: App, file: str) -> None:
    """Put FILE in force (recorded in the audit log with its hash)."""
    r = app.call("ApplyPolicy", {"Policy": Path(file).read_text()})
    app.emit(
        r,
        lambda r: click.echo(
            ("applied" if r["Changed"] else "unchanged") + f": sha256 {r['Policy']['Sha256']}"
        ),
    )


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
    "--expires", default=None, help="Expiry date (ISO 8601); an expired consent counts as withdrawn."
)
@pass_app
def consent_grant(app: App, subject: str, collection_id: str, evidence: str, expires: str | None) -> None:
    req: dict[str, Any] = {"Subject": subject, "CollectionId": collection_id, "Evidence": evidence}
    if expires:
        req["ExpiresAt"] = expires
    app.emit(
        app.call("GrantConsent", req),
        lambda r: click.echo(f"consent recorded for {subject} in {collection_id}"),
    )


@consent.command("list")
@click.option("--collection", "collection_id", default=None)
@pass_app
def consent_list(app: App, collection_id: str | None) -> None:
    r = app.call("ListConsents", {"CollectionId": collection_id} if collection_id else {})
    app.emit(
        r,
        lambda r: _table(
            r["Consents"], ["Subject", "CollectionId", "Evidence", "GrantedAt", "ExpiresAt", "WithdrawnAt"]
        ),
    )


@consent.command("withdraw")
@click.argument("subject")
@click.option("--collection", "collection_id", required=True)
@pass_app
def consent_withdraw(app: App, subject: str, collection_id: str) -> None:
    """Withdraw consent: the subject's templates in the collection are erased at once."""
    r = app.call("WithdrawConsent", {"Subject": subject, "CollectionId": collection_id})
    app.emit(r, lambda r: click.echo(f"withdrawn; {r.get('FacesErased', 0)} face(s) erased"))


@main.group()
def subject() -> None:
    """Data-subject rights: what is held about a person, and erasure."""


@subject.command("export")
@click.argument("subject_id")
@click.option("--include-templates", is_flag=True, help="Also export the biometric templates (audited).")
@pass_app
def subject_export(app: App, subject_id: str, include_templates: bool) -> None:
    r = app.call("ExportSubject", {"Subject": subject_id, "IncludeTemplates": include_templates})
    click.echo(json.dumps(r, indent=None if app.json else 1, default=str))


@subject.command("erase")
@click.argument("subject_id")
@pass_app
def subject_erase(app: App, subject_id: str) -> None:
    r = app.call("EraseSubject", {"Subject": subject_id})
    app.emit(
        r,
        lambda r: click.echo(
            f"erased {r['FacesErased']} face(s) and {r['ConsentsErased']} consent record(s) of {subject_id}"
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
    r = app.call("VerifyAudit", {})

    def human(r: dict[str, Any]) -> None:
        if r["Ok"]:
            click.echo(f"audit log intact: {r.get('Records')} records")
        else:
            click.echo(
                f"audit log BROKEN at sequence {r.get('FirstBadSequence')}: "
                f"{r.get('Kind')}: {r.get('Problem')}"
            )

    app.emit(r, human)
    if not r["Ok"]:
        raise click.exceptions.Exit(1)


@audit.command("export")
@click.option("--since", default=None, help="ISO date or time.")
@click.option("--subject", "subject_id", default=None)
@pass_app
def audit_export(app: App, since: str | None, subject_id: str | None) -> None:
    """The records as JSON lines."""
    req: dict[str, Any] = {}
    if since:
        req["Since"] = since
    if subject_id:
        req["Subject"] = subject_id
    while True:  # a page at a time, so that a long log streams
        page = app.call("ExportAudit", req)
        for line in page["Lines"]:
            click.echo(line)
        if "NextToken" not in page:
            return
        req["NextToken"] = page["NextToken"]


@main.group()
def report() -> None:
    """Reports for the public and the regulator."""


@report.command("transparency")
@click.option("--since", default=None, help="ISO date.")
@pass_app
def report_transparency(app: App, since: str | None) -> None:
    """Operations by purpose and sector, denials by rule."""
    r = app.call("GetTransparencyReport", {"Since": since} if since else {})["Report"]
    click.echo(json.dumps(r, indent=None if app.json else 1, default=str))
