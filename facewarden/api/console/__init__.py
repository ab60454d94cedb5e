"""The web console: one static page (HTML + JS + CSS, no build step, nothing fetched from the
internet) over the /v1 API, served at /console."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

HERE = Path(__file__).parent
#: Content-Security-Policy: the console loads only its own files and talks only to this server.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def mount(app: FastAPI) -> None:
    @app.get("/console", include_in_schema=False)
    def console() -> Response:
        return FileResponse(
            HERE / "index.html", headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"}
        )

    @app.get("/console/", include_in_schema=False)
    def console_slash() -> Response:
        return RedirectResponse("/console")

    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
