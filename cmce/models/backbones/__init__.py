"""Face backbones by name: a registry over the weights table.

>>> from cmce.models.backbones import create_backbone
>>> model = create_backbone("sface")            # doctest: +SKIP
>>> model.embed(crops).shape                    # doctest: +SKIP
(N, 128)

To add a backbone: a row in ``_pretrained.PRETRAINED`` and an adapter subclassing
``Backbone`` registered below with ``register_backbone``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from cmce.errors import BackboneError, BackboneUnavailableError
from cmce.models.backbones._pretrained import PRETRAINED, TEMPLATES, PretrainedSpec
from cmce.models.backbones.base import Backbone, default_device
from cmce.models.backbones.dlib_resnet import DlibResNet34
from cmce.models.backbones.facenet import FaceNetCasia, FaceNetVGGFace2
from cmce.models.backbones.sface import SFace

logger = logging.getLogger(__name__)

__all__ = [
    "Backbone",
    "BackboneInfo",
    "PRETRAINED",
    "TEMPLATES",
    "create_backbone",
    "list_backbones",
    "backbone_info",
    "register_backbone",
    "get_spec",
]

_REGISTRY: dict[str, type[Backbone]] = {}
_INSTANCES: dict[tuple[str, str | None], Backbone] = {}
_LOCK = threading.Lock()


def register_backbone(name: str) -> Callable[[type[Backbone]], type[Backbone]]:
    """Register an adapter class for the weights-table row ``name``."""

    def deco(cls: type[Backbone]) -> type[Backbone]:
        if name not in PRETRAINED:
            raise BackboneError(f"register_backbone: {name!r} has no row in the weights table")
        _REGISTRY[name] = cls
        return cls

    return deco


register_backbone("sface")(SFace)
register_backbone("dlib-resnet34")(DlibResNet34)
register_backbone("facenet-casia")(FaceNetCasia)
register_backbone("facenet-vggface2")(FaceNetVGGFace2)


def get_spec(name: str) -> PretrainedSpec:
    """The weights-table row of a registered backbone."""
    if name not in _REGISTRY:
        raise BackboneError(
            f"unknown backbone {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        )
    return PRETRAINED[name]


def create_backbone(name: str, device: str | None = None, *, cached: bool = True) -> Backbone:
    """Create (or reuse) the backbone ``name``.

    Args:
        name: a registered name, see ``list_backbones()``.
        device: torch device for torch backbones; default CUDA when present.
        cached: reuse one instance per (name, device) in this process (weights load once).

    Raises:
        BackboneError: unknown name or broken weights.
        BackboneUnavailableError: cannot run here; the message says why.
    """
    spec = get_spec(name)
    cls = _REGISTRY[name]
    device = device or default_device()  # None and the default share one instance
    key = (name, device)
    with _LOCK:
        if cached and key in _INSTANCES:
            return _INSTANCES[key]
        reason = cls.unavailable_reason(spec)
        if reason and not cls.can_download(spec):
            raise BackboneUnavailableError(f"{name} is unavailable here: {reason}")
        model = cls(spec, device)
        if cached:
            _INSTANCES[key] = model
        logger.info("created backbone %r", model)
        return model


@dataclass(frozen=True)
class BackboneInfo:
    """One line of ``python -m cmce info``."""

    name: str
    role: str
    embedding_size: int
    input_size: int
    license: str
    training_data: str
    available: bool
    reason: str | None


def backbone_info(name: str) -> BackboneInfo:
    """What is known about ``name`` and whether it can run here (fast, no network)."""
    spec = get_spec(name)
    try:
        reason = _REGISTRY[name].unavailable_reason(spec)
    except Exception as e:  # an availability probe must never crash `info`
        reason = f"availability check failed: {e}"
    return BackboneInfo(
        name=name,
        role=spec.role,
        embedding_size=spec.embedding_size,
        input_size=spec.input_size,
        license=spec.license,
        training_data=spec.training_data,
        available=reason is None,
        reason=reason,
    )


def list_backbones() -> list[BackboneInfo]:
    """Every registered backbone, query models first."""
    names = sorted(_REGISTRY, key=lambda n: (PRETRAINED[n].role != "query", n))
    return [backbone_info(n) for n in names]
