"""The "Unknown" threshold on the cohort-normalised score (``CohortNorm``) and its coverage guard.

A raw cosine threshold names strangers more often the larger or the more degraded the
gallery, while "how far the best match stands out from the next 50 people" holds across
galleries (``scripts/unknown_threshold.py``). Galleries with fewer than ``cohort`` other
people keep the raw threshold. On a gallery of poorer photos than the calibration's (its
mean quality score, ``gallery_doubt``), the coverage guard lowers the threshold so that
most searches still get a name (``unknown_by="strict"`` keeps it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cmce.errors import CmceError

__all__ = ["CohortNorm", "DEFAULT_COHORT", "UNKNOWN_BY", "gallery_doubt", "unknown_norm", "unknown_note"]


UNKNOWN_BY = ("normalised", "strict", "similarity")
"""How a search decides "Unknown" before any answer rule: ``normalised`` (the bundle's
``CohortNorm`` where the gallery holds its cohort, lowered by its coverage guard on a
gallery of poor photos, the raw threshold elsewhere; the default), ``strict`` (the same
without the coverage guard: names the fewest strangers, says "Unknown" more on poor
galleries) or ``similarity`` (the raw similarity threshold only: names more strangers,
says "Unknown" less on galleries of poor photos)."""


DEFAULT_COHORT = 50
"""People whose scores normalise a query's best score (``CohortNorm``): galleries smaller
than this keep the raw similarity threshold."""


@dataclass(frozen=True)
class CohortNorm:
    """The "Unknown" threshold on cohort-normalised scores (adaptive Z-norm over the gallery).

    A query's best score counts by how far it stands out from its scores against the
    next ``cohort`` people of the gallery (``cohort_score``): below the view's threshold
    the answer is "Unknown". Each threshold names ``strangers_named`` of strangers (a
    query whose person is not in the gallery) on clean calibration galleries. A stranger
    meets more impostors in a larger gallery, so the threshold is calibrated per gallery
    size (``sizes``, ``by_size``) and interpolated in log size between them (``threshold``).
    Where the gallery holds fewer than ``cohort`` other people the raw similarity
    threshold applies.

    On a gallery of poorer photos than the calibration's, a person's own photo stands out
    less from the others, and a threshold that names few strangers would say "Unknown" to
    most searches. The *coverage guard* caps the threshold by the gallery's mean entry
    quality score (its *doubt*, ``gallery_doubt``): calibrated on clean, mixed and wholly
    degraded galleries so that the threshold alone says "Unknown" to at most
    ``guard_share`` of their queries (``guard_threshold``). A person's own photo also stands
    out less in a larger gallery (the next 50 people are closer), so the guard moves with
    the gallery's size by ``guard_slope`` per unit of log size from ``guard_size``. Where it
    binds, strangers are named more often; ``relaxed`` says so.

    Attributes:
        cohort: how many of the next people's scores the statistics come from.
        thresholds: per view, the normalised threshold at the calibration galleries' size.
        strangers_named: the share of strangers named on the calibration galleries.
        sizes: gallery sizes (entries) the ``by_size`` thresholds were calibrated at,
            ascending (empty: ``thresholds`` at every size, as in bundles calibrated before).
        by_size: per view, one threshold per size.
        guard_doubt: gallery doubts the guard was calibrated at, ascending (empty: no guard).
        guard: per view, the most the threshold may be at each of ``guard_doubt``
            (non-increasing; interpolated linearly, held at the ends).
        guard_share: ``{"clean": ..., "any": ...}``, the unknown shares the guard allowed.
        guard_size: the gallery size (entries) ``guard`` was calibrated at (0: no size term).
        guard_slope: per view, the guard's change per unit of log gallery size (applied
            between ``2 * cohort`` and ``16 * guard_size`` entries, held beyond).
    """

    cohort: int = DEFAULT_COHORT
    thresholds: Mapping[str, float] = None  # type: ignore[assignment]
    strangers_named: float = 0.05
    sizes: tuple[int, ...] = ()
    by_size: Mapping[str, tuple[float, ...]] = None  # type: ignore[assignment]
    guard_doubt: tuple[float, ...] = ()
    guard: Mapping[str, tuple[float, ...]] = None  # type: ignore[assignment]
    guard_share: Mapping[str, float] = None  # type: ignore[assignment]
    guard_size: int = 0
    guard_slope: Mapping[str, float] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for name in ("thresholds", "by_size", "guard", "guard_share", "guard_slope"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, {})
        if not isinstance(self.cohort, int) or self.cohort < 2:
            raise CmceError(f"a cohort is a count of people >= 2 (their scores' spread normalises), got {self.cohort!r}")
        if list(self.sizes) != sorted(set(self.sizes)) or any(len(v) != len(self.sizes) for v in self.by_size.values()):
            raise CmceError("CohortNorm sizes must ascend, with one threshold per size for every view")
        if (list(self.guard_doubt) != sorted(set(self.guard_doubt))
                or any(len(v) != len(self.guard_doubt) for v in self.guard.values())):
            raise CmceError("CohortNorm guard_doubt must ascend, with one guard value per doubt for every view")

    @property
    def hits_needed(self) -> int:
        """Hits a search fetches so that the cohort is there even when the best person has several entries."""
        return 2 * self.cohort + 10

    def hits_for(self, gallery_size: int) -> int:
        """Hits a search of a gallery of ``gallery_size`` entries fetches for the cohort (0: too
        small a gallery for it, the raw threshold decides)."""
        return self.hits_needed if gallery_size > self.cohort else 0

    def threshold(self, view: str, gallery_size: int | None = None,
                  gallery_doubt: float | None = None) -> float | None:
        """The view's normalised threshold for a gallery of ``gallery_size`` entries and mean
        doubt ``gallery_doubt`` (None: not calibrated).

        Interpolated linearly in log size between the calibrated sizes, held at the ends;
        without ``gallery_size`` or per-size thresholds, the calibration galleries' one;
        capped by the coverage guard where ``gallery_doubt`` is given (``guard_threshold``).

        Example:
            >>> n = CohortNorm(50, {"ensemble": 5.0}, 0.05, (100, 400), {"ensemble": (4.0, 5.0)})
            >>> n.threshold("ensemble", 200), n.threshold("ensemble", 60), n.threshold("ensemble")
            (4.5, 4.0, 5.0)
        """
        if view not in self.thresholds:
            return None
        per = self.by_size.get(view)
        if gallery_size is None or not per:
            t = float(self.thresholds[view])
        else:
            t = float(np.interp(np.log(max(gallery_size, 1)), np.log(np.asarray(self.sizes, np.float64)), per))
        g = self.guard_threshold(view, gallery_doubt, gallery_size)
        return t if g is None else min(t, g)

    def threshold_per_doubt(self, view: str, gallery_size: int, gallery_doubts: np.ndarray) -> np.ndarray | None:
        """``threshold(view, gallery_size, d)`` for each doubt ``d`` of ``gallery_doubts`` at once (None: not calibrated).

        Example:
            >>> n = CohortNorm(50, {"ensemble": 5.0}, guard_doubt=(0.1, 0.5), guard={"ensemble": (6.0, 2.0)})
            >>> n.threshold_per_doubt("ensemble", 800, np.array([0.3, 0.0, np.nan])).tolist()
            [4.0, 5.0, 5.0]
        """
        base = self.threshold(view, gallery_size)
        if base is None:
            return None
        d = np.asarray(gallery_doubts, np.float64)
        out = np.full(d.shape, base)
        per, ok = self.guard.get(view), np.isfinite(d)
        if per and ok.any():
            g = np.interp(d[ok], np.asarray(self.guard_doubt, np.float64), per)
            slope = self.guard_slope.get(view)
            if slope and gallery_size and self.guard_size:
                size = min(max(gallery_size, 2 * self.cohort), 16 * self.guard_size)
                g = g + float(slope) * float(np.log(size / self.guard_size))
            out[ok] = np.minimum(base, g)
        return out

    def guard_threshold(self, view: str, gallery_doubt: float | None,
                        gallery_size: int | None = None) -> float | None:
        """The most the view's threshold may be in a gallery of this mean doubt and size (None: no guard).

        Example:
            >>> n = CohortNorm(50, {"ensemble": 5.0}, guard_doubt=(0.1, 0.5), guard={"ensemble": (6.0, 2.0)})
            >>> n.guard_threshold("ensemble", 0.3), n.threshold("ensemble", 800, 0.3), n.threshold("ensemble", 800, 0.0)
            (4.0, 4.0, 5.0)
            >>> m = dataclasses.replace(n, guard_size=400, guard_slope={"ensemble": -1.0})
            >>> round(m.guard_threshold("ensemble", 0.3, 400 * np.e), 3), m.guard_threshold("ensemble", 0.3)
            (3.0, 4.0)
        """
        per = self.guard.get(view)
        if not per or gallery_doubt is None or not np.isfinite(gallery_doubt):
            return None
        g = float(np.interp(float(gallery_doubt), np.asarray(self.guard_doubt, np.float64), per))
        slope = self.guard_slope.get(view)
        if slope and gallery_size and self.guard_size:
            size = min(max(gallery_size, 2 * self.cohort), 16 * self.guard_size)
            g += float(slope) * float(np.log(size / self.guard_size))
        return g

    def relaxed(self, view: str, gallery_size: int | None, gallery_doubt: float | None) -> bool:
        """Whether the coverage guard lowers the view's threshold in this gallery."""
        base = self.threshold(view, gallery_size)
        return base is not None and self.threshold(view, gallery_size, gallery_doubt) < base  # type: ignore[operator]

    def to_dict(self) -> dict:
        return {"cohort": self.cohort, "thresholds": dict(self.thresholds), "strangers_named": self.strangers_named,
                **({"sizes": list(self.sizes), "by_size": {k: list(v) for k, v in self.by_size.items()}}
                   if self.sizes else {}),
                **({"guard_doubt": list(self.guard_doubt), "guard": {k: list(v) for k, v in self.guard.items()},
                    "guard_share": dict(self.guard_share), "guard_size": self.guard_size,
                    "guard_slope": dict(self.guard_slope)} if self.guard_doubt else {})}

    @classmethod
    def from_dict(cls, d: Mapping) -> CohortNorm:
        return cls(int(d.get("cohort", DEFAULT_COHORT)), {k: float(v) for k, v in d.get("thresholds", {}).items()},
                   float(d.get("strangers_named", 0.05)), tuple(int(x) for x in d.get("sizes", ())),
                   {k: tuple(float(x) for x in v) for k, v in d.get("by_size", {}).items()},
                   tuple(float(x) for x in d.get("guard_doubt", ())),
                   {k: tuple(float(x) for x in v) for k, v in d.get("guard", {}).items()},
                   {k: float(v) for k, v in d.get("guard_share", {}).items()}, int(d.get("guard_size", 0)),
                   {k: float(v) for k, v in d.get("guard_slope", {}).items()})


