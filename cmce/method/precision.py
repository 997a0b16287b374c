"""The precision a bundle's transformers run in when they re-project a gallery.

``float32`` is the bundle as trained; ``int8`` runs every transformer's linear layers in
int8 (``cmce.models.transform.quantize_transformer``): up to twice as fast on CPUs with
int8 dot products, a few 1e-3 of cosine away. ``cmce upgrade --precision`` and
``cmce evaluate --upgrade-from OLD --precision`` choose from ``PRECISIONS``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from cmce.errors import CmceError

if TYPE_CHECKING:
    from cmce.method.bundle_model import Bundle

__all__ = ["PRECISIONS", "at_precision"]

PRECISIONS = ("float32", "int8")


def at_precision(bundle: Bundle, precision: str) -> Bundle:
    """``bundle`` with its transformers in ``precision`` (the same bundle for ``float32``).

    Raises:
        CmceError: an unknown precision; the message lists the valid ones.

    Example:
        >>> at_precision(bundle, "float32") is bundle  # doctest: +SKIP
        True
    """
    if precision not in PRECISIONS:
        raise CmceError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return bundle
    from cmce.models.transform import quantize_transformer  # torch: only when asked (the CLI imports PRECISIONS)

    return replace(bundle, transformers={m: quantize_transformer(t) for m, t in bundle.transformers.items()})
