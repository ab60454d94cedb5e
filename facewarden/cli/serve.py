"""`facewarden serve`: the HTTP service (Rekognition wire protocol, REST API, web console)."""

from __future__ import annotations

import json

import click

from ..errors import ResourceNotFound
from ..service.jobs import worker_pool
from . import App, main, pass_app


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8750, show_default=True, type=click.IntRange(1, 65535))
@click.option("--init-org", default=None, help="On first start, initialise with this owner organisation.")
@click.option("--init-sector", default=None, help="On first start, the owner organisation's declared sector.")
@pass_app
def serve(app: App, host: str, port: int, init_org: str | None, init_sector: str | None) -> None:
    """Serve the HTTP API and the web console."""
    from ..api import serve as run

    svc = app.service
    try:
        svc.owner_principal()
    except ResourceNotFound:
        if not (init_org and init_sector):
            raise click.UsageError(
                "not initialised: run `facewarden init --org-name NAME --sector SECTOR` first "
                "(or pass --init-org and --init-sector)"
            ) from None
        principal, secret = svc.init_owner(init_org, init_sector)
        key_file = app.settings.data_dir / "owner-key.json"
        key_file.write_text(json.dumps({"AccessKeyId": principal.key_id, "SecretAccessKey": secret}) + "\n")
        key_file.chmod(0o600)
        click.echo(f"Initialised {app.settings.data_dir} for {init_org} (declared sector: {init_sector}).")
        click.echo(f"Owner key (shown once; a copy readable only by you is in {key_file}):")
        click.echo(f"  AccessKeyId={principal.key_id}\n  SecretAccessKey={secret}")
    click.echo(
        f"facewarden on http://{host}:{port}/  (console: http://{host}:{port}/console, API docs: /docs)"
    )
    workers = app.settings.job_workers
    pool = worker_pool(svc, workers).start() if workers > 0 else None
    if pool is not None:
        click.echo(f"{workers} job worker(s) running video jobs (FACEWARDEN_JOB_WORKERS)")
    try:
        run(svc, host=host, port=port)
    finally:
        if pool is not None:
            pool.stop()
