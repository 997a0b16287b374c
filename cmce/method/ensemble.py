"""Fusing transformed gallery embeddings, their uncertainty, and gallery rejection.

For a gallery image x with gallery models g_1..g_N and transformers T_1..T_N, the
members are ``m_i = T_i(g_i(x))`` (unit vectors in the query model's space). Then

* stored vector: ``normalise(mean_i m_i)``;
* uncertainty: mean pairwise cosine distance ``2/(N(N-1)) sum_{i<j} (1 - m_i . m_j)``
  (``cmce.metrics.uncertainty.mean_pairwise_cosine_distance``);
* rejection: entries whose quality score exceeds the bundle's calibrated threshold
  are flagged and kept out of matching.

The quality score can be the disagreement alone (the paper), the detector's doubt
alone, both combined (``combined``): the mean of the two scores' percentile ranks
in the calibration sample, so neither's scale dominates; or ``learned``: the chance
that a search for this person misses, predicted from the disagreement, the members'
agreement and typicality and the detector's doubt (``quality.QualityPredictor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cmce.errors import CmceError
from cmce.method.quality import QualityPredictor, detection_doubt
from cmce.metrics.uncertainty import member_sum

__all__ = [
    "FUSIONS",
    "FusionGate",
    "fusion_features",
    "QUALITY_DESCRIPTIONS",
    "QUALITY_RANGES",
    "QUALITY_SCORES",
    "check_threshold",
    "QualityModel",
    "fuse_members",
    "detection_doubt",
]

QUALITY_SCORES = ("disagreement", "detection", "combined", "learned")

#: The values each quality score can take (a rejection threshold outside them means nothing).
#: ``detection`` is ``-log10 p`` clipped to [0, 6] (``cmce.method.quality``): 3 is p = 0.001.
QUALITY_RANGES = {"disagreement": (0.0, 2.0), "detection": (0.0, 6.0), "combined": (0.0, 1.0), "learned": (0.0, 1.0)}


def check_threshold(kind: str, value: object) -> float:
    """A rejection threshold typed for the quality score ``kind``, as a float in its range.

    Raises:
        CmceError: not a number, not finite, or outside ``QUALITY_RANGES[kind]`` (the message gives the range).

    >>> check_threshold("detection", "3")
    3.0
    >>> check_threshold("learned", 5)
    Traceback (most recent call last):
    ...
    cmce.errors.CmceError: a learned threshold must be from 0 to 1 (the score's range), got 5
    """
    low, high = QUALITY_RANGES.get(kind, (-np.inf, np.inf))
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if not (np.isfinite(number) and low <= number <= high):
        shown = str(value) if len(str(value)) <= 40 else str(value)[:39] + "…"
        raise CmceError(f"a {kind} threshold must be from {low:g} to {high:g} (the score's range), got {shown}")
    return number

#: What each quality score measures, in words for the app and the model card.
QUALITY_DESCRIPTIONS = {
    "disagreement": "uncertainty (the disagreement of the ensemble's members)",
    "detection": "detector doubt (-log10 of the face detector's probability)",
    "combined": "uncertainty and detector doubt together (mean of their percentile ranks)",
    "learned": "the predicted chance that a search for this person misses (learned from the members' "
               "disagreement, agreement and typicality and the detector's doubt)",
}


def fuse_members(members: Sequence[np.ndarray], present: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """The paper's stored vector: the L2-normalised mean of the members an entry has.

    The one fusion of the plain mean (``FusionGate`` kind ``mean`` calls it). The sum is
    ``cmce.metrics.uncertainty.member_sum``, the member loop the uncertainty uses too:
    each (G, D) array is streamed once, without stacking a (G, N, D) copy first.

    Args:
        members: N arrays (G, D) of unit vectors, one per member, as a list or tuple
            (a bare ndarray is refused, so a (G, N, D) stack is never misread).
        present: N (G,) bool arrays, which entries have that member (default all); an
            entry with none gets a zero row.

    Returns:
        (G, D) float32 unit vectors (zero rows for entries without a member).

    Raises:
        CmceError: no member, members not a list or tuple of (G, D) arrays of one shape,
            or ``present`` not one (G,) bool array per member.
    """
    total, _ = member_sum(members, present, dtype=np.float32)
    norm = np.linalg.norm(total, axis=1, keepdims=True)
    return (total / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class QualityModel:
    """Turns an entry's (uncertainty, detection probability, members) into one score; higher = reject first.

    Attributes:
        kind: one of ``QUALITY_SCORES``.
        uncertainty_reference: sorted calibration uncertainties (for ``combined``).
        doubt_reference: sorted calibration detection doubts (for ``combined``).
        predictor: the learned predictor (for ``learned``; bundles may carry it whatever
            their kind, so the app and ``evaluate`` can offer it).
    """

    kind: str = "disagreement"
    uncertainty_reference: tuple[float, ...] = ()
    doubt_reference: tuple[float, ...] = ()
    predictor: QualityPredictor | None = None

    def __post_init__(self) -> None:
        if self.kind not in QUALITY_SCORES:
            raise CmceError(f"quality score must be one of {QUALITY_SCORES}, got {self.kind!r}")
        if self.kind == "combined" and (not self.uncertainty_reference or not self.doubt_reference):
            raise CmceError("the combined quality score needs calibration references")
        if self.kind == "learned" and self.predictor is None:
            raise CmceError("the learned quality score needs a predictor (train the bundle with cmce train)")

    @classmethod
    def fit(cls, kind: str, uncertainty: np.ndarray, probability: np.ndarray, size: int = 512,
            predictor: QualityPredictor | None = None) -> "QualityModel":
        """Keep ``size`` quantiles of the calibration sample as references."""
        qs = np.linspace(0, 1, size)
        u = np.quantile(np.asarray(uncertainty, np.float64), qs) if len(uncertainty) else []
        d = np.quantile(detection_doubt(probability).astype(np.float64), qs) if len(probability) else []
        return cls(kind, tuple(float(x) for x in u), tuple(float(x) for x in d), predictor)

    def with_kind(self, kind: str) -> "QualityModel":
        """Another score sharing this one's references and predictor."""
        return QualityModel(kind, self.uncertainty_reference, self.doubt_reference, self.predictor)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The scores this model's calibration can give (``combined`` needs references,
        ``learned`` a predictor)."""
        return tuple(k for k in QUALITY_SCORES
                     if (k != "combined" or self.uncertainty_reference) and (k != "learned" or self.predictor))

    @property
    def description(self) -> str:
        """What the score measures, in words (``QUALITY_DESCRIPTIONS``)."""
        return QUALITY_DESCRIPTIONS[self.kind]

    @property
    def log_axis(self) -> bool:
        """Whether plots should put the score on a log axis (detector doubt spans decades)."""
        return self.kind == "detection"

    def score(self, uncertainty: np.ndarray, probability: np.ndarray, vectors: Sequence[np.ndarray] | None = None,
              present: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Quality score per entry (G,) float32; higher = less trustworthy.

        ``vectors`` (the members in the query space, bundle order) and ``present`` are
        needed by ``learned`` only.
        """
        u = np.asarray(uncertainty, dtype=np.float32)
        if self.kind == "learned":
            if vectors is None:
                raise CmceError("the learned quality score needs the members' vectors")
            return self.predictor.predict(vectors, present, probability, u)
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
        out = {
            "kind": self.kind,
            "uncertainty_reference": list(self.uncertainty_reference),
            "doubt_reference": list(self.doubt_reference),
        }
        if self.predictor is not None:  # absent otherwise: older bundles' configs stay as they were
            out["predictor"] = self.predictor.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "QualityModel":
        pred = data.get("predictor")
        return cls(
            data.get("kind", "disagreement"),
            tuple(data.get("uncertainty_reference", ())),
            tuple(data.get("doubt_reference", ())),
            QualityPredictor.from_dict(pred) if pred else None,
        )


