"""What facewarden refuses of Rekognition's API on purpose, and the reason it gives.

Each refusal is an :class:`~facewarden.errors.NotOffered` (``AccessDeniedException``, 403) naming a
rule and saying why, so that a client's retry and bad-input handlers are not misled: the request is
well formed, and neither a retry nor a fix will make it succeed. A name that is neither offered nor
refused here is no operation at all (``UnknownOperationException``). Every operation of
Rekognition's model (botocore's) is either offered or listed here; a test keeps it so.
"""

from __future__ import annotations

from ..errors import NotOffered

# ---- operations ---------------------------------------------------------------------------------
_CELEBRITIES = (
    "celebrity_recognition",
    "facewarden does not recognise celebrities: it would identify people who never consented, from a "
    "gallery of public figures; every face facewarden searches was enrolled with its subject's consent.",
)
_TRACKING = (
    "person_tracking",
    "facewarden does not follow people through footage: tracking individuals who did not consent is "
    "surveillance. Face detection and redaction of video stay available.",
)
_STREAMS = (
    "live_face_search",
    "facewarden does not search live camera streams: real-time face search of passers-by is mass "
    "surveillance. It searches photos (and stored video) against consenting collections only.",
)
_NOT_FACES = (
    "not_face_recognition",
    "facewarden does face detection, comparison and search with consent, nothing else: labels, text, "
    "content moderation, segments, protective equipment and custom-label models are not offered.",
)
_LIVENESS = (
    "not_offered",
    "facewarden does not offer face liveness: it has no liveness model, and Rekognition's sessions need "
    "AWS's own client component.",
)
_TAGS = (
    "not_offered",
    "facewarden does not offer resource tags (CreateCollection accepts Tags and ignores them).",
)

REFUSED_OPERATIONS: dict[str, tuple[str, str]] = {
    **dict.fromkeys(
        (
            "RecognizeCelebrities",
            "GetCelebrityInfo",
            "StartCelebrityRecognition",
            "GetCelebrityRecognition",
        ),
        _CELEBRITIES,
    ),
    **dict.fromkeys(("StartPersonTracking", "GetPersonTracking"), _TRACKING),
    **dict.fromkeys(
        (
            "CreateStreamProcessor",
            "DeleteStreamProcessor",
            "DescribeStreamProcessor",
            "ListStreamProcessors",
            "StartStreamProcessor",
            "StopStreamProcessor",
            "UpdateStreamProcessor",
        ),
        _STREAMS,
    ),
    **dict.fromkeys(
        (
            "DetectLabels",
            "StartLabelDetection",
            "GetLabelDetection",
            "DetectText",
            "StartTextDetection",
            "GetTextDetection",
            "DetectModerationLabels",
            "StartContentModeration",
            "GetContentModeration",
            "StartSegmentDetection",
            "GetSegmentDetection",
            "DetectProtectiveEquipment",
            "DetectCustomLabels",
            "StartMediaAnalysisJob",
            "GetMediaAnalysisJob",
            "ListMediaAnalysisJobs",
            "CreateProject",
            "DeleteProject",
            "DescribeProjects",
            "CreateProjectVersion",
            "CopyProjectVersion",
            "DeleteProjectVersion",
            "DescribeProjectVersions",
            "StartProjectVersion",
            "StopProjectVersion",
            "CreateDataset",
            "DeleteDataset",
            "DescribeDataset",
            "DistributeDatasetEntries",
            "ListDatasetEntries",
            "ListDatasetLabels",
            "UpdateDatasetEntries",
            "PutProjectPolicy",
            "DeleteProjectPolicy",
            "ListProjectPolicies",
        ),
        _NOT_FACES,
    ),
    **dict.fromkeys(("CreateFaceLivenessSession", "GetFaceLivenessSessionResults"), _LIVENESS),
    **dict.fromkeys(("TagResource", "UntagResource", "ListTagsForResource"), _TAGS),
}


def refused_operation(name: str) -> NotOffered | None:
    """The refusal of Rekognition operation ``name``, or None if facewarden does not refuse it."""
    found = REFUSED_OPERATIONS.get(name)
    if found is None:
        return None
    rule, reason = found
    return NotOffered(f"{name}: {reason}", rule)


# ---- face attributes ----------------------------------------------------------------------------
_DEMOGRAPHIC = (
    "no_demographic_inference",
    "facewarden does not infer {what} from faces: such inferences are unreliable, err differently by "
    "demographic group and invite discrimination.",
)
_EMOTION = (
    "no_emotion_inference",
    "facewarden does not read {what} from faces: an expression is no reliable sign of what a person "
    "feels, and such readings differ by group.",
)
_UNMEASURED = (
    "not_measured",
    "{what} is no demographic inference, it describes the photo; facewarden does not return it because "
    "it has no model for it whose accuracy it has measured on labelled photos, and it returns no "
    "unmeasured guesses. For enrolment quality use what it computes: Quality (Brightness, Sharpness), "
    "Pose and QualityFilter.",
)

#: Rekognition's face attributes facewarden refuses: name -> (what it is, (rule, reason)).
REFUSED_ATTRIBUTES: dict[str, tuple[str, tuple[str, str]]] = {
    "AGE_RANGE": ("age", _DEMOGRAPHIC),
    "GENDER": ("gender", _DEMOGRAPHIC),
    "BEARD": ("facial hair (BEARD, MUSTACHE: proxies for gender)", _DEMOGRAPHIC),
    "MUSTACHE": ("facial hair (BEARD, MUSTACHE: proxies for gender)", _DEMOGRAPHIC),
    "EMOTIONS": ("emotions", _EMOTION),
    "SMILE": ("expressions (SMILE)", _EMOTION),
    "EYEGLASSES": ("EYEGLASSES (glasses worn)", _UNMEASURED),
    "SUNGLASSES": ("SUNGLASSES (sunglasses worn)", _UNMEASURED),
    "EYES_OPEN": ("EYES_OPEN (eye state)", _UNMEASURED),
    "MOUTH_OPEN": ("MOUTH_OPEN (mouth state)", _UNMEASURED),
    "FACE_OCCLUDED": ("FACE_OCCLUDED (a face partly hidden)", _UNMEASURED),
    "EYE_DIRECTION": ("EYE_DIRECTION (gaze)", _UNMEASURED),
}


def refused_attribute(name: str) -> NotOffered | None:
    """The refusal of face attribute ``name`` (any case), or None if it is not refused."""
    found = REFUSED_ATTRIBUTES.get(name.upper())
    if found is None:
        return None
    what, (rule, reason) = found
    return NotOffered(f"Attribute {name.upper()}: " + reason.format(what=what), rule)
