"""Check an installation (the container image's, or one built by deploy/build.sh): the models load
from the installed packages, a detection and a template run, and nothing reaches the network.

    PREFIX/bin/python deploy/smoke.py
"""

from __future__ import annotations

import socket
import sys
import tempfile
from pathlib import Path


def _no_network(*args: object, **kwargs: object) -> None:
    raise OSError("network access attempted during the model check")


def main() -> None:
    socket.socket.connect = _no_network  # type: ignore[method-assign,assignment]
    socket.create_connection = _no_network  # type: ignore[assignment]
    import numpy as np

    import facewarden
    from facewarden.config import Settings
    from facewarden.engine import Engine

    with tempfile.TemporaryDirectory() as d:
        engine = Engine(Settings(data_dir=Path(d)))
        engine.embedder  # noqa: B018 - loads the face model
        engine.calibration  # noqa: B018
        blank = np.full((240, 320, 3), 128, np.uint8)
        faces = engine.detect(blank)
        print(
            f"facewarden {getattr(facewarden, '__version__', '')} from {Path(facewarden.__file__).parent}: "
            f"model {engine.model_version} on {engine.runtime_name}, detector ran ({len(faces)} faces in a blank image)"
        )
    sys.exit(0)


if __name__ == "__main__":
    main()
