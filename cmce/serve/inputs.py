"""The demo's typed inputs: each value a Gradio control or an API call sends, checked before use.

A value out of range, of the wrong type, NaN or infinite is a user error (``cmce.serve.guard``)
that names the input and says what is valid; nothing here decodes or stores anything.
"""

from __future__ import annotations

import numpy as np

from cmce.serve.guard import clip, user_error

__all__ = ["MAX_RATE", "rejection_rate", "text_value", "upload_paths", "whole_number"]


def whole_number(value: object, what: str, low: int, high: int) -> int:
    """An integer input from ``low`` to ``high``; a user error naming ``what`` and the range otherwise.

    >>> whole_number("3", "k", 1, 10), whole_number(2.0, "k", 1, 10)
    (3, 2)
    """
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not (np.isfinite(number) and number == int(number) and low <= number <= high):
        raise user_error(f"{what} must be a whole number from {low} to {high}, got {clip(value, 40)}")
    return int(number)


def text_value(value: object, what: str) -> str:
    """A text input (None: empty); a user error for anything but a string."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise user_error(f"{what} must be text, got {type(value).__name__}")
    return value


def upload_paths(value: object, what: str) -> list[str]:
    """A list of uploaded files' paths (None: none); a user error for anything else."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, str) for p in items):
        raise user_error(f"{what} must be a list of uploaded files, got {type(value).__name__}")
    return list(items)


MAX_RATE = 0.9  # the rejection-rate slider's end


def rejection_rate(value: object) -> float:
    """A rejection rate from 0 to ``MAX_RATE``; a user error otherwise (NaN, infinities, text included)."""
    try:
        rate = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        rate = float("nan")
    if not (np.isfinite(rate) and 0.0 <= rate <= MAX_RATE):
        raise user_error(f"The rejection rate must be a share from 0 to {MAX_RATE:g}, got {clip(value, 40)}")
    return rate
