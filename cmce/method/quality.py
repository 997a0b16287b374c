"""A learned quality score: the predicted chance that a search for this person misses.

The paper rejects the gallery entries whose ensemble members disagree most. On
galleries of mixed photo quality that signal is strong but not alone: a blurred, dark
or tiny face often gets members that agree with each other *and* sit near the centre
of the face space, where every unrecognisable face lands, and the detector doubts
some of those photos too. ``QualityPredictor`` weighs these signals with a logistic
regression fitted on out-of-fold gallery entries (the transformers never saw their
identities), clean and degraded, to predict the share of an entry's queries that miss
at rank 1. Its score is that predicted chance, a probability in [0, 1].

Inputs per entry (``FEATURE_GROUPS``), all computed from what a gallery stores:

``disagreement``  the members' mean pairwise cosine distance (the paper's uncertainty)
``doubt``         the detector's doubt, ``-log10 p`` scaled to [0, 1]
``pairs``         the cosine of every pair of members
``typicality``    each member's cosine to the centre of the training entries'
                  member vectors: unrecognisable faces crowd towards it

A feature an entry cannot have (a missing member, NaN disagreement with a single
member) is set to its training mean, so it neither raises nor lowers the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cmce.errors import CmceError

__all__ = ["FEATURE_GROUPS", "QualityPredictor", "detection_doubt", "fit_logistic", "fit_quality_predictor",
           "predictor_features"]

FEATURE_GROUPS = ("disagreement", "doubt", "pairs", "typicality")


def detection_doubt(probability: np.ndarray) -> np.ndarray:
    """How unsure the detector was: ``-log10(p)`` clipped to [0, 6]; higher = worse.

    MTCNN probabilities of real faces sit within 1e-3 of 1, so the log stretches them.
    """
    p = np.clip(np.asarray(probability, dtype=np.float64), 1e-6, 1.0)
    return np.clip(-np.log10(p), 0.0, 6.0).astype(np.float32)


def _presence(present: Sequence[np.ndarray] | None, m: int, g: int) -> list[np.ndarray]:
    return [np.ones(g, bool) if present is None else np.asarray(present[i], bool) for i in range(m)]


def predictor_features(vectors: Sequence[np.ndarray], present: Sequence[np.ndarray] | None,
                       probability: np.ndarray, uncertainty: np.ndarray, centres: Sequence[np.ndarray],
                       groups: Sequence[str] = FEATURE_GROUPS) -> tuple[np.ndarray, np.ndarray]:
    """Raw inputs of the predictor and which of them each entry has.

    Args:
        vectors: M arrays (G, D), the members in the query model's space (unit vectors).
        present: M (G,) bool arrays, which entries have each member (default all).
        probability: (G,) detector probability.
        uncertainty: (G,) the members' disagreement (NaN where it cannot be measured).
        centres: M (D,) unit vectors, the centre of each member's training vectors.
        groups: which ``FEATURE_GROUPS`` to use, in that order.

    Returns:
        ((G, F) float64 features, (G, F) bool: the feature is defined for the entry).
    """
    bad = [x for x in groups if x not in FEATURE_GROUPS]
    if bad or not groups:
        raise CmceError(f"unknown quality feature groups {bad or '(none)'}; valid: {', '.join(FEATURE_GROUPS)}")
    m, g = len(vectors), len(probability)
    pres = _presence(present, m, g)
    cols: list[np.ndarray] = []
    ok: list[np.ndarray] = []
    for group in groups:
        if group == "disagreement":
            u = np.asarray(uncertainty, np.float64)
            cols.append(np.nan_to_num(u, nan=0.0))
            ok.append(~np.isnan(u))
        elif group == "doubt":
            cols.append(detection_doubt(probability).astype(np.float64) / 6.0)
            ok.append(np.ones(g, bool))
        elif group == "pairs":
            for i in range(m):
                for j in range(i + 1, m):
                    cols.append(np.einsum("gd,gd->g", vectors[i], vectors[j]).astype(np.float64))
                    ok.append(pres[i] & pres[j])
        else:  # typicality
            if len(centres) != m:
                raise CmceError(f"typicality needs one centre per member ({m}), got {len(centres)}")
            for i in range(m):
                cols.append((np.asarray(vectors[i], np.float32) @ np.asarray(centres[i], np.float32)).astype(np.float64))
                ok.append(pres[i])
    x = np.stack(cols, axis=1)
    valid = np.stack(ok, axis=1)
    return np.where(valid, x, 0.0), valid


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float = 1.0,
                 iterations: int = 100) -> tuple[np.ndarray, float]:
    """Weighted logistic regression with an L2 penalty (not on the intercept), by Newton's method.

    Minimises ``sum_i w_i CE(y_i, sigmoid(x_i . beta + b)) + l2/2 |beta|^2``. Labels may
    be soft (in [0, 1]). Pure: same inputs, same result.

    Args:
        x: (N, F) features (standardise them first).
        y: (N,) targets in [0, 1].
        weight: (N,) non-negative sample weights.
        l2: penalty on the coefficients.

    Returns:
        (coefficients (F,), intercept).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    w = np.asarray(weight, np.float64)
    if x.ndim != 2 or y.shape != (len(x),) or w.shape != (len(x),):
        raise CmceError(f"fit_logistic needs x (N, F), y (N,), weight (N,); got {x.shape}, {y.shape}, {w.shape}")
    if np.any(w < 0) or np.any((y < 0) | (y > 1)) or not np.isfinite(x).all():
        raise CmceError("fit_logistic needs finite features, targets in [0, 1] and non-negative weights")
    n, f = x.shape
    a = np.concatenate([x, np.ones((n, 1))], axis=1)
    beta = np.zeros(f + 1)
    reg = np.full(f + 1, float(l2))
    reg[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ beta, -30, 30)))
        grad = a.T @ (w * (p - y)) + reg * beta
        hess = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(reg) + 1e-9 * np.eye(f + 1)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-9:
            break
    return beta[:-1], float(beta[-1])


