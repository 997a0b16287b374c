"""Bootstrap confidence intervals (over queries or over query identities), the error cut, and how
an interval is written (``format_interval``: ``(97.81 to 98.93)``, everywhere one is shown).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real

import numpy as np

from cmce.errors import CmceError
from cmce.metrics._inputs import _real_array
from cmce.metrics.verification import tar_at_far, verification_scores

__all__ = ["bootstrap_mean_ci", "cluster_bootstrap", "format_interval", "format_with_interval", "relative_error_reduction",
           "tar_at_far_cluster_ci"]


def bootstrap_mean_ci(
    values: np.ndarray, *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of per-query values and its percentile bootstrap confidence interval.

    Queries are resampled with replacement ``resamples`` times; the interval is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means. For a
    paired comparison of two systems on the same queries, pass the per-query
    differences (e.g. ``hits_b - hits_a``): the interval then accounts for the pairing.

    Args:
        values: ``(Q,)`` real, finite (e.g. 0/1 top-1 hits, or their differences).
        level: confidence level in ``(0, 1)``.
        resamples: bootstrap resamples (>= 1).
        seed: random seed (the interval is reproducible).

    Returns:
        ``(mean, low, high)``; NaNs for an empty input.

    Raises:
        CmceError: non-1-D or non-finite ``values``, or ``level`` outside ``(0, 1)``.

    Example:
        Ninety hits in a hundred queries: mean 0.9, the interval about 0.84..0.95::

        >>> m, lo, hi = bootstrap_mean_ci(np.r_[np.ones(90), np.zeros(10)])
        >>> round(m, 2), 0.82 <= lo <= 0.86, 0.94 <= hi <= 0.97
        (0.9, True, True)
    """
    v = _real_array("values", values, 1, "(Q,)", allow_inf=False)
    if not 0.0 < float(level) < 1.0:
        raise CmceError(f"level must be in (0, 1), got {level!r}")
    if int(resamples) < 1:
        raise CmceError(f"resamples must be >= 1, got {resamples!r}")
    if v.shape[0] == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(int(resamples))
    for start in range(0, len(means), 256):  # bounded memory for large Q
        stop = min(start + 256, len(means))
        means[start:stop] = v[rng.integers(0, v.shape[0], size=(stop - start, v.shape[0]))].mean(axis=1)
    tail = (1.0 - float(level)) / 2.0
    return float(v.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def cluster_bootstrap(
    values: Sequence[np.ndarray],
    clusters: np.ndarray,
    statistic: Callable[..., float] | None = None,
    *,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """A statistic of per-query means, with a bootstrap interval over clusters (identities).

    Queries of one identity are not independent (same person, often the same event),
    so whole identities are resampled with replacement. Each of ``values`` is a
    per-query vector (NaN = query not counted, as ``top1_hits`` gives); its mean over
    the counted queries of a resample is passed to ``statistic``. Several vectors are
    resampled together (the same identities), which makes paired comparisons honest.

    Args:
        values: one or more ``(Q,)`` vectors on the same queries.
        clusters: ``(Q,)`` cluster label per query (the query's identity).
        statistic: ``f(mean_1, mean_2, ...) -> float``; default the first mean.
        level: confidence level in ``(0, 1)``.
        resamples: bootstrap resamples (>= 1).
        seed: random seed.

    Returns:
        ``(statistic on the data, low, high)``; NaNs when nothing is counted.

    Example:
        Two identities, one always right (3 queries), one always wrong (1 query):
        R@1 is 0.75; resampling identities swings it between 0 and 1::

        >>> m, lo, hi = cluster_bootstrap([np.array([1., 1., 1., 0.])], np.array([0, 0, 0, 1]))
        >>> m, lo, hi
        (0.75, 0.0, 1.0)
    """
    vs = [np.asarray(v, np.float64) for v in values]
    if not vs:
        raise CmceError("cluster_bootstrap needs at least one vector of values")
    q = vs[0].shape[0]
    if any(v.ndim != 1 or v.shape[0] != q for v in vs):
        raise CmceError(f"every value vector must be (Q,) with Q={q}; got {[v.shape for v in vs]}")
    cl = np.asarray(clusters)
    if cl.shape != (q,):
        raise CmceError(f"clusters must be (Q,)=({q},), got {cl.shape}")
    if not 0.0 < float(level) < 1.0:
        raise CmceError(f"level must be in (0, 1), got {level!r}")
    if int(resamples) < 1:
        raise CmceError(f"resamples must be >= 1, got {resamples!r}")
    stat = statistic or (lambda *means: means[0])
    _, inv = np.unique(cl, return_inverse=True)
    c = int(inv.max()) + 1 if q else 0
    sums = [np.bincount(inv, weights=np.nan_to_num(v), minlength=c) for v in vs]
    counts = [np.bincount(inv, weights=(~np.isnan(v)).astype(np.float64), minlength=c) for v in vs]

    def means(w: np.ndarray) -> list[np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return [(w @ s) / (w @ n) for s, n in zip(sums, counts)]

    point = stat(*[float(m) for m in means(np.ones(c))]) if c else float("nan")
    if c == 0 or not np.isfinite(point):
        return float(point), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = np.empty(int(resamples))
    for start in range(0, len(draws), 256):
        stop = min(start + 256, len(draws))
        w = np.stack([np.bincount(rng.integers(0, c, size=c), minlength=c) for _ in range(stop - start)]).astype(np.float64)
        ms = means(w)
        draws[start:stop] = [stat(*[float(m[b]) for m in ms]) for b in range(stop - start)]
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return float(point), float("nan"), float("nan")
    tail = (1.0 - float(level)) / 2.0
    return float(point), float(np.quantile(draws, tail)), float(np.quantile(draws, 1.0 - tail))


def tar_at_far_cluster_ci(
    similarity: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    clusters: np.ndarray,
    far: float = 1e-3,
    *,
    level: float = 0.95,
    resamples: int = 500,
    seed: int = 0,
) -> tuple[float, float, float]:
    """TAR at a FAR, with a bootstrap interval over query clusters (identities).

    The point value is ``tar_at_far`` on every (query, gallery) pair. Each resample
    draws identities with replacement; a query drawn ``w`` times weighs ``w`` in both
    the impostor distribution (whose weighted upper ``far`` quantile is the threshold)
    and the genuine pairs. One sort of the impostor scores serves every resample.

    Returns:
        ``(tar, low, high)``.

    Example:
        >>> sim = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
        >>> tar_at_far_cluster_ci(sim, [0, 1, 0], [0, 1], [0, 1, 0], far=0.0, resamples=50)[0]
        1.0
    """
    scores, same = verification_scores(similarity, query_labels, gallery_labels)
    point = tar_at_far(scores, same, far)
    q, g = np.asarray(similarity).shape
    cl = np.asarray(clusters)
    if cl.shape != (q,):
        raise CmceError(f"clusters must be (Q,)=({q},), got {cl.shape}")
    qidx = np.repeat(np.arange(q), g)
    imp, gen = ~same, same
    order = np.argsort(-scores[imp], kind="stable")
    imp_s, imp_q = scores[imp][order], qidx[imp][order]
    gen_s, gen_q = scores[gen], qidx[gen]
    _, inv = np.unique(cl, return_inverse=True)
    c = int(inv.max()) + 1 if q else 0
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(int(resamples)):
        wq = np.bincount(rng.integers(0, c, size=c), minlength=c)[inv].astype(np.float64)
        w_imp = wq[imp_q]
        total = w_imp.sum()
        if total <= 0 or wq[gen_q].sum() <= 0:
            continue
        cum = np.cumsum(w_imp)  # weighted impostors at or above each sorted score
        k = np.searchsorted(cum, far * total, side="right")  # first sorted score that must be rejected
        thr = np.nextafter(imp_s[k], np.inf) if k < len(imp_s) else -np.inf
        draws.append(float((wq[gen_q] * (gen_s >= thr)).sum() / wq[gen_q].sum()))
    if not draws:
        return float(point), float("nan"), float("nan")
    tail = (1.0 - float(level)) / 2.0
    return float(point), float(np.quantile(draws, tail)), float(np.quantile(draws, 1.0 - tail))


def relative_error_reduction(base_accuracy: float, new_accuracy: float) -> float:
    """Relative reduction of the error rate from ``base_accuracy`` to ``new_accuracy``.

    ::

        RER = ((1 - base) - (1 - new)) / (1 - base)

    Positive when the error shrinks (1.0 = all errors removed), negative when
    it grows.

    Args:
        base_accuracy: Accuracy before, in ``[0, 1]`` (or NaN).
        new_accuracy: Accuracy after, in ``[0, 1]`` (or NaN).

    Returns:
        The reduction; ``nan`` when either accuracy is NaN (e.g. an undefined
        recall) or when ``base_accuracy == 1`` (no error to reduce).

    Raises:
        CmceError: When an accuracy is not a real number in ``[0, 1]`` or NaN.

    Example:
        0.90 -> 0.92 cuts the error from 10 % to 8 %, a 20 % reduction::

        >>> round(relative_error_reduction(0.90, 0.92), 12)
        0.2
    """
    values = []
    for name, value in (("base_accuracy", base_accuracy), ("new_accuracy", new_accuracy)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (Real, np.integer, np.floating)
        ):
            raise CmceError(f"{name} must be a real number in [0, 1] (or NaN), got {value!r}")
        v = float(value)
        if not math.isnan(v) and not 0.0 <= v <= 1.0:
            raise CmceError(f"{name} must be in [0, 1] (or NaN), got {value!r}")
        values.append(v)
    base, new = values
    if math.isnan(base) or math.isnan(new) or base == 1.0:
        return float("nan")
    return ((1.0 - base) - (1.0 - new)) / (1.0 - base)


def _missing(x: float | None) -> bool:
    return x is None or x != x


def format_interval(low: float | None, high: float | None, *, scale: float = 100.0, digits: int = 2,
                    signed: bool = False, unit: str = "") -> str:
    """An interval as every table and message of cmce writes it: ``(low to high)``.

    Args:
        low, high: the bounds (fractions when ``scale`` is 100).
        scale: what the bounds are multiplied by (100: percentages or points).
        digits: decimals of each bound.
        signed: a ``+`` before positive bounds (differences).
        unit: written after the upper bound (``"%"``).

    Returns:
        ``"(97.81 to 98.93)"``; ``""`` when a bound is missing or NaN (nothing to show).

    Example:
        >>> format_interval(0.97812, 0.98934)
        '(97.81 to 98.93)'
        >>> format_interval(-0.0011, 0.0234, digits=1, signed=True)
        '(-0.1 to +2.3)'
        >>> format_interval(float("nan"), 0.5)
        ''
    """
    if _missing(low) or _missing(high):
        return ""
    spec = f"{'+' if signed else ''}.{digits}f"
    return f"({scale * low:{spec}} to {scale * high:{spec}}{unit})"


def format_with_interval(value: float | None, interval: Sequence[float | None] | None = None, *,
                         scale: float = 100.0, digits: int = 2, interval_digits: int | None = None,
                         signed: bool = False, unit: str = "") -> str:
    """A figure and its interval: ``98.40 (97.81 to 98.93)``.

    Args:
        value: the figure (a fraction when ``scale`` is 100).
        interval: ``(low, high)``, or None (the figure alone).
        digits: decimals of the figure; interval_digits: of the bounds (default ``digits``).
        signed: a ``+`` before positive numbers (differences).
        unit: written after the figure (``"%"``).

    Returns:
        The figure, with its interval when there is one; ``"—"`` when there is no figure (None or NaN).

    Example:
        >>> format_with_interval(0.984, (0.9781, 0.9893))
        '98.40 (97.81 to 98.93)'
        >>> format_with_interval(0.25, (0.1, 0.4), unit="%"), format_with_interval(float("nan"), (0.1, 0.4))
        ('25.00% (10.00 to 40.00)', '—')
    """
    if _missing(value):
        return "—"
    text = f"{scale * value:{'+' if signed else ''}.{digits}f}{unit}"
    shown = format_interval(*interval, scale=scale, digits=digits if interval_digits is None else interval_digits,
                            signed=signed) if interval is not None else ""
    return f"{text} {shown}" if shown else text
