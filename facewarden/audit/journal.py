"""The erasure journal: every erasure's audit record, also appended to a file outside the database.

A restored backup must not bring back a data subject erased after it was taken. The audit log says
who was erased, but it lives in the database the disaster took; so every record of an erasure
(:data:`ERASURES`) is also appended, signed as in the log, to ``FACEWARDEN_ERASURE_JOURNAL``
(default ``DATA_DIR/erasures.jsonl``; put it on another volume than the database). Its lines have
the format of ``facewarden audit export``, so a restore replays erasures from the journal, from an
audit export of the lost installation, or both (:mod:`facewarden.service.recovery`).

The line is written and flushed to disk before the erasure's transaction commits: a crash between
the two leaves a journal line for an erasure that did not happen, which a restore recognises (its
hash is not in the restored log at that position) and skips; the reverse, an erasure the journal
missed, cannot happen.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from .log import Appended

#: Operations whose records erase faces, users, collections or consents. Expiry (retention,
#: consent expiry) is also re-derived from the clock by the sweep a restored service runs at start.
ERASURES = frozenset(
    {
        "EraseSubject",
        "WithdrawConsent",
        "ConsentWithdrawn",
        "ConsentExpired",
        "DeleteFaces",
        "DeleteCollection",
        "DeleteUser",
        "RetentionSweep",
        "ConvertCollection",
    }
)


def is_erasure(record: dict[str, Any]) -> bool:
    return record.get("operation") in ERASURES and record.get("decision") in ("allowed", "recorded")


class ErasureJournal:
    """An audit-log listener that appends erasure records to a file (one JSON line each, fsync'd)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def __call__(self, appended: Appended) -> None:
        if not is_erasure(appended.record):
            return
        line = (appended.line() + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)  # one write with O_APPEND: lines of several processes never interleave
                os.fsync(fd)
            finally:
                os.close(fd)


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The entries of a journal or of an audit export (``{"record", "prev_hash", "hash", "sig"}``).

    A torn last line (a crash mid-write) is skipped; any other unreadable line is an error."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InvalidInput(f"Cannot read {path}: {exc.strerror}.") from None
    for i, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
            assert isinstance(entry, dict) and isinstance(entry.get("record"), dict)
        except (ValueError, AssertionError):
            if i == len(lines):
                return
            raise InvalidInput(f"{path}, line {i}: not an audit record line (audit export format).") from None
        yield entry
