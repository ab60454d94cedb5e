"""An in-process vector index of one collection: exact (numpy) when small, FAISS IVF when large.

Ids are the store's row sequence numbers (``gallery_faces.seq``); vectors are L2-normalised, so the
inner product ranks like distance (``d^2 = 2 - 2 ip``). The index knows the collection ``uid`` and
the store ``generation`` it reflects; the SQLite store compares that generation with the
database's and reconciles (adds what is missing, drops what was deleted) or rebuilds.

* Exact: a float32 matrix, one row per face; search is one matrix-vector product. Below
  ``ann_threshold`` faces this is both exact and fast (10k faces: well under a millisecond).
* IVF (FAISS ``IndexIVFFlat``, inner product): ``nlist ~ 4 sqrt(n)`` lists trained on the data,
  ``nprobe`` chosen to scan ~1/12 of the lists. Supports adding and removing ids in place; it is
  retrained (rebuilt from the store) once the collection has doubled or halved since training.

Persistence: :meth:`save` writes one ``.npz``-style zip atomically (temp file, fsync, rename), the
FAISS index streamed in and out of it; a file from before a crash is simply stale and is
reconciled with the store when loaded, and an unreadable one is rebuilt from the store.
"""

from __future__ import annotations

import math
import os
import threading
import zipfile
from pathlib import Path
from typing import Any

import faiss
import numpy as np

_FAISS_MEMBER = "ivf.faiss"


