"""Fault injection for the kill -9 tests of the gallery's writers (nothing happens unless a test asks).

``PAUSE_ENV`` set to ``STEP:PATH`` makes the writer that reaches the named step write PATH and
sleep there, so that a test can kill the process at exactly that point and check that the
gallery is left in its old or its new state. The steps:

* ``forget_entries``: ``start`` (nothing written), ``written`` (every new file written, the
  manifest not yet replaced), ``swapped`` (the manifest replaced, the old files not yet deleted);
* ``append_entries``: ``append-start`` (nothing written), ``append-written`` (the new shard
  written, not listed);
* a corrections change, alone or with an append: ``corrections-written`` (the new corrections
  file written, the manifest not yet replaced), ``corrections-listed`` (the manifest replaced,
  the old corrections file not yet deleted).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["PAUSE_ENV", "STEPS", "pause"]

PAUSE_ENV = "CMCE_STORAGE_PAUSE_AT"
STEPS = ("start", "written", "swapped", "append-start", "append-written", "corrections-written",
         "corrections-listed")


def pause(step: str) -> None:
    """The fault-injection point ``step`` (one of :data:`STEPS`); nothing unless ``PAUSE_ENV`` names it."""
    spec = os.environ.get(PAUSE_ENV, "")
    if spec and spec.partition(":")[0] == step:
        Path(spec.partition(":")[2]).write_text(step)
        time.sleep(120)
