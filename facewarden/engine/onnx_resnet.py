"""dlib's ResNet face embedder on ONNX Runtime, with dlib's descriptors (max abs diff < 1e-6).

The ONNX model is converted from ``dlib_face_recognition_resnet_model_v1.dat`` on first use and
cached (``onnx_convert.py``). Sessions are created once per process and cache directory, lazily
and thread-safely; ONNX Runtime sessions are safe for concurrent ``run`` calls.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

try:  # the engine falls back to dlib when ONNX Runtime (or onnx, for the converter) is missing
    import onnx  # noqa: F401
    import onnxruntime as ort
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(f"ONNX runtime support is not installed ({exc}); pip install onnxruntime onnx") from exc

from ..errors import InvalidInput
from . import onnx_convert

#: Execution providers in order of preference; the first one available in this install is used.
#: (onnxruntime-gpu lists CUDAExecutionProvider only when its CUDA libraries load.)
PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")

#: Faces per ``run`` call. Measured on 2 vCPUs: 1 -> 3.5 ms/face, 8+ -> ~3.2 ms/face; larger
#: batches gain nothing on CPU and cost memory (about 2 MB of activations per face).
BATCH = 32


def providers() -> list[str]:
    available = set(ort.get_available_providers())
    return [p for p in PROVIDERS if p in available] or ["CPUExecutionProvider"]


def session_options(threads: int | None = None) -> Any:
    """Session options chosen by measurement (bench/bench_engine.py) on a 2-vCPU machine.

    * graph optimisation: ORT_ENABLE_ALL (NCHWc layout transforms: ~15 % faster than BASIC);
    * intra-op threads: the CPU count, capped at 4 (``FACEWARDEN_ONNX_THREADS`` overrides);
      a service running several workers should set 1;
    * inter-op threads: 1 (the graph is a chain; parallel branches are tiny); sequential execution.
    """
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is None:
        env = os.environ.get("FACEWARDEN_ONNX_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else min(4, os.cpu_count() or 1)
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


_sessions: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def _session(key: str, cache_dir: Path | None) -> Any:
    """One ONNX Runtime session per converted model and cache directory, per process."""
    cache = Path(cache_dir) if cache_dir is not None else onnx_convert.default_cache_dir()
    k = (key, str(cache.resolve()))
    s = _sessions.get(k)
    if s is None:
        with _lock:
            s = _sessions.get(k)
            if s is None:
                path = onnx_convert.converted_path(key, cache)
                s = ort.InferenceSession(str(path), session_options(), providers=providers())
                _sessions[k] = s
    return s


class OnnxResnetEmbedder:
    """Aligned 150x150 RGB chips -> dlib's raw 128-D descriptors, on ONNX Runtime."""

    size = 150
    dim = 128

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir

    @property
    def session(self) -> Any:
        return _session("resnet", self.cache_dir)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        if chips.shape[1:] != (self.size, self.size, 3):
            raise InvalidInput(f"Face chips must be (n, {self.size}, {self.size}, 3) RGB, not {chips.shape}.")
        if chips.dtype != np.uint8:
            chips = np.clip(np.rint(chips), 0, 255).astype(np.uint8)
        chips = np.ascontiguousarray(chips)
        s = self.session
        out = [s.run(["descriptors"], {"chips": chips[i : i + BATCH]})[0] for i in range(0, len(chips), BATCH)]
        return np.concatenate(out).astype(np.float32, copy=False)
