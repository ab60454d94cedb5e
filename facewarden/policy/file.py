"""The policy file in force: where it lives, the parsed policy, reloading and applying it.

``DATA_DIR/policy.toml`` (copied from the shipped default on first use) or the file
``FACEWARDEN_POLICY_FILE`` names. Several service processes may share it: each re-reads it when it
changes on disk (:meth:`PolicyFile.reload_if_changed`, before every call), and an invalid edit
keeps the policy in force. Every policy put in force is handed to ``record`` (the service writes
its hash to the audit log, once per distinct policy), and files are checked against the kinds
the code declares (a policy file cannot reclassify an operation).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from ..config import Settings
from ..errors import FacewardenError, InvalidInput
from .kinds import Kind
from .rules import DEFAULT_POLICY_PATH, Policy

log = logging.getLogger("facewarden.policy")

#: Told of each policy put in force, and why ("startup", "file changed", "apply by ORG/KEY"...).
Recorder = Callable[[Policy, str], object]


class PolicyFile:
    """The policy file of one service process, and the policy parsed from it."""

    def __init__(self, path: Path, kinds: Mapping[str, Kind], record: Recorder) -> None:
        self.path = path
        self.kinds = dict(kinds)
        self._record = record
        self._lock = threading.RLock()
        self.policy = self.parse_file()
        self._stat = _stat(path)
        record(self.policy, "startup")

    @staticmethod
    def locate(settings: Settings) -> Path:
        """The policy file of ``settings``: FACEWARDEN_POLICY_FILE, or DATA_DIR/policy.toml (a copy of
        the shipped default is put there the first time)."""
        if settings.policy_file:
            path = Path(settings.policy_file).expanduser()
            if not path.exists():
                raise InvalidInput(f"The policy file {path} (FACEWARDEN_POLICY_FILE) does not exist.")
            return path
        path = settings.data_dir / "policy.toml"
        if not path.exists():
            tmp = path.with_name(f".policy.toml.{os.getpid()}.tmp")
            shutil.copyfile(DEFAULT_POLICY_PATH, tmp)
            try:
                os.link(tmp, path)  # atomic: another process may have copied it first
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        return path

    def parse(self, text: str, source: str | None = None) -> Policy:
        """Validate a policy text (also against the kinds the code declares) without applying it."""
        return Policy.parse(text, source=source or str(self.path), kinds=self.kinds)

    def parse_file(self) -> Policy:
        return Policy.load(self.path, kinds=self.kinds)

    def reload(self, why: str = "reload") -> Policy:
        """Re-read the file and put it in force."""
        with self._lock:
            policy = self.parse_file()
            self.policy = policy
            self._stat = _stat(self.path)
        self._record(policy, why)
        return policy

    def reload_if_changed(self) -> None:
        """Re-read the file if it changed on disk; an invalid edit is logged and the policy in
        force kept."""
        st = _stat(self.path)
        if st == self._stat:
            return
        try:
            self.reload("file changed")
        except FacewardenError:
            log.exception("the changed policy file is invalid; keeping the policy in force")
            self._stat = st

    def apply(self, text: str, by: str | None = None) -> Policy:
        """Validate ``text``, make it the policy file and put it in force (``by``: who did it)."""
        self.parse(text)  # validate before anything is written
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)
        return self.reload("apply" + (f" by {by}" if by else ""))


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
        return (st.st_mtime_ns, st.st_size)
    except OSError:
        return None
