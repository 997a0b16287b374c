"""File helpers shared by the floors above: a file placed at a second path without copying its bytes."""

from __future__ import annotations

import os
import shutil

__all__ = ["link_or_copy"]


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Place ``src`` at ``dst`` as a hard link, or as a copy where links are refused (another disk).

    A link is safe for files never modified in place: a gallery's shards (``cmce upgrade --out``),
    and Gradio's cached uploads, one per content and shared by every session that uploads the same
    bytes (the session takes a link and leaves the cached file to Gradio's clean-up, so that a
    concurrent session's upload of the same photo stays readable). ``dst``'s folder is created.
    """
    os.makedirs(os.path.dirname(os.fspath(dst)) or ".", exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
