"""Evaluations (accuracy and bias audits, calibration) as policy sees them.

They run in worker processes over a folder of photos, outside :meth:`Service.call`, so the CLI
decides each one with :meth:`Service.authorize` under its declared kind before any template is
computed (and the decision is audited).
"""

from __future__ import annotations

from ..policy.kinds import Kind
from .registry import declare

#: An evaluation's kind is what it does to faces, not why: one that compares templates of pairs
#: (and writes each pair's score to report.json) is a comparison, one that searches a gallery for
#: every probe an identification, so the moratorium, the surveillance rule and the purposes decide
#: them as such (a police key may not run a verification audit on photos of its choosing); only
#: the detection audit, which computes no template, is of kind ``evaluate``.
EVALUATE_PAIRS = declare("EvaluatePairs", Kind.COMPARE)
EVALUATE_GALLERY = declare("EvaluateGallery", Kind.IDENTIFY)
EVALUATE_CALIBRATION = declare("EvaluateCalibration", Kind.COMPARE)
EVALUATE_DETECTION = declare("EvaluateDetection", Kind.EVALUATE)