# --------------------------------------------------------------------------- robust fusion

#: How a bundle fuses its members: the paper's plain mean, one learned weight per
#: member for every entry, or per-entry weights from a small gate.
FUSIONS = ("mean", "weighted", "gated")

FUSION_DESCRIPTIONS = {
    "mean": "the plain mean of the members (the paper)",
    "weighted": "a learned weight per member, the same for every entry",
    "gated": "per-entry member weights from a small learned gate over the members' agreement and the detector's doubt",
}


def fusion_features(vectors: Sequence[np.ndarray], present: Sequence[np.ndarray] | None,
                    probability: np.ndarray) -> np.ndarray:
    """Per-entry inputs of the fusion gate, (G, F) float32 with F = M(M-1)/2 + M + 1.

    The cosine of every pair of members (0 where either is missing), which members are
    present, and the detector's doubt (``detection_doubt``) scaled to [0, 1].
    """
    m = len(vectors)
    g = len(probability)
    pres = [np.ones(g, bool) if present is None else np.asarray(present[i], bool) for i in range(m)]
    cols = []
    for i in range(m):
        for j in range(i + 1, m):
            c = np.einsum("gd,gd->g", vectors[i], vectors[j])
            cols.append(np.where(pres[i] & pres[j], c, 0.0))
    cols += [p.astype(np.float32) for p in pres]
    cols.append(detection_doubt(probability) / 6.0)
    return np.stack(cols, axis=1).astype(np.float32)


