"""CMCE Face Search: asymmetric face retrieval with cross model compatible ensembles.

The main entry points, imported lazily (``import cmce`` stays light)::

    from cmce import load_bundle, FaceEngine, Gallery, create_backbone
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_bundle": "cmce.method.bundle",
    "save_bundle": "cmce.method.bundle",
    "push_to_hub": "cmce.method.bundle",
    "Bundle": "cmce.method.bundle_model",
    "FaceEngine": "cmce.gallery",
    "Gallery": "cmce.gallery",
    "GalleryLimits": "cmce.gallery",
    "create_backbone": "cmce.models.backbones",
    "list_backbones": "cmce.models.backbones",
    "FaceDetector": "cmce.faces",
    "load_image": "cmce.io.images",
    "CmceError": "cmce.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cmce' has no attribute {name!r}")
