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
    #: Default face detector: ``centerface`` (finds profiles, small and half-hidden faces; gives its
    #: own five landmarks), ``hog`` (dlib's frontal HOG detector, the default before) or ``cnn``
    #: (dlib's mmod CNN). See the README's models table and detection figures.
    detector: str = "centerface"
    #: Embedding runtime: ``auto`` (ONNX Runtime when available, else dlib), ``dlib`` or ``onnx``.
    runtime: str = "auto"
    #: Detections and embeddings run at once in one process (0 = one per CPU).
    engine_concurrency: int = 0
    #: ONNX Runtime intra-op threads per session (0 = 1 on machines with 2 CPUs or fewer, else half
    #: the CPUs, at most 4).
    onnx_threads: int = 0
    #: Use dlib's 68-point landmark model for ``Attributes=ALL`` (licence: non-commercial use only).
    landmarks_68: bool = False
    match_threshold: float = DEFAULT_MATCH_THRESHOLD
    #: Face model of new collections and of CompareFaces/DetectFaces/ClusterFaces (a built-in name,
    #: ``sface-2021dec`` or ``dlib-resnet-v1``, or a registered user model's name/version); each
    #: existing collection keeps the model it was created with.
    model: str = "sface-2021dec"
    #: The region in collection ARNs when a request names none (a Rekognition request's own
    #: signing region is used for it).
    region: str = "us-east-1"
    #: Path of the policy TOML; empty = ``policy.toml`` in the data directory (created from the
    #: shipped default on ``init``).
    policy_file: str = ""
    #: The access key id the command line acts as; empty: the installation's owner.
    key: str = ""
    #: The in-process vector index (SQLite, and PostgreSQL searched ``local``) of a collection is
    #: exact below this many faces and FAISS IVF from it up.
    gallery_ann_threshold: int = 50_000
    #: How the PostgreSQL gallery searches: ``hnsw`` (pgvector's index, in the database) or
    #: ``local`` (the in-process index the SQLite gallery uses, in every service process).
    gallery_pg_search: str = "hnsw"
    #: PostgreSQL searched ``hnsw``: collections from this many faces up are searched with the HNSW
    #: index, smaller ones exactly (pgvector filters HNSW results after the scan).
    gallery_pg_ann_threshold: int = 20_000
    #: HNSW candidate list per query. Measured at 100,000 synthetic templates (bench/): 100 gave
    #: recall@1 0.925 (p99 3.5 ms), 200 gave 0.99 (p99 7.7 ms), 400 gave 1.0 (p99 12 ms).
    gallery_pg_ef_search: int = 200
    #: Where ``S3Object`` references are read: one folder per bucket (empty = ``DATA_DIR/buckets``).
    buckets_dir: str = ""
    #: Video limits (Rekognition Video's own: 10 GB and 6 hours; frames up to 4K).
    video_max_bytes: int = 10 * 1024**3
    video_max_seconds: float = 6 * 3600.0
    video_max_pixels: int = 4096 * 2160
    #: Frames analysed per second of video: a face seen for less than 1/rate seconds may be missed;
    #: the work grows linearly with the rate.
    video_sample_rate: float = 5.0
    #: Threads one video job detects faces with.
    video_threads: int = 2
    #: Job workers that ``serve`` runs beside the HTTP server (0: none; run ``facewarden worker``).
    job_workers: int = 1
    #: Days a finished job's results are kept (a search job's: at most its collection's retention).
    job_retention_days: float = 7.0
    #: ``/metrics`` shows the face count of each collection by its id (off: only how many
    #: collections of each size, so a scrape names nobody's collection).
    metrics_collection_names: bool = False
    #: Where every erasure's signed audit record is also appended (empty: ``erasures.jsonl`` in the
    #: data directory). Put it on another volume than the database: a restore replays from it the
    #: erasures made after the backup.
    erasure_journal: str = ""
    #: The folder of ``pg_dump``/``pg_restore`` for backups of PostgreSQL (empty: from ``PATH``).
    pg_tools_dir: str = ""

    @property
    def resolved_buckets_dir(self) -> Path:
        return Path(self.buckets_dir).expanduser() if self.buckets_dir else self.data_dir / "buckets"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'gallery.sqlite3'}"

    @property
    def erasure_journal_path(self) -> Path:
        return (
            Path(self.erasure_journal).expanduser()
            if self.erasure_journal
            else self.data_dir / "erasures.jsonl"
        )

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