class VectorIndex:
    def __init__(self, dim: int, uid: str, *, ann_threshold: int = 50_000) -> None:
        self.dim = dim
        self.uid = uid
        self.ann_threshold = ann_threshold
        self.generation = -1
        self.lock = threading.RLock()
        self.changes_since_save = 0
        # exact mode
        self._ids = np.zeros(0, np.int64)  # row-aligned with _mat (exact) / sorted live ids (ivf)
        self._mat = np.zeros((0, dim), np.float32)
        self._n = 0
        # ivf mode
        self._ivf: Any = None  # a faiss.IndexIVFFlat in IVF mode
        self._quantizer: Any = None
        self._trained_n = 0

    # ---- state -------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return "ivf" if self._ivf is not None else "exact"

    def __len__(self) -> int:
        return self._n if self._ivf is None else len(self._ids)

    def live_ids(self) -> np.ndarray:
        return np.sort(self._ids[: self._n]) if self._ivf is None else self._ids

    def needs_rebuild(self) -> bool:
        n = len(self)
        if self._ivf is None:
            return n >= self.ann_threshold
        return n < self.ann_threshold // 2 or n > 2 * self._trained_n

    # ---- building ----------------------------------------------------------------------------
    def rebuild(self, ids: np.ndarray, mat: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        mat = np.ascontiguousarray(mat, dtype=np.float32).reshape(-1, self.dim)
        if len(ids) >= self.ann_threshold:
            nlist = int(min(8192, max(64, 4 * math.sqrt(len(ids))), max(1, len(ids) // 39)))
            quantizer = faiss.IndexFlatIP(self.dim)
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            sample = mat if len(mat) <= 64 * nlist else mat[rng.choice(len(mat), 64 * nlist, replace=False)]
            ivf.train(sample)
            ivf.add_with_ids(mat, ids)
            ivf.nprobe = max(8, nlist // 12)
            self._ivf, self._quantizer = ivf, quantizer
            self._trained_n = len(ids)
            self._ids = np.sort(ids)
            self._mat = np.zeros((0, self.dim), np.float32)
            self._n = 0
        else:
            self._ivf = None
            self._ids = ids.copy()
            self._mat = mat.copy()
            self._n = len(ids)
        self.changes_since_save = len(ids)

    def add(self, ids: np.ndarray, mat: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        if len(ids) == 0:
            return
        mat = np.ascontiguousarray(mat, dtype=np.float32).reshape(-1, self.dim)
        self.changes_since_save += len(ids)
        if self._ivf is not None:
            self._ivf.add_with_ids(mat, ids)
            self._ids = np.union1d(self._ids, ids)
            return
        need = self._n + len(ids)
        if need > len(self._mat):
            cap = max(need, 2 * len(self._mat), 64)
            grown = np.zeros((cap, self.dim), np.float32)
            grown[: self._n] = self._mat[: self._n]
            gids = np.zeros(cap, np.int64)
            gids[: self._n] = self._ids[: self._n]
            self._mat, self._ids = grown, gids
        self._mat[self._n : need] = mat
        self._ids[self._n : need] = ids
        self._n = need

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        if len(ids) == 0:
            return
        self.changes_since_save += len(ids)
        if self._ivf is not None:
            self._ivf.remove_ids(faiss.IDSelectorBatch(ids))
            self._ids = np.setdiff1d(self._ids, ids, assume_unique=True)
            return
        keep = ~np.isin(self._ids[: self._n], ids)
        kept = int(keep.sum())
        self._mat[:kept] = self._mat[: self._n][keep]
        self._ids[:kept] = self._ids[: self._n][keep]
        self._n = kept

    # ---- search ------------------------------------------------------------------------------
    def search(self, probe: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Up to ``k`` ``(id, inner product)``, best first."""
        n = len(self)
        if n == 0 or k <= 0:
            return []
        p = np.asarray(probe, np.float32).reshape(1, self.dim)
        if self._ivf is not None:
            scores, ids = self._ivf.search(p, min(k, n))
            return [(int(i), float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        # einsum, not BLAS: a multi-threaded BLAS matrix-vector product is ~15x slower on a busy
        # machine (thread hand-offs), and one query is too small to gain from threads.
        scores = np.einsum("ij,j->i", self._mat[: self._n], p[0])
        k = min(k, self._n)
        top = np.argpartition(-scores, k - 1)[:k] if k < self._n else np.arange(self._n)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self._ids[i]), float(scores[i])) for i in top]

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the index atomically: a zip of ``.npy`` arrays (the ``.npz`` layout) plus the FAISS
        index streamed into its own member, so that saving never holds a second copy of it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        arrays: dict[str, np.ndarray] = {
            "meta": np.array([self.dim, self.generation, self._trained_n], np.int64),
            "uid": np.frombuffer(self.uid.encode(), np.uint8),
            "ids": self.live_ids() if self._ivf is not None else self._ids[: self._n],
        }
        if self._ivf is None:
            arrays["mat"] = self._mat[: self._n]
        with open(tmp, "wb") as fh:
            with zipfile.ZipFile(fh, "w") as z:
                for name, arr in arrays.items():
                    with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, arr, allow_pickle=False)
                if self._ivf is not None:
                    with z.open(_FAISS_MEMBER, "w", force_zip64=True) as member:
                        faiss.write_index(self._ivf, faiss.PyCallbackIOWriter(member.write))  # type: ignore[attr-defined]
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        self.changes_since_save = 0

    @classmethod
    def load(cls, path: Path, *, ann_threshold: int) -> VectorIndex | None:
        """The index saved at ``path``, or None when missing or unreadable (then: rebuild)."""
        try:
            with zipfile.ZipFile(path) as z:

                def array(name: str) -> np.ndarray:
                    with z.open(f"{name}.npy") as member:
                        return np.lib.format.read_array(member, allow_pickle=False)

                dim, generation, trained = (int(v) for v in array("meta"))
                idx = cls(dim, bytes(array("uid")).decode(), ann_threshold=ann_threshold)
                idx.generation = generation
                idx._ids = np.asarray(array("ids"), np.int64)
                if _FAISS_MEMBER in z.namelist():
                    with z.open(_FAISS_MEMBER) as member:
                        idx._ivf = faiss.read_index(faiss.PyCallbackIOReader(member.read))  # type: ignore[attr-defined]
                    idx._trained_n = trained
                else:
                    idx._mat = np.asarray(array("mat"), np.float32).reshape(-1, dim)
                    idx._n = len(idx._ids)
                return idx
        except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile):
            return None
