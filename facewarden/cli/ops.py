"""Running it: backup, restore, key rotation (the installation's keys and access keys)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import InvalidInput
from ..service import keys as key_ops
from ..service import recovery
from ..service.params import to_wire
from . import App, main, pass_app
from .admin import key as key_group


def _passphrase(path: str | None, confirm: bool) -> str:
    """From --passphrase-file (its first line), else asked for on the terminal (not echoed)."""
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise InvalidInput(f"Cannot read the passphrase file {path}: {exc.strerror}.") from None
        phrase = text.splitlines()[0] if text.strip() else ""
    else:
        phrase = click.prompt("Backup passphrase", hide_input=True, confirmation_prompt=confirm)
    if len(phrase) < 12:
        raise InvalidInput("The backup passphrase must be at least 12 characters.")
    return phrase


PASSPHRASE_HELP = "A file whose first line is the passphrase (default: asked for on the terminal)."


@main.command()
@click.argument("dest", type=click.Path(dir_okay=False))
@click.option("--passphrase-file", default=None, type=click.Path(dir_okay=False), help=PASSPHRASE_HELP)
@pass_app
def backup(app: App, dest: str, passphrase_file: str | None) -> None:
    """Write an encrypted backup of this installation to DEST while it runs.

    Holds a consistent copy of the database (SQLite's online backup; PostgreSQL: pg_dump), the key
    files, the policy and the erasure journal, with a manifest of SHA-256 hashes; sealed with a
    passphrase (scrypt, AES-256-GCM). Audited as CreateBackup.
    """
    phrase = _passphrase(passphrase_file, confirm=passphrase_file is None)
    m = recovery.backup(app.service, app.principal, Path(dest), phrase)
    out = {
        "Backup": dest,
        "Installation": m.installation,
        "Database": m.dialect,
        "AuditHead": m.audit_head[0],
        "Files": len(m.files),
        "Created": m.created,
    }
    app.emit(out, lambda o: click.echo(
        f"backup of installation {m.installation} written to {dest}: {m.dialect} database, {len(m.files)} "
        f"files, audit log up to record {m.audit_head[0]}. Keep the passphrase apart from it."
    ))  # fmt: skip


@main.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.option("--passphrase-file", default=None, type=click.Path(dir_okay=False), help=PASSPHRASE_HELP)
@click.option(
    "--erasures",
    "erasure_logs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="An erasure journal or audit export (JSON lines) of the lost installation: erasures it records "
    "after the backup are made again. Repeatable. The configured erasure journal is always read.",
)
@pass_app
def restore(app: App, src: str, passphrase_file: str | None, erasure_logs: tuple[str, ...]) -> None:
    """Restore the backup SRC into an empty data directory (and an empty database).

    The backup is checked whole first (passphrase, every block, every file's hash): a tampered,
    truncated or incomplete backup is refused and nothing is written. The restored audit log must
    verify; erasures made after the backup are replayed from the erasure journal and any --erasures
    file. With a restored data directory, --erasures alone replays erasures found later.
    """
    data_dir = app.settings.data_dir
    if erasure_logs and (data_dir / "keys" / "audit_ed25519.pub").exists():
        # an installation is here already: replay erasures into it (e.g. a journal found later)
        r = recovery.replay_erasures(app.service, [Path(p) for p in erasure_logs])
        out = {"Replayed": r.replayed, "Already": r.already, "Rejected": [list(x) for x in r.rejected]}
        app.emit(out, lambda o: click.echo(
            f"{len(r.replayed)} erasures replayed, {r.already} already applied, {len(r.rejected)} rejected"
        ))  # fmt: skip
        return
    phrase = _passphrase(passphrase_file, confirm=False)
    res = recovery.restore(app.settings, Path(src), phrase, [Path(p) for p in erasure_logs])
    out = {
        "Installation": res.manifest.installation,
        "BackupCreated": res.manifest.created,
        "AuditHead": res.head[0],
        "AuditVerify": res.verify,
        "ErasuresReplayed": res.replay.replayed,
        "ErasuresAlreadyInBackup": res.replay.already,
        "ErasuresRejected": [list(x) for x in res.replay.rejected],
        "ErasureSources": res.sources,
        "Warning": res.warning,
    }

    def human(o: object) -> None:
        click.echo(
            f"restored installation {res.manifest.installation} (backup of {res.manifest.created}) into "
            f"{data_dir}; audit log verified ({res.verify['Records']} records)."
        )
        click.echo(
            f"erasures after the backup: {len(res.replay.replayed)} replayed, {res.replay.already} already in "
            f"it, {len(res.replay.rejected)} rejected (sources: {', '.join(res.sources) or 'none'})"
        )
        for item in res.replay.replayed:
            click.echo(f"  replayed record {item['seq']} ({item['operation']})")
        if res.warning:
            click.echo(f"WARNING: {res.warning}", err=True)

    app.emit(out, human)


@main.group()
def keys() -> None:
    """The installation's own keys (API-secret encryption, audit signing)."""


@keys.command("rotate")
@click.argument("which", type=click.Choice(["secrets", "audit-signing"]))
@pass_app
def keys_rotate(app: App, which: str) -> None:
    """Rotate the secret-encryption key (every stored secret re-encrypted) or the audit signing key
    (old records and checkpoints still verify with the retired public key). Audited. With several
    machines, copy DATA_DIR/keys to the others afterwards."""
    if which == "secrets":
        d = key_ops.rotate_secrets(app.service, app.principal)
        app.emit(d, lambda o: click.echo(
            f"secret-encryption key rotated: {d['secrets_reencrypted']} secrets re-encrypted with key "
            f"{d['fingerprint']} (retired {d['retired']})"
        ))  # fmt: skip
    else:
        r = key_ops.rotate_audit_signing(app.service, app.principal)
        d = r["details"]
        app.emit({"Record": r["seq"], "Fingerprint": d["new_fingerprint"], "Retired": d["retired_fingerprint"]},
                 lambda o: click.echo(
            f"audit signing key rotated at record {r['seq']}: now {d['new_fingerprint']}, retired "
            f"{d['retired_fingerprint']} (kept in keys/audit_ed25519.history and in the log)"
        ))  # fmt: skip


@key_group.command("rotate")
@click.argument("key_id", required=False)
@click.option(
    "--overlap",
    type=click.IntRange(0, 30 * 86_400),
    default=86_400,
    show_default=True,
    help="Seconds the old key keeps working beside the new one.",
)
@pass_app
def key_rotate(app: App, key_id: str | None, overlap: int) -> None:
    """Rotate an access key (default: the one acting): a new key now, the old one expires after --overlap."""
    r = app.run(key_ops.rotate_key, key_ops.RotateKeyRequest(key_id, overlap))
    if app.json:
        click.echo(json.dumps(to_wire(r)))
        return
    k, old = r.access_key, r.retiring_key
    click.echo(
        f"AccessKeyId:     {k['AccessKeyId']}\nSecretAccessKey: {k['SecretAccessKey']}\n"
        f"(the secret is not shown again; {old['AccessKeyId']} keeps working until {old['ExpiresAt']:.0f})"
    )
