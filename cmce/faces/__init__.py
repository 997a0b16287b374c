"""Faces: geometry at the bottom (the face record, alignment, image quality), then the second chance and the detector.

``from cmce.faces import Face, FaceDetector, align_faces`` keeps working: this package
re-exports the public names of its modules.
"""

from cmce.faces.detector import DETECTORS, FaceDetector, create_detector
from cmce.faces.geometry import *  # noqa: F403 - the face record and alignment
from cmce.faces.geometry import __all__ as _geometry
from cmce.faces.image_quality import FaceImageQuality, face_image_quality

__all__ = [*_geometry, "DETECTORS", "FaceDetector", "FaceImageQuality", "create_detector", "face_image_quality"]
