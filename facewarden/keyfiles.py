"""Secret key files kept outside the database (``data_dir/keys``, mode 0600).

Anyone who can read the database must not be able to read API secrets or forge audit records, so
the keys that protect them live in files beside it, never in it. Creation is atomic and safe when
several processes start at once: the first writer wins, the others read what it wrote.

A lower-level concern than either of its users (policy's API secrets, the audit log's signing and
pseudonym keys), so it sits beside ``db`` and ``config`` and neither user imports the other.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def keys_dir(data_dir: Path) -> Path:
    d = Path(data_dir) / "keys"
    d.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(d, 0o700)
    except OSError:  # pragma: no cover - not our directory
        pass
    return d


def load_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The contents of ``path``; if it does not exist, create it (mode 0600) with ``make()``."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(make())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic; fails if another process created it first
        except FileExistsError:
            pass
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return path.read_bytes()


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600) in one step: on disk before it appears, whole or not at all."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
