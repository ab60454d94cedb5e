"""The policy file in force: where it lives, the parsed policy, reloading and applying it.

``DATA_DIR/policy.toml`` (copied from the shipped default on first use) or the file
``FACEWARDEN_POLICY_FILE`` names. Several service processes may share it: each re-reads it when it
changes on disk (:meth:`PolicyFile.reload_if_changed`, before every call), and an invalid edit
— or one that would weaken a safeguard built into the code — keeps the policy in force. Every
policy put in force is handed to ``record`` (the service writes its hash to the audit log, once per
distinct policy), every file refused at start-up or on reload to ``refused`` (the service audits
the refusal, with its rule), and files are checked against the kinds the code declares (a policy
file cannot reclassify an operation).
"""

from __future__ import annotations

import hashlib
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
#: Told of each policy file refused at start-up or on reload: (why, the error, SHA-256 of the file).
Refusal = Callable[[str, FacewardenError, str | None], object]


class PolicyFile:
    """The policy file of one service process, and the policy parsed from it."""

    def __init__(
        self, path: Path, kinds: Mapping[str, Kind], record: Recorder, refused: Refusal | None = None
    ) -> None:
        self.path = path
        self.kinds = dict(kinds)
        self._record = record
        self._refused = refused
        self._lock = threading.RLock()
        self._stat = _stat(path)
        try:
            self.policy = self.parse_file()
        except FacewardenError as exc:  # a process does not start on a policy it cannot enforce
            self._refuse("startup", exc)
            raise
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
        """Re-read the file if it changed on disk; a file that is invalid or would weaken a built-in
        safeguard is logged, handed to ``refused`` (once per change) and the policy in force kept."""
        if _stat(self.path) == self._stat:
            return
        with self._lock:
            st = _stat(self.path)
            if st == self._stat:  # another thread got here first
                return
            self._stat = st
            try:
                policy = self.parse_file()
            except FacewardenError as exc:
                log.error(
                    "the changed policy file %s is refused; the policy in force stays: %s", self.path, exc
                )
                self._refuse("file changed", exc)
                return
            self.policy = policy
        self._record(policy, "file changed")

    def _refuse(self, why: str, exc: FacewardenError) -> None:
        if self._refused is None:
            return
        try:
            digest: str | None = hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            digest = None
        self._refused(why, exc, digest)

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
