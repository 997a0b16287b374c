"""Small text helpers every view of the demo shares."""

from __future__ import annotations

import numpy as np

__all__ = ["percent", "uncertainty_text"]


def percent(x: float) -> str:
    """A share as a percentage with two significant digits."""
    return f"{x * 100:.2g}%"


def uncertainty_text(uncertainty: float) -> str:
    """An uncertainty to two decimals; a dash for none (NaN)."""
    return "–" if np.isnan(uncertainty) else f"{uncertainty:.2f}"