@dataclass(frozen=True)
class QualityPredictor:
    """Logistic regression from an entry's features to the chance that its queries miss.

    Attributes:
        members: the member names, in the bundle's order.
        groups: the ``FEATURE_GROUPS`` used, in order.
        centres: one unit vector per member (typicality), nested lists for JSON.
        mean, scale: standardisation of each feature (training sample).
        coef, intercept: the regression.
    """

    members: tuple[str, ...]
    groups: tuple[str, ...]
    centres: tuple
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    def __post_init__(self) -> None:
        if not (len(self.mean) == len(self.scale) == len(self.coef)):
            raise CmceError("quality predictor: mean, scale and coef must have one value per feature")

    def predict(self, vectors: Sequence[np.ndarray], present: Sequence[np.ndarray] | None,
                probability: np.ndarray, uncertainty: np.ndarray) -> np.ndarray:
        """(G,) float32 predicted chance that a query of the entry's person misses at rank 1."""
        if len(vectors) != len(self.members):
            raise CmceError(f"this quality predictor was learned for members {list(self.members)}, "
                            f"got {len(vectors)} member arrays")
        x, valid = predictor_features(vectors, present, probability, uncertainty,
                                      [np.asarray(c, np.float32) for c in self.centres], self.groups)
        if x.shape[1] != len(self.coef):
            raise CmceError(f"quality predictor expects {len(self.coef)} features, the inputs give {x.shape[1]}")
        z = np.where(valid, (x - np.asarray(self.mean)) / np.asarray(self.scale), 0.0)
        logit = z @ np.asarray(self.coef) + self.intercept
        return (1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))).astype(np.float32)

    def to_dict(self) -> dict:
        return {"members": list(self.members), "groups": list(self.groups),
                "centres": [[float(v) for v in c] for c in self.centres],
                "mean": [float(v) for v in self.mean], "scale": [float(v) for v in self.scale],
                "coef": [float(v) for v in self.coef], "intercept": float(self.intercept)}

    @classmethod
    def from_dict(cls, data: dict) -> QualityPredictor:
        try:
            return cls(tuple(data["members"]), tuple(data["groups"]), tuple(tuple(c) for c in data["centres"]),
                       tuple(data["mean"]), tuple(data["scale"]), tuple(data["coef"]), float(data["intercept"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CmceError(f"malformed quality predictor in the bundle config: {e}") from e


def member_centres(vectors: Sequence[np.ndarray], present: Sequence[np.ndarray] | None) -> list[np.ndarray]:
    """The normalised mean of each member's vectors over the entries that have it."""
    pres = _presence(present, len(vectors), len(vectors[0]))
    out = []
    for v, p in zip(vectors, pres):
        c = np.asarray(v, np.float64)[p].mean(axis=0) if p.any() else np.zeros(np.asarray(v).shape[1])
        out.append((c / max(float(np.linalg.norm(c)), 1e-12)).astype(np.float32))
    return out


def fit_quality_predictor(members: Sequence[str], vectors: Sequence[np.ndarray], present: Sequence[np.ndarray] | None,
                          probability: np.ndarray, uncertainty: np.ndarray, misses: np.ndarray, queries: np.ndarray,
                          *, groups: Sequence[str] = FEATURE_GROUPS, l2: float = 1.0) -> QualityPredictor:
    """Fit ``QualityPredictor`` on gallery entries whose queries' outcomes are known.

    Args:
        members, vectors, present, probability, uncertainty: as ``predictor_features``,
            for out-of-fold entries (the transformers did not see their identities).
        misses: (G,) how many of the entry's queries missed at rank 1.
        queries: (G,) how many queries the entry had; entries with none are left out.
        groups: which ``FEATURE_GROUPS`` to use.
        l2: penalty on the standardised coefficients.
    """
    misses = np.asarray(misses, np.float64)
    queries = np.asarray(queries, np.float64)
    keep = queries > 0
    if keep.sum() < 20 or misses[keep].sum() < 1 or (queries - misses)[keep].sum() < 1:
        raise CmceError(f"too few gallery entries with queries, hits and misses to learn a quality score "
                        f"({int(keep.sum())} entries, {int(misses[keep].sum())} misses)")
    centres = member_centres(vectors, present)
    x, valid = predictor_features(vectors, present, probability, uncertainty, centres, groups)
    x, valid = x[keep], valid[keep]
    mean = np.array([x[valid[:, j], j].mean() if valid[:, j].any() else 0.0 for j in range(x.shape[1])])
    scale = np.array([x[valid[:, j], j].std() if valid[:, j].any() else 1.0 for j in range(x.shape[1])])
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = np.where(valid, (x - mean) / scale, 0.0)
    # the share missed as a soft label, each entry weighted by its queries
    coef, intercept = fit_logistic(z, misses[keep] / queries[keep], queries[keep], l2=l2)
    return QualityPredictor(tuple(members), tuple(groups), tuple(tuple(float(v) for v in c) for c in centres),
                            tuple(float(v) for v in mean), tuple(float(v) for v in scale),
                            tuple(float(v) for v in coef), intercept)
