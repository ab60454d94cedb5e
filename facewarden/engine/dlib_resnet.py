"""dlib's 128-D ResNet face embedder (``dlib_face_recognition_resnet_model_v1.dat``).

The default model until SFace (``sface.py``); collections made with it keep it. Weights: Davis E. King, CC0 1.0 (public domain dedication), shipped by face_recognition_models.
It runs on dlib or, with identical descriptors, on ONNX Runtime (``onnx_resnet.py``); the model
version is the same on both, so templates stay compatible.
"""

from __future__ import annotations

import numpy as np

from ..config import Settings
from . import dlib_runtime, models

VERSION = "dlib-resnet-v1"


class DlibEmbedder:
    def embed(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, 128), np.float32)
        with dlib_runtime.dlib_resnets.borrow() as net:
            out = net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return np.asarray([np.asarray(d) for d in out], dtype=np.float32)


def _factory(runtime_name: str, settings: Settings) -> models.Embedder:
    if runtime_name == "onnx":
        from .onnx_resnet import OnnxResnetEmbedder

        return OnnxResnetEmbedder(cache_dir=settings.model_cache_dir, threads=settings.onnx_threads)
    return DlibEmbedder()


SPEC = models.register(
    models.ModelSpec(
        name="dlib-resnet-v1",
        version=VERSION,
        dim=128,
        chip_size=150,
        chip_padding=0.25,
        factory=_factory,
        runtimes=("onnx", "dlib"),
        calibration_file=models.CALIBRATION_DIR / f"{VERSION}.json",
        licence="dlib face recognition ResNet model v1 by Davis E. King, CC0 1.0",
    )
)
