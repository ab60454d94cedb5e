"""Accuracy and bias audit: labelled pairs, 1:N galleries, ROC/DET, per-group differentials, calibration.

Plain functions, called by the CLI and usable from Python:

- :func:`evaluate_pairs` — 1:1 verification on a PAIRS.tsv (or :func:`manifest_pairs` of a labelled
  dataset), overall and per group (:func:`read_groups`, e.g. a manifest's race column), with a report.
- :func:`evaluate_gallery` — 1:N search (the ACLU-style test): false matches vs ``N x FMR``, rank-1.
- :func:`calibrate` — build a model's calibration table from a labelled folder.
- :func:`calibrate_users` — measure how a model should score a user of several faces.
- :mod:`.metrics` — the pure metric functions (ROC/DET, EER, FNMR at FMR, Wilson intervals, ...).

Images are embedded once each (cached by content under ``<data_dir>/cache``), in parallel processes.
"""

from __future__ import annotations

from . import metrics
from .calibrate import calibrate, calibrate_users
from .embed import Embedded, embed_images
from .gallery import evaluate_gallery
from .pairs import build_report, evaluate_pairs, manifest_pairs, read_groups, score_pairs
from .scores import PairScores

__all__ = [
    "Embedded",
    "PairScores",
    "build_report",
    "calibrate",
    "calibrate_users",
    "embed_images",
    "evaluate_gallery",
    "evaluate_pairs",
    "manifest_pairs",
    "metrics",
    "read_groups",
    "score_pairs",
]
