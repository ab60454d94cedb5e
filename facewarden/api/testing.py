"""Run the HTTP app on a real loopback socket inside the current process (tests, benchmarks).

with ServerThread(create_app(service)) as url:
    boto3.client("rekognition", endpoint_url=url, ...)
"""

from __future__ import annotations

import socket
import threading
import time
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
