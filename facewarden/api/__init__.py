"""HTTP only: the Rekognition wire protocol, the native REST API (/v1, OpenAPI at /docs) and the
web console (/console), all in one ASGI app over one :class:`~facewarden.service.Service`.

    app = create_app(service)          # any ASGI server, or the test client
    serve(service, port=8750)          # uvicorn; on SIGINT/SIGTERM finishes in-flight requests,
                                       # then service.close() flushes and closes the audit log
"""

from __future__ import annotations

import logging
import math
import signal
import threading

from fastapi import FastAPI

from ..service import Service
from .auth import KeyLookup, service_key_lookup

__all__ = ["create_app", "serve"]

log = logging.getLogger("facewarden.api")


def create_app(service: Service, *, keys: KeyLookup | None = None) -> FastAPI:
    """The facewarden HTTP app over ``service``.

    ``keys`` maps an access key id to ``(secret, principal)``; by default the service's own key
    store (policy layer) is asked.
    """
    from . import console, health, metrics, openapi, rekognition, rest

    lookup = keys or service_key_lookup(service)
    app = FastAPI(
        title="facewarden",
        version=_version(),
        summary="Self-hosted face recognition, wire-compatible with Amazon Rekognition.",
        description=openapi.DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.service = service
    app.state.keys = lookup
    health.mount(app, service)
    app.state.metrics = metrics.mount(app, service)
    rekognition.mount(app, service, lookup)
    rest.mount(app, service, lookup)
    console.mount(app)
    return app


def serve(
    service: Service,
    host: str = "127.0.0.1",
    port: int = 8750,
    *,
    keys: KeyLookup | None = None,
    log_level: str = "info",
    graceful_timeout_s: float = 30.0,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    sweep_every_s: float | None = None,
) -> None:
    """Serve ``service`` over HTTP (HTTPS with ``ssl_certfile`` and ``ssl_keyfile``, uvicorn's TLS)
    until SIGINT/SIGTERM.

    While it serves, the service's periodic duties (the retention sweep) run on a timer (every
    ``sweep_every_s`` seconds, default each duty's period: hourly). On a signal uvicorn stops accepting connections and lets in-flight requests finish
    (up to ``graceful_timeout_s``); then ``service.close()`` runs, which stops the sweeps and
    flushes and closes the audit log.
    """
    import uvicorn

    app = create_app(service, keys=keys)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=math.ceil(graceful_timeout_s),
        server_header=False,
        proxy_headers=False,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has drained; make SIGTERM's re-raise an
    # exception (like SIGINT's KeyboardInterrupt) so that service.close() below still runs.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_system_exit)
    for duty in service.duties.values():
        duty.start(sweep_every_s)
    try:
        server.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        service.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("facewarden")
    except Exception:  # noqa: BLE001 - not installed (source tree)
        return "0"
