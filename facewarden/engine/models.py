"""The model registry: every embedder has a name and a version, recorded with every template.

A collection is bound to one model version; templates of different versions are never compared.
Adding a model = one module that registers a :class:`ModelSpec` (see ``dlib_resnet.py`` and
``onnx_user.py``), imported by the engine package (``engine/__init__.py``) so that it is registered
before any lookup; this module imports no model module. The calibration table (similarity <-> false
match rate) ships with each version.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..config import Settings
from ..errors import InvalidInput

CALIBRATION_DIR = Path(__file__).parent / "calibration"


class Embedder(Protocol):
    """Aligned face chips -> raw descriptors. Implemented once per runtime (dlib, ONNX Runtime)."""

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """``(n, size, size, 3)`` uint8 RGB chips -> ``(n, dim)`` float32 descriptors (not normalised)."""
        ...


@dataclass(frozen=True)
class ModelSpec:
    """What a template was made with. ``version`` is the string stored with every template."""

    name: str
    version: str
    dim: int
    chip_size: int
    #: Padding around the aligned face, as dlib's ``get_face_chip`` takes it.
    chip_padding: float
    #: Builds the embedder for a runtime name ("dlib", "onnx", ...) and the settings (model cache
    #: directory, ONNX threads); called once per engine, lazily.
    factory: Callable[[str, Settings], Embedder] = field(compare=False, repr=False)
    #: Runtimes this model can run on, in order of preference.
    runtimes: tuple[str, ...] = ("dlib",)
    calibration_file: Path | None = None
    licence: str = ""
    #: Five-point alignment template in chip pixels (user models); None = dlib's own face chips.
    align_template: tuple[tuple[float, float], ...] | None = None


_registry: dict[str, ModelSpec] = {}
_lock = threading.Lock()

#: The model of new collections unless settings say otherwise (``Settings.model``).
DEFAULT_MODEL = "sface-2021dec"
#: The models that ship with facewarden (their names cannot be taken by a user model).
BUILTIN_MODELS = ("dlib-resnet-v1", "sface-2021dec")


def register(spec: ModelSpec) -> ModelSpec:
    with _lock:
        existing = _registry.get(spec.version)
        if existing is not None and existing != spec:
            raise InvalidInput(f"Model version {spec.version!r} is already registered with other settings.")
        _registry[spec.version] = spec
        _registry.setdefault(spec.name, spec)
    return spec


def get(name_or_version: str = DEFAULT_MODEL) -> ModelSpec:
    try:
        return _registry[name_or_version]
    except KeyError:
        known = ", ".join(sorted({s.version for s in _registry.values()}))
        raise InvalidInput(
            f"Unknown face model {name_or_version!r}. Known model versions: {known}."
        ) from None


def all_models() -> list[ModelSpec]:
    return sorted({s.version: s for s in _registry.values()}.values(), key=lambda s: s.version)
