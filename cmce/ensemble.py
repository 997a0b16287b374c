"""Fusing transformed gallery embeddings, their uncertainty, and gallery rejection.

For a gallery image x with gallery models g_1..g_N and transformers T_1..T_N, the
members are ``m_i = T_i(g_i(x))`` (unit vectors in the query model's space). Then

* stored vector: ``normalise(mean_i m_i)``;
* uncertainty: mean pairwise cosine distance ``2/(N(N-1)) sum_{i<j} (1 - m_i . m_j)``;
* rejection: entries whose quality score exceeds the bundle's calibrated threshold
  are flagged and kept out of matching.

The quality score can be the disagreement alone (the paper), the detector's doubt
alone, or both combined (``combined``): the mean of the two scores' percentile ranks
in the calibration sample, so neither's scale dominates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import CmceError
from .metrics import mean_pairwise_cosine_distance

__all__ = [
    "QUALITY_DESCRIPTIONS",
    "QUALITY_SCORES",
    "QualityModel",
    "fuse_member_list",
    "fuse_members",
    "member_list_uncertainty",
    "member_uncertainty",
    "detection_doubt",
]

QUALITY_SCORES = ("disagreement", "detection", "combined")

#: What each quality score measures, in words for the app and the model card.
QUALITY_DESCRIPTIONS = {
    "disagreement": "uncertainty (the disagreement of the ensemble's members)",
    "detection": "detector doubt (-log10 of the face detector's probability)",
    "combined": "uncertainty and detector doubt together (mean of their percentile ranks)",
}


def _masked_sum(vectors: Sequence[np.ndarray], present: Sequence[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """Sum of the present members and their count per entry, one member at a time.

    Member by member (N <= 4 here) streams each (G, D) array once, without stacking a
    (G, N, D) copy first.
    """
    g, d = vectors[0].shape
    total = np.zeros((g, d), np.float32)
    count = np.zeros(g, np.float32)
    for i, v in enumerate(vectors):
        w = None if present is None else np.asarray(present[i], bool)
        if w is None or w.all():
            total += v
            count += 1.0
        elif w.any():
            total[w] += v[w]
            count += w
    return total, count


def fuse_member_list(vectors: Sequence[np.ndarray], present: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """L2-normalised mean of the members an entry has, members given one by one.

    Args:
        vectors: N arrays (G, D) of unit vectors, one per member.
        present: N (G,) bool arrays, which entries have that member (default all); an
            entry with none gets a zero row.

    Returns:
        (G, D) float32 unit vectors (zero rows for entries without a member).
    """
    if not len(vectors):
        raise CmceError("fuse_member_list needs at least one member")
    total, _ = _masked_sum([np.asarray(v, np.float32) for v in vectors], present)
    norm = np.linalg.norm(total, axis=1, keepdims=True)
    return (total / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)


def fuse_members(members: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """L2-normalised mean of the members an entry has.

    Args:
        members: (G, N, D) unit vectors, N members per gallery entry.
        present: (G, N) bool, which members each entry has (default all); an entry
            with none gets a zero row.

    Returns:
        (G, D) float32 unit vectors (zero rows for entries without a member).
    """
    members = np.asarray(members, dtype=np.float32)
    if members.ndim != 3 or members.shape[1] == 0:
        raise CmceError(f"members must be (G, N>=1, D), got {members.shape}")
    if present is not None and np.asarray(present).shape != members.shape[:2]:
        raise CmceError(f"present must be (G, N) = {members.shape[:2]}, got {np.asarray(present).shape}")
    n = members.shape[1]
    return fuse_member_list([members[:, i] for i in range(n)],
                            None if present is None else [np.asarray(present)[:, i] for i in range(n)])


def member_list_uncertainty(vectors: Sequence[np.ndarray], present: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Mean pairwise cosine distance between the members an entry has, members one by one.

    With the members' sum ``s`` and count ``n`` per entry (unit vectors):
    ``1 - (||s||^2 - n) / (n (n - 1))``. Entries with fewer than two members have no
    pair to compare: NaN.

    Args:
        vectors: N arrays (G, D) of unit vectors.
        present: N (G,) bool arrays (default all).

    Returns:
        (G,) float32.
    """
    total, n = _masked_sum([np.asarray(v, np.float32) for v in vectors], present)
    sq = np.einsum("gd,gd->g", total, total)
    with np.errstate(divide="ignore", invalid="ignore"):
        unc = np.clip(1.0 - (sq - n) / (n * (n - 1)), 0.0, 2.0)
    return np.where(n >= 2, unc, np.nan).astype(np.float32)


