"""Evaluations (accuracy and bias audits, calibration) as policy sees them.

They run in worker processes over a folder of photos, outside :meth:`Service.call`, so the CLI
decides each one with :meth:`Service.authorize` under its declared kind before any template is
computed (and the decision is audited).
"""

from __future__ import annotations

from ..policy.kinds import Kind
from .registry import declare

EVALUATE_PAIRS = declare("EvaluatePairs", Kind.EVALUATE)
EVALUATE_GALLERY = declare("EvaluateGallery", Kind.EVALUATE)
EVALUATE_CALIBRATION = declare("EvaluateCalibration", Kind.EVALUATE)
EVALUATE_DETECTION = declare("EvaluateDetection", Kind.EVALUATE)
