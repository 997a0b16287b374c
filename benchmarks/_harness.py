"""What every benchmark here shares: medians of repeated timings and a line about the machine.

Benchmarks print figures; they are not tests (the machine is shared and noisy: report
medians, and ratios measured in one run). Run them from the repository root, e.g.
``PYTHONPATH=. python benchmarks/bench_search.py``.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable

from cmce.experiments.bench import timings_ms

__all__ = ["machine", "median_ms", "timings_ms"]


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 0) -> float:
    """Median wall time of ``fn`` in milliseconds over ``repeats`` calls after ``warmup`` unmeasured ones."""
    return statistics.median(timings_ms(fn, repeats, warmup=warmup))


def machine() -> str:
    """CPU count and load averages, printed beside figures so that a noisy run can be told apart."""
    one, five, fifteen = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.2f} {five:.2f} {fifteen:.2f}"
