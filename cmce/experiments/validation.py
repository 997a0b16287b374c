"""Measurements on validation galleries that choose and calibrate a bundle.

Recall@1 of the served ensemble (``ensemble_recall``, ``member_recalls``), Recall@1
after rejecting gallery entries by each quality score (``quality_curves``,
``pick_quality``), the learned quality score's training data (``entry_outcomes``,
``fit_quality``), and the thresholds of the bundle's ``Calibration``
(``calibrate_validation``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cmce.errors import DatasetError
from cmce.method.bundle_model import Bundle, Calibration
from cmce.method.ensemble import QUALITY_SCORES, QualityModel
from cmce.method.quality import QualityPredictor, fit_quality_predictor
from cmce.metrics.rejection import gallery_rejection_mask, threshold_for_rate
from cmce.metrics.retrieval import entry_misses, recall_at_k
from cmce.metrics.verification import threshold_at_far, verification_scores
from cmce.models.transform import first_image_protocol

__all__ = ["QUALITY_RATES", "calibrate_validation", "ensemble_recall", "entry_outcomes", "fit_quality",
           "member_recalls", "pick_quality", "quality_curves"]

QUALITY_RATES = (0.05, 0.1, 0.2, 0.3)


def quality_curves(bundle: Bundle, emb: dict, prob: np.ndarray, labels: np.ndarray,
                   random_repeats: int = 5, predictor: QualityPredictor | None = None) -> tuple[dict, int, float]:
    """Recall@1 after rejecting 5/10/20/30% of the gallery by each quality score.

    Measured on the ensemble ``bundle`` serves (with the query model's own gallery
    embedding as a member when ``bundle.query_member``): a score is chosen for the
    errors that ensemble makes. The combined score's ranks are fitted on this very
    gallery; ``learned`` (measured when a ``predictor`` is given) must have been fitted
    on other identities. ``random`` is the mean of ``random_repeats`` random rejections (seeded).

    Returns:
        (quality kind or ``random`` -> list of Recall@1 per rate, number of queries,
        Recall@1 with nothing rejected).
    """
    gi, qi = first_image_protocol(labels)
    gv = bundle.gallery_vectors({m: v[gi] for m, v in emb.items()}, prob[gi])
    q_lab, g_lab = labels[qi], labels[gi]
    sim = emb[bundle.query_model][qi] @ gv.ensemble.T
    ref = QualityModel.fit("combined", gv.uncertainty, prob[gi], predictor=predictor)
    curves = {}
    for kind in ref.kinds:
        s = ref.with_kind(kind).score(gv.uncertainty, prob[gi], *gv.member_arrays())
        curves[kind] = [_rejected_recall(sim, q_lab, g_lab, s, r) for r in QUALITY_RATES]
    rng = np.random.default_rng(0)
    draws = [rng.random(len(gi)) for _ in range(random_repeats)]
    curves["random"] = [float(np.mean([_rejected_recall(sim, q_lab, g_lab, d, r) for d in draws]))
                        for r in QUALITY_RATES]
    return curves, len(qi), recall_at_k(sim, q_lab, g_lab, ks=(1,))[1]


def _rejected_recall(sim: np.ndarray, q_lab: np.ndarray, g_lab: np.ndarray, score: np.ndarray, rate: float
                     ) -> float:
    """Recall@1 of ``sim`` with the ``rate`` of gallery entries of lowest ``score`` rejected."""
    return recall_at_k(sim, q_lab, g_lab, ks=(1,), gallery_mask=gallery_rejection_mask(score, rate))[1]


def ensemble_recall(bundle: Bundle, emb: dict, prob: np.ndarray, labels: np.ndarray) -> float:
    """Recall@1 of the ensemble ``bundle`` serves, under the first-image protocol."""
    gi, qi = first_image_protocol(labels)
    gv = bundle.gallery_vectors({m: v[gi] for m, v in emb.items()}, prob[gi])
    return recall_at_k(emb[bundle.query_model][qi] @ gv.ensemble.T, labels[qi], labels[gi], ks=(1,))[1]


def member_recalls(query_model: str, gallery_models: Sequence[str], transformers: dict, emb: dict,
                   prob: np.ndarray, labels: np.ndarray) -> dict[bool, float]:
    """Ensemble Recall@1 without (False) and with (True) the query model as a member."""
    gi, qi = first_image_protocol(labels)
    out = {}
    for member in (False, True):
        b = Bundle(query_model, tuple(gallery_models), transformers, member)
        gv = b.gallery_vectors({k: v[gi] for k, v in emb.items()}, prob[gi])
        out[member] = recall_at_k(emb[query_model][qi] @ gv.ensemble.T, labels[qi], labels[gi], ks=(1,))[1]
    return out


def pick_quality(curves: dict) -> str:
    """The quality score with the best mean Recall@1 over the rejection rates."""
    return max((k for k in QUALITY_SCORES if k in curves), key=lambda k: float(np.mean(curves[k])))


def entry_outcomes(bundle: Bundle, emb: dict, prob: np.ndarray, labels: np.ndarray) -> dict:
    """The first-image gallery's member vectors and inputs, and each entry's queries and misses."""
    gi, qi = first_image_protocol(labels)
    gv = bundle.gallery_vectors({m: v[gi] for m, v in emb.items()}, prob[gi])
    misses, queries = entry_misses(emb[bundle.query_model][qi] @ gv.ensemble.T, labels[qi], labels[gi])
    vecs, pres = gv.member_arrays()
    return {"vectors": vecs, "present": pres, "probability": prob[gi], "uncertainty": gv.uncertainty,
            "misses": misses, "queries": queries, "members": gv.members}


def fit_quality(outcomes: Sequence[dict], l2: float = 10.0) -> QualityPredictor:
    """``quality.fit_quality_predictor`` on pooled ``entry_outcomes`` (out-of-fold galleries)."""
    m = len(outcomes[0]["vectors"])
    vecs = [np.concatenate([o["vectors"][i] for o in outcomes]) for i in range(m)]
    pres = None
    if any(o["present"] is not None for o in outcomes):
        pres = [np.concatenate([np.ones(len(o["probability"]), bool) if o["present"] is None else o["present"][i]
                                for o in outcomes]) for i in range(m)]
    probability, uncertainty, misses, queries = (np.concatenate([o[key] for o in outcomes])
                                                 for key in ("probability", "uncertainty", "misses", "queries"))
    return fit_quality_predictor(outcomes[0]["members"], vecs, pres, probability, uncertainty, misses, queries, l2=l2)


def calibrate_validation(bundle: Bundle, emb: dict, prob: np.ndarray, labels: np.ndarray, rate: float, far: float,
                         quality: str, reject_on: tuple[dict, np.ndarray] | None = None,
                         predictor: QualityPredictor | None = None) -> tuple[Calibration, dict]:
    """Thresholds (and, for ``quality="auto"``, the quality score) measured on the validation identities.

    The open-set similarity thresholds come from the clean validation gallery; the
    rejection threshold (and the combined score's references) from ``reject_on``, the
    validation gallery with its degraded copies swapped in, when given: rejection is
    for the galleries people have, not for clean press photos.
    """
    gi, qi = first_image_protocol(labels)
    gal = {m: v[gi] for m, v in emb.items()}
    gv = bundle.gallery_vectors(gal, prob[gi])
    q_lab, g_lab = labels[qi], labels[gi]
    qv = emb[bundle.query_model][qi]
    thresholds = {}
    for view, vecs in [("ensemble", gv.ensemble)] + list(gv.views.items()):
        scores, same = verification_scores(qv @ vecs.T, q_lab, g_lab)
        thresholds[view] = float(threshold_at_far(scores, same, far))
    if reject_on is not None:
        emb, prob = reject_on
        gv = bundle.gallery_vectors({m: v[gi] for m, v in emb.items()}, prob[gi])
    curves, _, _ = quality_curves(bundle, emb, prob, labels, predictor=predictor)
    if quality == "auto":
        quality = pick_quality(curves)
    if quality == "learned" and predictor is None:
        raise DatasetError("the learned quality score is fitted during cross-validation (--cv-folds >= 2)")
    # calibration sample for rank-combined scores: the validation gallery
    ref = QualityModel.fit("combined", gv.uncertainty, prob[gi], predictor=predictor)
    qm = ref.with_kind(quality)
    members = gv.member_arrays()
    s = qm.score(gv.uncertainty, prob[gi], *members)
    per_kind = {k: float(threshold_for_rate(ref.with_kind(k).score(gv.uncertainty, prob[gi], *members), rate))
                for k in ref.kinds}
    cal = Calibration(
        rejection_rate=rate,
        rejection_threshold=float(threshold_for_rate(s, rate)),
        quality=qm,
        open_set_far=far,
        similarity_thresholds=thresholds,
        quality_thresholds=per_kind,
    )
    return cal, {"val_rejection_recall_at_1": curves, "chosen_quality": quality}
