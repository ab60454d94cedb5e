"""Redaction: faces hidden in images and video, except those of people who consented.

* :mod:`.masks` draws a mask over a face box (blur, pixelate or solid; ellipse or box; margin);
* :mod:`.carry` carries masks along tracks over the frames where detection blinked, forward and
  backward, widened for motion;
* :mod:`.image` redacts a still image end to end (bytes in, bytes out, metadata stripped);
* :mod:`.measure` is the unredacted face-frame measure the tests and the bench count by.

Nothing here decides who may be kept visible: that is an identification, which the service
allows or denies by policy before it hands this package a ``keep`` decision.
"""

from .carry import Carry, Sighting, masks_per_frame
from .image import RedactedImage, redact_image
from .masks import MaskStyle, apply

__all__ = ["Carry", "MaskStyle", "RedactedImage", "Sighting", "apply", "masks_per_frame", "redact_image"]
