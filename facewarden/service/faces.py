"""Operations on faces in images, with no gallery: DetectFaces and CompareFaces."""

from __future__ import annotations

from typing import Any

from ..engine import DetectedFace
from ..errors import InvalidInput, NoFaceFound, UnsupportedOperation
from .core import Context, Service, largest, number, operation

#: Rekognition's attribute names facewarden refuses to compute, and why.
REFUSED_ATTRIBUTES = {
    "AGE_RANGE": "age",
    "GENDER": "gender",
    "EMOTIONS": "emotion",
    "SMILE": "expression",
    "BEARD": "appearance",
    "MUSTACHE": "appearance",
    "EYEGLASSES": "appearance",
    "SUNGLASSES": "appearance",
    "EYES_OPEN": "expression",
    "MOUTH_OPEN": "expression",
    "FACE_OCCLUDED": "appearance",
    "EYE_DIRECTION": "gaze",
}
REFUSAL_REASON = (
    "facewarden does not infer {what} from faces: such inferences are unreliable, differ by "
    "demographic group and invite discrimination. Use Attributes DEFAULT or ALL."
)


@operation("DetectFaces")
def detect_faces(self: Service, ctx: Context) -> dict[str, Any]:
    attributes = _attributes(ctx.request.get("Attributes"))
    pixels = self.decode_image(ctx.request.get("Image"))
    faces = self.engine.detect(pixels, self.detector_for(ctx.request), attributes)
    ctx.counts["faces"] = len(faces)
    return {"FaceDetails": [f.face_detail(attributes) for f in faces]}


@operation("CompareFaces")
def compare_faces(self: Service, ctx: Context) -> dict[str, Any]:
    req = ctx.request
    requested = number(
        req.get("SimilarityThreshold", self.settings.match_threshold), "SimilarityThreshold", 0, 100
    )
    # A 1:1 comparison is a "gallery" of one: only the purpose's floor can raise the threshold.
    threshold = float(self.effective_threshold(ctx, requested, 1)["Similarity"])
    source = self.decode_image(req.get("SourceImage"), "SourceImage")
    target = self.decode_image(req.get("TargetImage"), "TargetImage")
    detector = self.detector_for(req)
    source_faces = self.engine.detect(source, detector)
    if not source_faces:
        raise NoFaceFound("No face was found in SourceImage. Use a photo where the face is clearly visible.")
    probe_face = largest(source_faces)
    probe = self.engine.embed(source, [probe_face])[0]
    target_faces = self.engine.detect(target, detector)[:100]
    templates = self.engine.embed(target, target_faces)
    sims = self.engine.similarities(probe, templates)
    matches, unmatched = [], []
    for face, sim in sorted(zip(target_faces, sims), key=lambda fs: -fs[1]):
        if sim >= threshold:
            matches.append({"Similarity": float(sim), "Face": _compared_face(face)})
        else:
            unmatched.append(_compared_face(face))
    ctx.counts.update(target_faces=len(target_faces), matches=len(matches))
    return {
        "SourceImageFace": {
            "BoundingBox": probe_face.face_detail()["BoundingBox"],
            "Confidence": probe_face.confidence,
        },
        "FaceMatches": matches,
        "UnmatchedFaces": unmatched,
        "AppliedThreshold": ctx.applied_threshold,
    }


def _compared_face(face: DetectedFace) -> dict[str, Any]:
    d = face.face_detail()
    return {k: d[k] for k in ("BoundingBox", "Confidence", "Landmarks", "Pose", "Quality")}


def _attributes(value: Any) -> str:
    """Rekognition's ``Attributes`` list -> "DEFAULT" or "ALL"; demographic attributes are refused."""
    if value is None:
        return "DEFAULT"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput('Attributes must be a list of strings, e.g. ["DEFAULT"] or ["ALL"].')
    for v in value:
        what = REFUSED_ATTRIBUTES.get(v.upper())
        if what:
            raise UnsupportedOperation(REFUSAL_REASON.format(what=what))
        if v.upper() not in ("DEFAULT", "ALL"):
            raise InvalidInput(f"Unknown attribute {v!r}; use DEFAULT or ALL.")
    return "ALL" if any(v.upper() == "ALL" for v in value) else "DEFAULT"