def member_uncertainty(members: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """Mean pairwise cosine distance between the members an entry has.

    Args:
        members: (G, N, D) unit vectors.
        present: (G, N) bool (default all). Entries with fewer than two members have no
            pair to compare: NaN.

    Returns:
        (G,) float32.
    """
    members = np.asarray(members, dtype=np.float32)
    if present is None:
        return mean_pairwise_cosine_distance(members).astype(np.float32)
    n = members.shape[1]
    return member_list_uncertainty([members[:, i] for i in range(n)],
                                   [np.asarray(present)[:, i] for i in range(n)])


def detection_doubt(probability: np.ndarray) -> np.ndarray:
    """How unsure the detector was: ``-log10(p)`` clipped to [0, 6]; higher = worse.

    MTCNN probabilities of real faces sit within 1e-3 of 1, so the log stretches them.
    """
    p = np.clip(np.asarray(probability, dtype=np.float64), 1e-6, 1.0)
    return np.clip(-np.log10(p), 0.0, 6.0).astype(np.float32)


@dataclass(frozen=True)
class QualityModel:
    """Turns (uncertainty, detection probability) into one score; higher = reject first.

    Attributes:
        kind: one of ``QUALITY_SCORES``.
        uncertainty_reference: sorted calibration uncertainties (for ``combined``).
        doubt_reference: sorted calibration detection doubts (for ``combined``).
    """

    kind: str = "disagreement"
    uncertainty_reference: tuple[float, ...] = ()
    doubt_reference: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in QUALITY_SCORES:
            raise CmceError(f"quality score must be one of {QUALITY_SCORES}, got {self.kind!r}")
        if self.kind == "combined" and (not self.uncertainty_reference or not self.doubt_reference):
            raise CmceError("the combined quality score needs calibration references")

    @classmethod
    def fit(cls, kind: str, uncertainty: np.ndarray, probability: np.ndarray, size: int = 512) -> "QualityModel":
        """Keep ``size`` quantiles of the calibration sample as references."""
        qs = np.linspace(0, 1, size)
        u = np.quantile(np.asarray(uncertainty, np.float64), qs) if len(uncertainty) else []
        d = np.quantile(detection_doubt(probability).astype(np.float64), qs) if len(probability) else []
        return cls(kind, tuple(float(x) for x in u), tuple(float(x) for x in d))

    @property
    def description(self) -> str:
        """What the score measures, in words (``QUALITY_DESCRIPTIONS``)."""
        return QUALITY_DESCRIPTIONS[self.kind]

    @property
    def log_axis(self) -> bool:
        """Whether plots should put the score on a log axis (detector doubt spans decades)."""
        return self.kind == "detection"

    def score(self, uncertainty: np.ndarray, probability: np.ndarray) -> np.ndarray:
        """Quality score per entry (G,) float32; higher = less trustworthy."""
        u = np.asarray(uncertainty, dtype=np.float32)
        if self.kind == "disagreement":
            return u  # NaN (a single member) stays NaN: never rejected by disagreement
        d = detection_doubt(probability)
        if self.kind == "detection":
            return d
        ru = np.searchsorted(np.asarray(self.uncertainty_reference), u, side="right") / len(self.uncertainty_reference)
        rd = np.searchsorted(np.asarray(self.doubt_reference), d, side="right") / len(self.doubt_reference)
        # A tiny share of the raw uncertainty breaks ties of equal ranks; an entry
        # without a measurable uncertainty (a single member) is ranked by doubt alone.
        return np.where(np.isnan(u), rd, 0.5 * (ru + rd) + 1e-3 * u).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "uncertainty_reference": list(self.uncertainty_reference),
            "doubt_reference": list(self.doubt_reference),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "QualityModel":
        return cls(
            data.get("kind", "disagreement"),
            tuple(data.get("uncertainty_reference", ())),
            tuple(data.get("doubt_reference", ())),
        )