def gallery_doubt(quality: np.ndarray) -> float:
    """A gallery's *doubt*: the mean quality score of its entries (NaN scores left out; NaN when none).

    The coverage guard of ``CohortNorm`` reads it: a gallery of poorer photos than the
    calibration's scores higher.

    Example:
        >>> gallery_doubt(np.array([0.1, 0.3, np.nan]))
        0.2
    """
    q = np.asarray(quality, np.float64)
    q = q[np.isfinite(q)]
    return float(q.mean()) if len(q) else float("nan")


def unknown_note(norm: CohortNorm | None, view: str, gallery_size: int, doubt: float) -> str:
    """One sentence for the user where the coverage guard lowers the "Unknown" threshold ("" elsewhere)."""
    if norm is None or gallery_size <= norm.cohort or not norm.relaxed(view, gallery_size, doubt):
        return ""
    base, low = norm.threshold(view, gallery_size), norm.threshold(view, gallery_size, doubt)
    return (f"This gallery's photos look poorer than those the bundle was calibrated on (mean quality score "
            f"{doubt:.3f}): so that most searches still get a name, a match needs to stand out {low:.1f} spreads "
            f"from the next {norm.cohort} people instead of {base:.1f}, and strangers are named more often "
            f"(\"strict\" keeps {base:.1f}).")


def unknown_norm(norm: CohortNorm | None, unknown_by: str | None) -> CohortNorm | None:
    """The normalised threshold a search applies: ``norm``, without its coverage guard for
    ``strict``, none for ``similarity``.

    Raises:
        CmceError: ``unknown_by`` is not one of ``UNKNOWN_BY`` (or None).
    """
    if unknown_by is not None and unknown_by not in UNKNOWN_BY:
        raise CmceError(f"unknown_by must be one of {', '.join(UNKNOWN_BY)}, got {unknown_by!r}")
    if unknown_by == "similarity":
        return None
    if unknown_by == "strict" and norm is not None:
        return dataclasses.replace(norm, guard_doubt=(), guard={})
    return norm
