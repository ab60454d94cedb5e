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

#: Faces per ``run`` call: batching helps up to ~8 faces (one thread: 9.3 ms/face alone, 5.6 in a
#: batch of 8, measured under load); larger batches gain nothing on CPU and cost memory.
BATCH = 32


def providers() -> list[str]:
    available = set(ort.get_available_providers())
    return [p for p in PROVIDERS if p in available] or ["CPUExecutionProvider"]


def default_threads() -> int:
    """Intra-op threads: ``FACEWARDEN_ONNX_THREADS``, else 1 on machines with 2 CPUs or fewer,
    else half the CPUs (at most 4).

    Measured on the 2-vCPU development machine, shared with other work (bench/bench_engine.py):
    1 thread 6.2 ms/face and 129 ms per 640x446 CNN tile; 2 threads 10.9 ms/face and 248 ms
    (9.6 ms / 184 ms without spinning) -- a second thread only helps on an otherwise idle machine,
    and a service embeds faces of concurrent requests anyway.
    """
    env = os.environ.get("FACEWARDEN_ONNX_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    cpus = os.cpu_count() or 1
    return 1 if cpus <= 2 else min(4, cpus // 2)


def session_options(threads: int | None = None) -> Any:
    """Session options chosen by measurement (see :func:`default_threads`).

    * graph optimisation ORT_ENABLE_ALL: layout transforms (NCHWc) make it ~2x faster than BASIC
      or EXTENDED on this CPU (5.6 vs 11.4 ms/face, one thread, batch 8);
    * sequential execution, one inter-op thread: the graph is a chain;
    * no spinning of idle intra-op threads when there are several (spinning steals the CPU from
      the other threads of a busy service).
    """
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    if so.intra_op_num_threads > 1:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
        out = [
            s.run(["descriptors"], {"chips": chips[i : i + BATCH]})[0] for i in range(0, len(chips), BATCH)
        ]
        return np.concatenate(out).astype(np.float32, copy=False)
