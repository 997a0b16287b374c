"""The grouping threshold from labelled faces (a bundle's training identities), never the test set.

``threshold_curve`` groups the labelled faces at every threshold of a grid (one k-NN graph at the
lowest threshold, its edges filtered for each higher one) and scores each grouping by BCubed F;
``calibrate_threshold`` keeps the threshold of the best F. The curve is kept: a graph clustering a
few hundredths under its best threshold can chain whole galleries into one person, and the
curve shows how steep that edge is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from cmce.errors import PeopleError
from cmce.metrics.clustering import bcubed, pairwise_prf
from cmce.people.graph import cluster, knn_graph

__all__ = ["ATTACH_ABOVE_GRID", "ATTACH_MARGIN_GRID", "CurvePoint", "DETACH_BELOW_GRID", "calibrate_detach", "GroupingCalibration", "THRESHOLD_GRID",
           "calibrate_attach", "calibrate_threshold", "threshold_curve"]

THRESHOLD_GRID = tuple(round(0.20 + 0.02 * i, 2) for i in range(36))
"""Thresholds tried: 0.20, 0.22, ..., 0.90."""


@dataclass(frozen=True)
class CurvePoint:
    """One threshold's grouping of the labelled faces: BCubed P/R/F, pairwise F, people found."""

    threshold: float
    precision: float
    recall: float
    f: float
    pairwise_f: float
    people: int

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "bcubed_precision": self.precision, "bcubed_recall": self.recall,
                "bcubed_f": self.f, "pairwise_f": self.pairwise_f, "people": self.people}


@dataclass(frozen=True)
class GroupingCalibration:
    """The threshold of the best BCubed F on labelled faces, with the curve it was read from."""

    method: str
    threshold: float
    curve: tuple[CurvePoint, ...]
    faces: int
    identities: int

    @property
    def best(self) -> CurvePoint:
        return next(p for p in self.curve if p.threshold == self.threshold)

    def to_dict(self) -> dict:
        return {"method": self.method, "threshold": self.threshold, "faces": self.faces,
                "identities": self.identities, "curve": [p.to_dict() for p in self.curve]}


def _filtered(graph: sp.csr_matrix, threshold: float) -> sp.csr_matrix:
    g = graph.copy()
    g.data[g.data < threshold] = 0
    g.eliminate_zeros()
    return g


def threshold_curve(vectors: np.ndarray, truth: Sequence, *, method: str, thresholds: Sequence[float] = THRESHOLD_GRID,
                    k: int = 30, seed: int = 0) -> list[CurvePoint]:
    """BCubed and pairwise figures of the grouping of labelled faces at each threshold."""
    v = np.ascontiguousarray(vectors, np.float32)
    truth = np.asarray(truth)
    if len(v) != len(truth) or not len(v):
        raise PeopleError(f"one label per face is needed; got {len(v)} faces and {len(truth)} labels")
    ts = sorted(float(t) for t in thresholds)
    base = knn_graph(v, k=k, threshold=ts[0])
    out = []
    for t in ts:
        lab = cluster(method, _filtered(base, t), vectors=v, threshold=t, seed=seed)
        p, r, f = bcubed(lab, truth)
        out.append(CurvePoint(t, p, r, f, pairwise_prf(lab, truth)[2], int(len(np.unique(lab)))))
        if method == "hdbscan":  # it does not read the threshold: one point says it all
            break
    return out


def calibrate_threshold(vectors: np.ndarray, truth: Sequence, *, method: str,
                        thresholds: Sequence[float] = THRESHOLD_GRID, k: int = 30, seed: int = 0) -> GroupingCalibration:
    """The threshold of the best BCubed F on ``vectors`` labelled ``truth`` (ties: the higher threshold).

    Example:
        Two tight people far apart are grouped perfectly at any threshold between them::

            >>> x = np.array([[1, 0], [0.99, 0.141], [0, 1], [0.141, 0.99]], np.float32)
            >>> x /= np.linalg.norm(x, axis=1, keepdims=True)
            >>> cal = calibrate_threshold(x, [0, 0, 1, 1], method="components", thresholds=[0.0, 0.5, 0.95])
            >>> cal.threshold, round(cal.best.f, 3)
            (0.95, 1.0)
    """
    curve = threshold_curve(vectors, truth, method=method, thresholds=thresholds, k=k, seed=seed)
    best = max(curve, key=lambda p: (round(p.f, 9), p.threshold))
    return GroupingCalibration(method, best.threshold, tuple(curve), len(vectors), int(len(np.unique(truth))))


