"""One settings object, read once from the environment (prefix ``FACEWARDEN_``).

Every component receives a :class:`Settings` instead of reading the environment itself, so tests
build one with the values they need and nothing leaks between them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MATCH_THRESHOLD = 80.0


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "facewarden"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=_default_data_dir)
    #: ``sqlite:///path`` (default: ``gallery.sqlite3`` in the data directory) or ``postgresql://...``
    database_url: str = ""
    #: Encoded image size limit; Rekognition's own limit for image bytes is 5 MB over the wire,
    #: but local files are allowed up to this.
    max_image_bytes: int = 15 * 1024 * 1024
    #: Decoded pixel limit, checked from the header before decoding (decompression bombs).
    max_image_pixels: int = 36_000_000
    #: Default face detector: ``hog`` (fast, frontal) or ``cnn`` (dlib's mmod, slower, more poses).
    detector: str = "hog"
    #: Embedding runtime: ``auto`` (ONNX Runtime when available, else dlib), ``dlib`` or ``onnx``.
    runtime: str = "auto"
    #: Use dlib's 68-point landmark model for ``Attributes=ALL`` (licence: non-commercial use only).
    landmarks_68: bool = False
    match_threshold: float = DEFAULT_MATCH_THRESHOLD
    #: Face model of new collections (a built-in name or a registered user model's name/version).
    model: str = "dlib-resnet-v1"
    #: Path of the policy TOML; empty = ``policy.toml`` in the data directory (created from the
    #: shipped default on ``init``).
    policy_file: str = ""

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'gallery.sqlite3'}"

    @property
    def model_cache_dir(self) -> Path:
        return self.data_dir / "models"

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``FACEWARDEN_*`` variables; explicit ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"FACEWARDEN_{f.name.upper()}")
            if raw is None:
                continue
            if f.name == "data_dir":
                values[f.name] = Path(raw).expanduser()
            elif f.type in ("int",):
                values[f.name] = int(raw)
            elif f.type in ("float",):
                values[f.name] = float(raw)
            elif f.type in ("bool",):
                values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            else:
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "data_dir" in values:
            values["data_dir"] = Path(str(values["data_dir"])).expanduser()
        return cls(**values)  # type: ignore[arg-type]
