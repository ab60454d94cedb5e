"""Run the HTTP app on a real loopback socket inside the current process (tests, benchmarks).

with ServerThread(create_app(service)) as url:
    boto3.client("rekognition", endpoint_url=url, ...)

or as separate `facewarden serve` processes sharing one data directory and database
(:func:`start_serve_processes`, :func:`stop_serve_processes`), as a scaled-out deployment runs.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import uvicorn

from ..service import Service


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerThread:
    """uvicorn serving ``app`` on ``host:port`` (a free port by default) in a background thread."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning"
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(
            app, host=host, port=self.port, log_level=log_level, lifespan="off", timeout_graceful_shutdown=10
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn:{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and self.server.started and not self.server.should_exit

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


ServeProcess = tuple[subprocess.Popen[bytes], str]


def start_serve_processes(
    n: int, env: dict[str, str], logs: Path, ready_timeout: float = 180.0
) -> list[ServeProcess]:
    """``n`` `facewarden serve` processes on free loopback ports, configured by ``env`` (the same
    FACEWARDEN_DATA_DIR and FACEWARDEN_DATABASE_URL for all), each logging to ``logs``; returned
    once every one answers ``/readyz`` with 200 (models loaded), as ``(process, base url)``."""
    procs: list[ServeProcess] = []
    command = str(Path(sys.executable).parent / "facewarden")
    try:
        for i in range(n):
            port = free_port()
            with (logs / f"serve-{n}-{i}.log").open("wb") as log:
                p = subprocess.Popen(
                    [command, "serve", "--host", "127.0.0.1", "--port", str(port)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            procs.append((p, f"http://127.0.0.1:{port}"))
        for p, url in procs:
            deadline = time.monotonic() + ready_timeout
            while True:
                if p.poll() is not None:
                    raise RuntimeError(f"facewarden serve exited with {p.returncode}; see {logs}")
                try:
                    with urllib.request.urlopen(f"{url}/readyz", timeout=60) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} not ready after {ready_timeout:.0f} s; see {logs}")
                time.sleep(0.2)
    except BaseException:
        stop_serve_processes(procs)
        raise
    return procs


def stop_serve_processes(procs: list[ServeProcess], timeout: float = 60.0) -> list[int | None]:
    """SIGTERM (a graceful shutdown) to each, then wait; killed if still running after ``timeout``.
    Returns the exit codes."""
    for p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p, _ in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return [p.returncode for p, _ in procs]


def make_key(service: Service, org: str, sector: str, purpose: str, **request: Any) -> tuple[str, str]:
    """Create an organisation (if new) and an access key for it, as the owner does with the admin
    operations; ``(access key id, secret)``. ``request`` adds CreateKey members (Collections, ...)."""
    from ..errors import ResourceAlreadyExists

    owner = service.owner_principal()
    try:
        service.call("CreateOrganization", {"Name": org, "Sector": sector}, owner)
    except ResourceAlreadyExists:
        pass
    key = service.call("CreateKey", {"Organization": org, "Purpose": purpose, **request}, owner)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]
