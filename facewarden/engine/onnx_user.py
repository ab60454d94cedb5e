"""User-supplied ONNX embedders (e.g. an ArcFace-style 112x112, 512-D model).

The user gives the file, the input size, the alignment template (five points: the eye on the
image's left, the other eye, the nose tip, the mouth corners, in input pixels) and the
normalisation. The model is registered under a version that includes the file's hash, so a changed
file is a new model version and never silently mixed with old templates. It is served only once
calibrated (``facewarden calibrate --model NAME``): its calibration table lives beside the registry
in the data directory. Registrations are kept in ``DATA_DIR/models.json``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput, ModelError
from . import models
from .geometry import ARCFACE_112

TEMPLATES = {"arcface": ARCFACE_112}
REGISTRY_FILE = "models.json"


@dataclass(frozen=True)
class UserModel:
    name: str
    file: str
    sha256: str
    input_size: int
    dim: int
    template: tuple[tuple[float, float], ...]
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    layout: str = "NCHW"  # or NHWC
    channels: str = "RGB"  # or BGR
    licence: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return f"{self.name}@{self.sha256[:12]}"


def registry_path(data_dir: Path) -> Path:
    return Path(data_dir) / REGISTRY_FILE


def calibration_path(data_dir: Path, version: str) -> Path:
    return Path(data_dir) / "models" / f"{version.replace('@', '-')}.calibration.json"


def add_model(
    data_dir: Path,
    file: str | Path,
    name: str,
    *,
    input_size: int,
    template: str | tuple[tuple[float, float], ...] = "arcface",
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5),
    std: tuple[float, float, float] = (127.5, 127.5, 127.5),
    layout: str = "NCHW",
    channels: str = "RGB",
    licence: str = "",
) -> UserModel:
    """Check that the file is an embedder with the declared input, then register it."""
    path = Path(file).expanduser().resolve()
    if not path.is_file():
        raise InvalidInput(f"No model file at {path}.")
    if not name or "@" in name or name in models.BUILTIN_MODELS:
        raise InvalidInput(
            "A model name is required; it may not contain '@' or reuse a built-in model's name."
        )
    if layout not in ("NCHW", "NHWC") or channels not in ("RGB", "BGR"):
        raise InvalidInput("layout must be NCHW or NHWC and channels RGB or BGR.")
    points = TEMPLATES[template] if isinstance(template, str) and template in TEMPLATES else template
    if isinstance(points, str) or len(points) != 5:
        raise InvalidInput(
            f"The alignment template must be one of {sorted(TEMPLATES)} or five (x, y) points."
        )
    if template == "arcface" and input_size != 112:
        scale = input_size / 112.0
        points = tuple((x * scale, y * scale) for x, y in points)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    probe = UserModel(
        name,
        str(path),
        sha,
        int(input_size),
        0,
        tuple(tuple(map(float, p)) for p in points),
        tuple(mean),
        tuple(std),
        layout,
        channels,
        licence,
    )  # type: ignore[arg-type]
    dim = OnnxUserEmbedder(probe).embed(np.zeros((1, input_size, input_size, 3), np.uint8)).shape[1]
    model = UserModel(**{**asdict(probe), "dim": int(dim), "template": probe.template})
    entries = [m for m in _read(data_dir) if m.name != name]
    entries.append(model)
    target = registry_path(data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(m) for m in entries], indent=1) + "\n")
    tmp.replace(target)
    register(data_dir, model)
    return model


def load_registry(data_dir: Path) -> list[models.ModelSpec]:
    """Register every user model of this data directory (idempotent)."""
    return [register(data_dir, m) for m in _read(data_dir)]


def register(data_dir: Path, model: UserModel) -> models.ModelSpec:
    return models.register(
        models.ModelSpec(
            name=model.name,
            version=model.version,
            dim=model.dim,
            chip_size=model.input_size,
            chip_padding=0.0,
            factory=lambda runtime, settings, m=model: OnnxUserEmbedder(m, settings.onnx_threads),
            runtimes=("onnx",),
            calibration_file=calibration_path(data_dir, model.version),
            licence=model.licence,
            align_template=model.template,
        )
    )


def _read(data_dir: Path) -> list[UserModel]:
    path = registry_path(data_dir)
    if not path.is_file():
        return []
    try:
        raw = json.loads(path.read_text())
        return [
            UserModel(
                **{
                    **e,
                    "template": tuple(tuple(p) for p in e["template"]),
                    "mean": tuple(e["mean"]),
                    "std": tuple(e["std"]),
                }
            )
            for e in raw
        ]
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"The model registry {path} is unreadable ({exc}).") from None


class OnnxUserEmbedder:
    """Aligned chips -> descriptors with a user's ONNX model (first input, first output)."""

    def __init__(self, model: UserModel, threads: int = 0) -> None:
        self.model = model
        self.threads = threads

    @property
    def session(self) -> Any:
        from . import onnx_runtime

        m = self.model
        return onnx_runtime.session(f"{m.file} (sha256 {m.sha256[:12]})", lambda: m.file, self.threads)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        m = self.model
        x = np.asarray(chips, dtype=np.float32)
        if m.channels == "BGR":
            x = x[..., ::-1]
        x = (x - np.asarray(m.mean, np.float32)) / np.asarray(m.std, np.float32)
        if m.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        s = self.session
        out = s.run(None, {s.get_inputs()[0].name: np.ascontiguousarray(x)})[0]
        return np.asarray(out, dtype=np.float32).reshape(len(x), -1)