ATTACH_ABOVE_GRID = (0.40, 0.45, 0.50, 0.55, 0.60)
"""``attach_above`` values tried by :func:`calibrate_attach`."""
ATTACH_MARGIN_GRID = (0.05, 0.10, 0.15)
"""``attach_margin`` values tried by :func:`calibrate_attach`."""


def calibrate_attach(libraries: Sequence[tuple[np.ndarray, Sequence]], config, *,
                     above: Sequence[float] = ATTACH_ABOVE_GRID,
                     margins: Sequence[float] = ATTACH_MARGIN_GRID) -> dict:
    """The attach pass (``GroupingConfig.attach_above`` / ``attach_margin``) of the best mean BCubed F.

    Each labelled library (grouping vectors, identities) is grouped with ``config`` without the
    pass and with every pair of the grid; the pair of the best mean F over the libraries is kept
    when it beats no pass at all (ties: no pass, then the higher ``above``, the larger margin).

    Returns:
        JSON-ready: ``attach_above`` (None: no pass), ``attach_margin``, ``mean_f`` and the
        ``grid`` (one point per pair, ``attach_above`` None for no pass, with each library's F).
    """
    from dataclasses import replace

    from cmce.metrics.clustering import bcubed
    from cmce.people.grouping import group_faces

    points = []
    for a, m in [(None, 0.0)] + [(float(a), float(m)) for a in above for m in margins]:
        cfg = replace(config, attach_above=a, attach_margin=m if a is not None else config.attach_margin)
        fs = [float(bcubed(group_faces(v, config=cfg).labels, np.asarray(t))[2]) for v, t in libraries]
        points.append({"attach_above": a, "attach_margin": m, "f": fs, "mean_f": float(np.mean(fs))})
    best = max(points, key=lambda p: (round(p["mean_f"], 9), p["attach_above"] is None,
                                      p["attach_above"] or 0.0, p["attach_margin"]))
    return {"attach_above": best["attach_above"], "attach_margin": best["attach_margin"] if best["attach_above"]
            is not None else config.attach_margin, "mean_f": best["mean_f"], "grid": points}


DETACH_BELOW_GRID = tuple(round(0.36 + 0.02 * i, 2) for i in range(11))
"""``detach_below`` values tried by :func:`calibrate_detach`: 0.36, 0.38, ..., 0.56."""


def calibrate_detach(libraries: Sequence[tuple[np.ndarray, Sequence]], config, *,
                     below: Sequence[float] = DETACH_BELOW_GRID) -> dict:
    """The detach pass (``GroupingConfig.detach_below``) of the best mean BCubed F, the rest of ``config`` kept.

    Each labelled library (grouping vectors, identities) is grouped with ``config`` (its attach
    pass included) without the detach pass and at every value of the grid; the value of the best
    mean F over the libraries is kept when it beats no pass at all (ties: no pass, then the lower,
    more cautious value).

    Example:
        Bo's face chained into Ada's person through one close face: detached at 0.7, not at 0.2::

            >>> v = np.array([[1, 0], [0.95, 0.31], [0.95, -0.31], [0.6, 0.8]], np.float32)
            >>> v /= np.linalg.norm(v, axis=1, keepdims=True)
            >>> from cmce.people.grouping import GroupingConfig
            >>> cal = calibrate_detach([(v, ["Ada", "Ada", "Ada", "Bo"])], GroupingConfig(threshold=0.8,
            ...                        method="components"), below=[0.2, 0.7])
            >>> cal["detach_below"], [round(p["mean_f"], 3) for p in cal["grid"]]
            (0.7, [0.769, 0.769, 1.0])

    Returns:
        JSON-ready: ``detach_below`` (None: no pass), ``mean_f`` and the ``grid`` (one point per
        value, ``detach_below`` None for no pass, with each library's F).
    """
    from dataclasses import replace

    from cmce.people.grouping import group_faces

    points = []
    for b in [None] + [float(x) for x in below]:
        cfg = replace(config, detach_below=b)
        fs = [float(bcubed(group_faces(v, config=cfg).labels, np.asarray(t))[2]) for v, t in libraries]
        points.append({"detach_below": b, "f": fs, "mean_f": float(np.mean(fs))})
    best = max(points, key=lambda p: (round(p["mean_f"], 9), p["detach_below"] is None, -(p["detach_below"] or 0.0)))
    return {"detach_below": best["detach_below"], "mean_f": best["mean_f"], "grid": points}
