"""Health and readiness probes: ``GET /healthz`` and ``GET /readyz``, without authentication.

* ``/healthz``: the process is up and answering (a container's HEALTHCHECK, a liveness probe).
* ``/readyz``: the process can do its work: the database answers, the default detector, the face
  model and its calibration are loaded (the first call loads them), and the audit log's head can be read. 200
  when all are, 503 naming the check that is not.

Neither reveals data: each check answers ``ok`` or ``unavailable``; why is logged by the server.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ..service import Service
from ..service.health import readiness

log = logging.getLogger("facewarden.api")


def mount(app: FastAPI, service: Service) -> None:
    @app.get("/healthz", tags=["monitoring"], summary="Is the process up?")
    def healthz() -> JSONResponse:
        return JSONResponse({"Status": "ok"}, headers={"Cache-Control": "no-store"})

    @app.get("/readyz", tags=["monitoring"], summary="Can it serve: database, models, audit log?")
    def readyz() -> JSONResponse:
        checks = readiness(service)
        for name, problem in checks.items():
            if problem is not None:
                log.warning("readiness check %s failed: %s", name, problem)
        ok = all(p is None for p in checks.values())
        return JSONResponse(
            {
                "Status": "ready" if ok else "unavailable",
                "Checks": {name: "ok" if p is None else "unavailable" for name, p in checks.items()},
            },
            status_code=200 if ok else 503,
            headers={"Cache-Control": "no-store"},
        )
