"""The ONNX Runtime runtime: execution providers (kept as data), session options chosen by
measurement, and one session per model file and thread count per process.

Every ONNX model of the engine (dlib's networks converted by ``onnx_convert.py``, CenterFace, user
models) gets its session here, so provider choice and threading are decided in one place. Sessions
are created lazily and thread-safely; ONNX Runtime sessions are safe for concurrent ``run`` calls.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

try:  # the engine falls back to dlib where ONNX Runtime is missing
    import onnxruntime as ort
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(f"ONNX Runtime is not installed ({exc}); pip install onnxruntime onnx") from exc

from ..errors import ModelError

#: Execution providers in order of preference; the first ones available in this install are used.
#: (onnxruntime-gpu lists CUDAExecutionProvider only when its CUDA libraries load.)
PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")


def providers() -> list[str]:
    available = set(ort.get_available_providers())
    return [p for p in PROVIDERS if p in available] or ["CPUExecutionProvider"]


def default_threads() -> int:
    """Intra-op threads when ``Settings.onnx_threads`` is 0: 1 on machines with 2 CPUs or fewer,
    else half the CPUs (at most 4).

    Measured on the 2-vCPU development machine, shared with other work (bench/bench_engine.py):
    1 thread 6.2 ms/face and 129 ms per 640x446 CNN tile; 2 threads 10.9 ms/face and 248 ms
    (9.6 ms / 184 ms without spinning) -- a second thread only helps on an otherwise idle machine,
    and a service embeds faces of concurrent requests anyway.
    """
    cpus = os.cpu_count() or 1
    return 1 if cpus <= 2 else min(4, cpus // 2)


def session_options(threads: int = 0) -> Any:
    """Session options chosen by measurement (see :func:`default_threads`).

    * graph optimisation ORT_ENABLE_ALL: layout transforms (NCHWc) make it ~2x faster than BASIC
      or EXTENDED on this CPU (5.6 vs 11.4 ms/face, one thread, batch 8);
    * sequential execution, one inter-op thread: the graphs are chains;
    * no spinning of idle intra-op threads when there are several (spinning steals the CPU from
      the other threads of a busy service).
    """
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads if threads > 0 else default_threads()
    so.inter_op_num_threads = 1
    if so.intra_op_num_threads > 1:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


_sessions: dict[tuple[str, int], Any] = {}
_lock = threading.Lock()


def session(key: str, model: Callable[[], str | bytes], threads: int = 0) -> Any:
    """The process's session for ``key`` (a model file's path or hash) and thread count.

    ``model`` is called once, on first use, and returns the model's path or serialised bytes. A file
    ONNX Runtime cannot load is a :class:`~facewarden.errors.ModelError` naming it.
    """
    k = (key, threads)
    s = _sessions.get(k)
    if s is None:
        with _lock:
            s = _sessions.get(k)
            if s is None:
                try:
                    s = ort.InferenceSession(model(), session_options(threads), providers=providers())
                except ModelError:
                    raise
                except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
                    raise ModelError(f"ONNX Runtime cannot load the model {key}: {exc}") from None
                _sessions[k] = s
    return s
