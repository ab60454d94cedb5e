"""A key rotation in a process of its own, stopped at a named point for the test to SIGKILL it.

    python tests/rotation_proc.py DATA_DIR secrets|audit-signing POINT MARKER

At POINT (see ``Principals.rotate_encryption_key`` / ``AuditLog.rotate_signing_key``) the process
writes MARKER and sleeps until it is killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from facewarden.config import Settings  # noqa: E402
from facewarden.service import Service  # noqa: E402
from facewarden.service import keys as key_ops  # noqa: E402


def main() -> None:
    data_dir, which, point, marker = sys.argv[1:5]

    def hook(at: str) -> None:
        if at == point:
            Path(marker).write_text(at)
            while True:
                time.sleep(1)

    svc = Service(Settings(data_dir=Path(data_dir)), sweep_on_start=False)
    rotate = key_ops.rotate_secrets if which == "secrets" else key_ops.rotate_audit_signing
    rotate(svc, svc.owner_principal(), hook)
    Path(marker).write_text("finished")


if __name__ == "__main__":
    main()