@dataclass(frozen=True)
class FusionGate:
    """Member weights per gallery entry; the stored vector is ``normalise(sum_i w_i m_i)``.

    ``kind="mean"``: equal weights over the present members (the paper). ``"weighted"``:
    ``w = softmax(bias)`` over the present members. ``"gated"``:
    ``w = softmax(W2 tanh(W1 f + b1) + bias)`` with ``f = fusion_features(...)``, so an
    entry whose members disagree, or whose face the detector doubts, can lean on the
    members that stay reliable on such photos. Missing members get weight 0.

    Attributes:
        kind: one of ``FUSIONS``.
        members: the member names, in the bundle's order.
        w1, b1, w2: the gate's layers (``gated`` only), nested lists for JSON.
        bias: (M,) logit offset per member (``weighted`` and ``gated``).
    """

    kind: str = "mean"
    members: tuple[str, ...] = ()
    w1: tuple = ()
    b1: tuple = ()
    w2: tuple = ()
    bias: tuple = ()

    def __post_init__(self) -> None:
        if self.kind not in FUSIONS:
            raise CmceError(f"fusion must be one of {FUSIONS}, got {self.kind!r}")
        m = len(self.members)
        if self.kind != "mean" and len(self.bias) != m:
            raise CmceError(f"{self.kind} fusion needs one bias per member ({m}), got {len(self.bias)}")
        if self.kind == "gated":
            f = m * (m - 1) // 2 + m + 1
            w1 = np.asarray(self.w1, np.float32)
            if w1.ndim != 2 or w1.shape[1] != f or np.asarray(self.w2).shape != (m, w1.shape[0]) \
                    or len(self.b1) != w1.shape[0]:
                raise CmceError(f"gated fusion over {m} members needs w1 (H, {f}), b1 (H,), w2 ({m}, H)")

    @property
    def description(self) -> str:
        return FUSION_DESCRIPTIONS[self.kind]

    def weights(self, vectors: Sequence[np.ndarray], present: Sequence[np.ndarray] | None,
                probability: np.ndarray) -> np.ndarray:
        """(G, M) member weights, summing to 1 over each entry's present members."""
        g, m = len(probability), len(vectors)
        pres = np.stack([np.ones(g, bool) if present is None else np.asarray(present[i], bool) for i in range(m)], 1)
        logits = np.zeros((g, m), np.float32)
        if self.kind != "mean":
            if m != len(self.members):
                raise CmceError(f"this fusion was learned for members {list(self.members)}, got {m} member arrays")
            logits = logits + np.asarray(self.bias, np.float32)[None, :]
        if self.kind == "gated":
            h = np.tanh(fusion_features(vectors, present, probability) @ np.asarray(self.w1, np.float32).T
                        + np.asarray(self.b1, np.float32))
            logits = logits + h @ np.asarray(self.w2, np.float32).T
        logits = np.where(pres, logits, -np.inf)
        top = np.max(np.where(pres, logits, -1e30), axis=1, keepdims=True)
        e = np.where(pres, np.exp(logits - top), 0.0)
        total = e.sum(axis=1, keepdims=True)
        return np.divide(e, total, out=np.zeros_like(e), where=total > 0).astype(np.float32)

    def fuse(self, vectors: Sequence[np.ndarray], present: Sequence[np.ndarray] | None,
             probability: np.ndarray) -> np.ndarray:
        """(G, D) fused unit vectors (zero rows where no member is present)."""
        if self.kind == "mean":
            return fuse_members(vectors, present)
        w = self.weights(vectors, present, probability)
        total = np.zeros_like(vectors[0], dtype=np.float32)
        for i, v in enumerate(vectors):
            total += w[:, i:i + 1] * v
        n = np.linalg.norm(total, axis=1, keepdims=True)
        return np.divide(total, n, out=np.zeros_like(total), where=n > 0).astype(np.float32)

    def to_dict(self) -> dict:
        if self.kind == "mean":
            return {"kind": "mean"}
        return {"kind": self.kind, "members": list(self.members), "bias": [float(x) for x in self.bias],
                **({"w1": [list(map(float, r)) for r in self.w1], "b1": [float(x) for x in self.b1],
                    "w2": [list(map(float, r)) for r in self.w2]} if self.kind == "gated" else {})}

    @classmethod
    def from_dict(cls, data: dict | None) -> "FusionGate":
        data = data or {"kind": "mean"}
        return cls(data.get("kind", "mean"), tuple(data.get("members", ())),
                   tuple(tuple(r) for r in data.get("w1", ())), tuple(data.get("b1", ())),
                   tuple(tuple(r) for r in data.get("w2", ())), tuple(data.get("bias", ())))
