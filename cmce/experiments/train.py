"""Train a bundle on a folder-per-identity dataset: ``python -m cmce train``.

Steps: list the dataset; split identities into train / validation / held-out test
(disjoint, fixed seed); embed every image once with every backbone (cached); train
one transformer per gallery model on the train identities with early stopping on the
validation identities; pick by measurement on validation whether the query model's
own gallery embedding joins the ensemble, how its members are fused, and which
quality score rejects best for that ensemble (the learned score is fitted on the
cross-validation folds' out-of-fold gallery entries);
calibrate the rejection and open-set thresholds on validation; save the bundle.
The held-out identities are never seen; ``evaluate --heldout`` reports on them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cmce.answer_metrics import cohort_normalised, stranger_best, top_matches, unknown_mask
from cmce.errors import DatasetError
from cmce.experiments.degrade import TRAIN_KINDS
from cmce.io.datasets import LabelledImages, list_labelled_images, split_identities
from cmce.method.answer_rules import (
    ANSWER_RULES,
    choose_answer_rule,
    fit_answer_policy,
    out_of_fold_confidence,
    policy_features,
)
from cmce.method.bundle import Bundle, Calibration, save_bundle
from cmce.method.ensemble import FUSIONS, QUALITY_SCORES, FusionGate, QualityModel, fusion_features
from cmce.method.quality import QualityPredictor, fit_quality_predictor
from cmce.method.unknown import DEFAULT_COHORT, CohortNorm, gallery_doubt
from cmce.metrics.rejection import gallery_rejection_mask, threshold_for_rate
from cmce.metrics.retrieval import entry_misses, recall_at_k
from cmce.metrics.verification import threshold_at_far, verification_scores
from cmce.models.embed import EmbeddedFiles, EmbeddingCache, embed_files
from cmce.models.transform import (
    TrainConfig,
    TransformerConfig,
    first_image_protocol,
    fit_linear_map,
    train_transformer,
    transform_embeddings,
)

logger = logging.getLogger(__name__)

__all__ = ["SplitConfig", "dataset_splits", "fit_network", "identity_fingerprint", "train_bundle"]


@dataclass(frozen=True)
class SplitConfig:
    """Identity-disjoint split fractions (of identities) and seed."""

    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0


def identity_fingerprint(labels: Sequence[str]) -> str:
    """sha256 of the sorted identity names: tells whether a dataset is the one trained on."""
    return hashlib.sha256("\n".join(sorted(set(labels))).encode()).hexdigest()


def dataset_splits(labels: Sequence[str], split: SplitConfig) -> dict[str, np.ndarray]:
    """Bool masks ``train``, ``val``, ``test`` over ``labels``; identities disjoint."""
    rest, test = split_identities(labels, split.test_fraction, split.seed) if split.test_fraction > 0 else (
        np.ones(len(labels), bool), np.zeros(len(labels), bool))
    labels_arr = np.asarray(labels)
    tr_sub, val_sub = split_identities(labels_arr[rest], split.val_fraction / (1 - split.test_fraction), split.seed + 1)
    train = np.zeros(len(labels), bool)
    val = np.zeros(len(labels), bool)
    train[np.flatnonzero(rest)[tr_sub]] = True
    val[np.flatnonzero(rest)[val_sub]] = True
    return {"train": train, "val": val, "test": test}


def fit_network(
    inputs: np.ndarray,
    targets: np.ndarray,
    labels: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    *,
    hidden: int,
    config: TrainConfig,
    refit: bool,
    progress: bool = False,
    adapt_queries: bool = False,
):
    """Train one network ``inputs -> targets`` with early stopping, optionally refit.

    Early stopping on the ``val`` identities picks the epoch count; with ``refit`` the
    network is then trained again from the same start on ``train | val`` for exactly
    that many epochs (of the same schedule), so the final network sees every
    non-held-out identity. Epoch 0 (early stopping kept the least-squares start) gives
    the least-squares start fitted on ``train | val``.

    Returns:
        (final module, early-stopped module trained on ``train`` only, history dict for
        the bundle's training summary). Without ``refit`` both modules are the same.
    """
    arch = TransformerConfig(inputs.shape[1], targets.shape[1], hidden=hidden)
    res = train_transformer(
        inputs[train], targets[train], labels[train], inputs[val], targets[val], labels[val],
        arch=arch, config=config, progress=progress, adapt_queries=adapt_queries,
    )
    hist = {"best_epoch": res.best_epoch, "val_recall_at_1": res.best_val_recall_at_1,
            "epochs_run": len(res.history) - 1}
    if not refit:
        return res.module, res.module, hist
    both = train | val
    final = train_transformer(inputs[both], targets[both], labels[both], None, None, None, arch=arch,
                              config=config, fixed_epochs=res.best_epoch, adapt_queries=adapt_queries)
    hist["refit_images"] = int(both.sum())
    return final.module, res.module, hist


QUALITY_RATES = (0.05, 0.1, 0.2, 0.3)


def _quality_curves(bundle: Bundle, emb: dict, prob: np.ndarray, labels: np.ndarray,
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

    def r1(score: np.ndarray, rate: float) -> float:
        return recall_at_k(sim, q_lab, g_lab, ks=(1,), gallery_mask=gallery_rejection_mask(score, rate))[1]

    curves = {}
    for kind in ref.kinds:
        s = ref.with_kind(kind).score(gv.uncertainty, prob[gi], *gv.member_arrays())
        curves[kind] = [r1(s, r) for r in QUALITY_RATES]
    rng = np.random.default_rng(0)
    draws = [rng.random(len(gi)) for _ in range(random_repeats)]
    curves["random"] = [float(np.mean([r1(d, r) for d in draws])) for r in QUALITY_RATES]
    return curves, len(qi), recall_at_k(sim, q_lab, g_lab, ks=(1,))[1]


def _ensemble_recall(bundle: Bundle, emb: dict, prob: np.ndarray, labels: np.ndarray) -> float:
    """Recall@1 of the ensemble ``bundle`` serves, under the first-image protocol."""
    gi, qi = first_image_protocol(labels)
    gv = bundle.gallery_vectors({m: v[gi] for m, v in emb.items()}, prob[gi])
    return recall_at_k(emb[bundle.query_model][qi] @ gv.ensemble.T, labels[qi], labels[gi], ks=(1,))[1]


def _member_recalls(query_model: str, gallery_models: Sequence[str], transformers: dict, emb: dict,
                    prob: np.ndarray, labels: np.ndarray) -> dict[bool, float]:
    """Ensemble Recall@1 without (False) and with (True) the query model as a member."""
    gi, qi = first_image_protocol(labels)
    out = {}
    for member in (False, True):
        b = Bundle(query_model, tuple(gallery_models), transformers, member)
        gv = b.gallery_vectors({k: v[gi] for k, v in emb.items()}, prob[gi])
        out[member] = recall_at_k(emb[query_model][qi] @ gv.ensemble.T, labels[qi], labels[gi], ks=(1,))[1]
    return out


def _pick_quality(curves: dict) -> str:
    """The quality score with the best mean Recall@1 over the rejection rates."""
    return max((k for k in QUALITY_SCORES if k in curves), key=lambda k: float(np.mean(curves[k])))


def _entry_outcomes(bundle: Bundle, emb: dict, prob: np.ndarray, labels: np.ndarray) -> dict:
    """The first-image gallery's member vectors and inputs, and each entry's queries and misses."""
    gi, qi = first_image_protocol(labels)
    gv = bundle.gallery_vectors({m: v[gi] for m, v in emb.items()}, prob[gi])
    misses, queries = entry_misses(emb[bundle.query_model][qi] @ gv.ensemble.T, labels[qi], labels[gi])
    vecs, pres = gv.member_arrays()
    return {"vectors": vecs, "present": pres, "probability": prob[gi], "uncertainty": gv.uncertainty,
            "misses": misses, "queries": queries, "members": gv.members}


def _fit_quality(outcomes: Sequence[dict], l2: float = 10.0) -> QualityPredictor:
    """``quality.fit_quality_predictor`` on pooled ``_entry_outcomes`` (out-of-fold galleries)."""
    def cat(key: str) -> np.ndarray:
        return np.concatenate([o[key] for o in outcomes])

    m = len(outcomes[0]["vectors"])
    vecs = [np.concatenate([o["vectors"][i] for o in outcomes]) for i in range(m)]
    pres = None
    if any(o["present"] is not None for o in outcomes):
        pres = [np.concatenate([np.ones(len(o["probability"]), bool) if o["present"] is None else o["present"][i]
                                for o in outcomes]) for i in range(m)]
    return fit_quality_predictor(outcomes[0]["members"], vecs, pres, cat("probability"), cat("uncertainty"),
                                 cat("misses"), cat("queries"), l2=l2)


def _calibrate(bundle: Bundle, emb: dict, prob: np.ndarray, labels: np.ndarray, rate: float, far: float,
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
    curves, _, _ = _quality_curves(bundle, emb, prob, labels, predictor=predictor)
    if quality == "auto":
        quality = _pick_quality(curves)
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


def answer_records(bundle: Bundle, quality: QualityModel, emb: dict, prob: np.ndarray, labels: np.ndarray,
                   views: Sequence[str], cohort: int = DEFAULT_COHORT,
                   ) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
    """Each first-image query's answer-rule inputs and whether its top-1 is another person, per view.

    Args:
        bundle: the (fold's) bundle serving the gallery.
        quality: the entry quality score (fitted without these identities).
        emb, prob, labels: the photos (the gallery side may be degraded).
        views: ``"ensemble"``, gallery model names, ``"query"``.
        cohort: the cohort of the normalised score.

    Returns:
        view -> (``answer_rules.policy_features`` plus ``cohort_z`` (the top-1's
        ``answer_metrics.cohort_normalised`` score), ``stranger_z`` and ``stranger_raw`` (the
        query's best normalised and raw scores with its person taken out of the gallery),
        the same at each of ``STRANGER_SIZES`` (``@size``: galleries drawn from this one;
        ``cohort_z@size`` for the queries whose person was drawn, NaN for the others),
        (Q,) wrong, (Q,) query identities); ``gallery_size`` and ``gallery_doubt``
        (``unknown.gallery_doubt``) repeat the gallery's per query.
    """
    gi, qi = first_image_protocol(labels)
    gv = bundle.gallery_vectors({m: v[gi] for m, v in emb.items()}, prob[gi])
    entry_quality = quality.score(gv.uncertainty, prob[gi], *gv.member_arrays())
    q_lab, g_lab = labels[qi], labels[gi]
    qv = emb[bundle.query_model][qi]
    out = {}
    for view in views:
        vecs = gv.ensemble if view == "ensemble" else gv.views[view]
        sim = qv @ vecs.T
        top = top_matches(sim, list(g_lab))
        pos = np.maximum(top.position, 0)
        feats = policy_features(top.score, top.margin, prob[qi], entry_quality[pos], gv.uncertainty[pos])
        feats["cohort_z"] = cohort_normalised(sim, list(g_lab), cohort)
        feats["stranger_z"] = stranger_best(sim, q_lab, g_lab, cohort)
        feats["stranger_raw"] = stranger_best(sim, q_lab, g_lab)
        feats["gallery_size"] = np.full(len(qi), float(len(gi)))
        feats["gallery_doubt"] = np.full(len(qi), gallery_doubt(entry_quality))
        for size in STRANGER_SIZES:  # the same queries in smaller galleries drawn from this one
            if cohort < size < len(gi):
                keep = np.sort(np.random.default_rng(size).choice(len(gi), size, replace=False))
                feats[f"stranger_z@{size}"] = stranger_best(sim[:, keep], q_lab, g_lab[keep], cohort)
                feats[f"stranger_raw@{size}"] = stranger_best(sim[:, keep], q_lab, g_lab[keep])
                inside = np.isin(q_lab, g_lab[keep])  # and, whose person is in it, as themselves
                z = np.full(len(qi), np.nan)
                z[inside] = cohort_normalised(sim[np.ix_(inside, keep)], list(g_lab[keep]), cohort)
                feats[f"cohort_z@{size}"] = z
        out[view] = (feats, g_lab[pos] != q_lab, q_lab)
    return out


#: Gallery sizes (entries) at which the normalised "Unknown" threshold is also calibrated,
#: beside the cross-validation galleries' own size.
STRANGER_SIZES = (60, 120, 240, 480)


def calibrate_cohort_norm(stranger_z: np.ndarray, strangers_named: float) -> float | None:
    """The normalised threshold that names ``strangers_named`` of these strangers (None: too few scores)."""
    z = np.asarray(stranger_z, np.float64)
    z = z[np.isfinite(z)]
    if len(z) < 20:
        return None
    return float(np.quantile(z, 1.0 - strangers_named))


#: Most a default answer rule may answer "Unknown" (with the similarity threshold's own
#: unknowns) on the calibration queries: on clean galleries, and on any gallery kind.
ABSTAIN_CAPS = {"clean": 0.10, "any": 0.20}


def capped_threshold(confidence: np.ndarray, below_threshold: np.ndarray, conditions: np.ndarray,
                     wanted: float, caps: Mapping[str, float] = ABSTAIN_CAPS) -> float:
    """The highest abstention threshold <= ``wanted`` whose unknowns stay within the caps.

    A query answers "Unknown" when its top-1 similarity is below the view's threshold
    (``below_threshold``) or its confidence is below the abstention threshold. Per
    condition the share of unknowns may reach ``caps["clean"]`` on ``clean`` and
    ``caps["any"]`` elsewhere; where the similarity threshold alone passes the cap the
    rule abstains on nothing more there (the threshold returned is then ``-inf``).

    Example:
        >>> capped_threshold(np.array([.9, .8, .3, .2]), np.zeros(4, bool), np.array(["clean"] * 4), 0.5,
        ...                  {"clean": 0.25, "any": 0.25})
        0.3
    """
    t = float(wanted)
    for cond in np.unique(conditions):
        sel = conditions == cond
        n = int(sel.sum())
        cap = caps["clean"] if cond == "clean" else caps["any"]
        allowed = int(np.floor(cap * n + 1e-9)) - int(below_threshold[sel].sum())
        others = np.sort(confidence[sel & ~below_threshold])
        if allowed <= 0:
            return float("-inf")
        if allowed < len(others):
            t = min(t, float(others[allowed]))
    return t


#: The unknown shares the coverage guard allows the "Unknown" threshold alone, on clean
#: galleries and on any other kind: the abstention caps less two points for the answer rule.
GUARD_SHARES = {"clean": 0.08, "any": 0.18}


def fit_coverage_guard(doubt: np.ndarray, z: np.ndarray, groups: np.ndarray, shares: Sequence[float]
                       ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The most a normalised threshold may be, as a function of a gallery's mean doubt.

    Each group is one kind of calibration gallery (its folds pooled): its queries'
    cohort-normalised top scores ``z`` and its galleries' doubt (``unknown.gallery_doubt``;
    the group's is their mean over its queries). A threshold at the group's ``share``
    quantile of ``z`` says "Unknown" to that share of its queries. The guard is the running
    minimum of those quantiles over groups sorted by doubt: a gallery never gets a higher
    cap than a cleaner-looking kind, and every kind keeps within its share.

    Args:
        doubt, z, groups: (Q,) per query.
        shares: one allowed unknown share per group, in ``np.unique(groups)`` order.

    Returns:
        (ascending doubts, the cap at each, one {group, doubt, cap, queries} per group).

    Example:
        >>> d, cap, _ = fit_coverage_guard(np.r_[[0.1] * 20, [0.5] * 20], np.r_[np.arange(20.), np.arange(20.) - 5],
        ...                                np.r_[["a"] * 20, ["b"] * 20], [0.2, 0.2])
        >>> np.round(d, 3).tolist(), np.round(cap, 2).tolist()
        ([0.1, 0.5], [3.8, -1.2])
    """
    doubt, z, groups = np.asarray(doubt, np.float64), np.asarray(z, np.float64), np.asarray(groups)
    points = []
    for g, share in zip(np.unique(groups), shares):
        sel = (groups == g) & np.isfinite(z) & np.isfinite(doubt)
        if sel.sum() < 20:  # too few queries to place a quantile
            continue
        points.append({"group": str(g), "doubt": float(doubt[sel].mean()),
                       "cap": float(np.quantile(z[sel], share)), "queries": int(sel.sum())})
    points.sort(key=lambda p: p["doubt"])
    d, caps = [], []
    for p in points:
        cap = p["cap"] if not caps else min(caps[-1], p["cap"])
        if d and p["doubt"] <= d[-1] + 1e-12:
            caps[-1] = cap  # equal doubts: the lower cap holds
            continue
        d.append(p["doubt"])
        caps.append(cap)
    return np.asarray(d), np.asarray(caps), points


def calibrate_answers(fold_galleries, quality: str, fit_predictor, member: bool, *,
                      thresholds: Mapping[str, float], abstain_below: float = 0.75,
                      strangers_named: float | None = 0.05, cohort: int = DEFAULT_COHORT,
                      guard_only: Sequence[str] = (), seed: int = 0) -> tuple[str, dict, CohortNorm | None, dict]:
    """Choose and fit the answer rule of every view on cross-validation folds.

    Each fold's queries are searched in that fold's galleries (clean and every degraded
    condition) with networks, fusion and quality score that never saw the fold's
    identities. The rule is chosen on the ensemble view (``answer_rules.choose_answer_rule``:
    a richer rule only where it beats the simpler one by more than its interval), then
    every rule is fitted on all folds for every view (the bundle keeps them all, so
    ``evaluate`` and the app can compare), on every condition (``guard_only`` ones too).
    Each abstains below ``abstain_below``, lowered where needed (``capped_threshold``, on
    out-of-fold confidences) so that with the view's "Unknown" threshold it answers
    "Unknown" on at most 10% of the clean calibration queries and 20% of any other kind's.

    The "Unknown" threshold: with ``strangers_named``, each view's normalised threshold
    (``unknown.CohortNorm``, cohort ``cohort``) names that share of the clean galleries'
    queries asked as strangers (their person taken out), at their size and at each of
    ``STRANGER_SIZES`` (``_thresholds_by_size``), capped by a coverage guard on the
    gallery's mean doubt (``fit_coverage_guard``, every condition, ``GUARD_SHARES``);
    without it, and in galleries too small for the cohort, the raw similarity
    ``thresholds``. Conditions in ``guard_only`` calibrate the guard and the rule's
    threshold; the rule is chosen without them.

    Returns:
        (the chosen rule, view -> rule -> AnswerPolicy, the CohortNorm or None, a
        JSON-ready report of the choice and the abstention each condition saw).
    """
    records: dict[str, list] = {}
    for k, fb, per_condition, fold_labels in fold_galleries:
        views = ("ensemble", *fb.gallery_models, "query")
        predictor = fit_predictor(member, k) if fit_predictor is not None else None
        for cond, (e, pr) in per_condition.items():
            gi = first_image_protocol(fold_labels)[0]
            gv = fb.gallery_vectors({m: v[gi] for m, v in e.items()}, pr[gi])
            kind = quality if (quality != "learned" or predictor is not None) else "disagreement"
            qm = QualityModel.fit(kind, gv.uncertainty, pr[gi], predictor=predictor)
            for view, (feats, wrong, ids) in answer_records(fb, qm, e, pr, fold_labels, views, cohort).items():
                records.setdefault(view, []).append((k, cond, feats, wrong, ids))

    def pooled(view: str, guard: bool = False):
        """The view's records pooled over folds (and the ``guard_only`` conditions where ``guard``)."""
        rows = [r for r in records[view] if guard or r[1] not in guard_only]
        names = dict.fromkeys(f for r in rows for f in r[2])  # a fold too small for a stranger size lacks it: NaN
        feats = {f: np.concatenate([r[2].get(f, np.full(len(r[3]), np.nan)) for r in rows]) for f in names}
        return (feats, np.concatenate([r[3] for r in rows]), np.concatenate([np.full(len(r[3]), r[0]) for r in rows]),
                np.concatenate([np.full(len(r[3]), r[1]) for r in rows]), np.concatenate([r[4] for r in rows]))

    feats, wrong, folds, conds, ids = pooled("ensemble")
    kind, report = choose_answer_rule(feats, wrong, folds, conds, ids, seed=seed)
    norm, guard_report = None, {}
    if strangers_named is not None:
        full = {}
        for view in records:
            fv, _, _, cv, _ = pooled(view)
            t = calibrate_cohort_norm(fv["stranger_z"][cv == "clean"], strangers_named)
            if t is not None:
                full[view] = t
        if "ensemble" in full:
            sizes, by_size, aims = _thresholds_by_size(pooled, full, strangers_named)
            guard_doubt, guard, slope, guard_report = _coverage_guard(records, pooled, full, sizes)
            norm = CohortNorm(cohort, full, strangers_named, sizes, by_size, guard_doubt, guard, dict(GUARD_SHARES),
                              sizes[-1], slope)
            guard_report["strangers_by_size"] = aims

    def z_thresholds(view: str, f: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """(Q,) each record's normalised threshold in its own gallery (None: not calibrated)."""
        if norm is None or view not in norm.thresholds:
            return None
        out = np.full(len(f["gallery_size"]), np.nan)
        for size, doubt in set(zip(f["gallery_size"].tolist(), f["gallery_doubt"].tolist())):
            sel = (f["gallery_size"] == size) & (f["gallery_doubt"] == doubt)
            out[sel] = norm.threshold(view, int(size), doubt)
        return out

    policies, unknown, strangers = {}, {}, {}
    for view in records:
        raw_thr = thresholds.get(view, -np.inf)
        # the rule is fitted and capped on every kind (the guard's too): 20% "Unknown" at most on any kind
        fg, w, fo, cg, _ = pooled(view, guard=True)
        zg = z_thresholds(view, fg)
        below_g = unknown_mask(fg["similarity"], fg["cohort_z"], raw_thr, zg)
        named = ~unknown_mask(fg["stranger_raw"], fg["stranger_z"], raw_thr, zg)
        strangers[view] = {str(x): {"default": float(named[cg == x].mean()),
                                    "raw_threshold": float((fg["stranger_raw"][cg == x] >= raw_thr).mean()),
                                    "unknown_by_threshold": float(below_g[cg == x].mean())}
                           for x in np.unique(cg)}
        f, c, below = fg, cg, below_g
        policies[view] = {}
        for rule in ANSWER_RULES:
            oof = out_of_fold_confidence(rule, f, w, fo)
            t = capped_threshold(oof, below, c, abstain_below)
            abst = below | (oof < t)
            policies[view][rule] = fit_answer_policy(rule, f, w).with_threshold(t, float(abst.mean()))
            if rule == kind:
                unknown[view] = {str(x): float(abst[c == x].mean()) for x in np.unique(c)}
    report["abstain_below"] = abstain_below
    report["caps"] = dict(ABSTAIN_CAPS)
    report["thresholds"] = {v: {r: p.threshold for r, p in per.items()} for v, per in policies.items()}
    report["unknown_share"] = unknown  # out-of-fold, with the chosen rule and the "Unknown" threshold
    report["strangers_named"] = strangers  # out-of-fold queries asked as strangers, per condition (guard ones too)
    report["cohort_norm"] = norm.to_dict() if norm is not None else None
    report["coverage_guard"] = guard_report
    return kind, policies, norm, report


def _coverage_guard(records: Mapping, pooled, full: Mapping[str, float], sizes: Sequence[int]):
    """``fit_coverage_guard`` per view over every kind of calibration gallery (each
    condition's folds pooled, the ``guard_only`` ones included), on shared doubt points;
    and how the caps move with gallery size (``guard_size_slope``).

    Returns:
        (ascending doubts, view -> caps at them (never above the view's threshold),
        view -> slope per unit of log size, report).
    """
    fits = {}
    for view in full:
        fv, _, _, cv, _ = pooled(view, guard=True)
        shares = [GUARD_SHARES["clean" if g == "clean" else "any"] for g in np.unique(cv)]
        d, caps, points = fit_coverage_guard(fv["gallery_doubt"], fv["cohort_z"], cv, shares)
        fits[view] = (d, caps, points, guard_size_slope(fv, cv, sizes, shares))
    doubt = fits["ensemble"][0]  # every view's galleries are the same, so are their doubts
    guard = {v: tuple(float(min(full[v], x)) for x in np.interp(doubt, d, caps)) for v, (d, caps, _, _) in fits.items()}
    slope = {v: fit[3] for v, fit in fits.items()}
    report = {"shares": dict(GUARD_SHARES), "doubt": doubt.tolist(), "caps": {v: list(g) for v, g in guard.items()},
              "galleries": fits["ensemble"][2], "size": int(sizes[-1]), "slope": slope}
    return tuple(float(x) for x in doubt), guard, slope, report


def guard_size_slope(feats: Mapping[str, np.ndarray], conditions: np.ndarray, sizes: Sequence[int],
                     shares: Sequence[float], min_size: int = 2 * DEFAULT_COHORT) -> float:
    """How the guard's caps move with gallery size: per unit of log size, from each condition's
    share quantile of ``cohort_z@size`` (galleries drawn from the calibration ones) against
    its quantile at the calibration size (``cohort_z``, ``sizes[-1]``), pooled by least squares
    through the calibration size; sizes under ``min_size`` are left out (their cohort is
    most of the gallery). 0.0 when nothing is measured.

    Example:
        >>> z = np.random.default_rng(0).normal(5, 1, 4000)
        >>> f = {"cohort_z": z, "cohort_z@200": z + np.log(400 / 200)}  # 1 spread more per halving
        >>> round(guard_size_slope(f, np.array(["clean"] * 4000), (200, 400), [0.1]), 6)
        -1.0
    """
    own = sizes[-1]
    xs, ys = [], []
    for cond, share in zip(np.unique(conditions), shares):
        sel = conditions == cond
        base = feats["cohort_z"][sel]
        base = base[np.isfinite(base)]
        if len(base) < 20:
            continue
        q_own = float(np.quantile(base, share))
        for size in sizes[:-1]:
            z = feats.get(f"cohort_z@{size}")
            if size < min_size or z is None:
                continue
            z = z[sel][np.isfinite(z[sel])]
            if len(z) < 20:
                continue
            xs.append(np.log(size / own))
            ys.append(float(np.quantile(z, share)) - q_own)
    if not xs:
        return 0.0
    x, y = np.asarray(xs), np.asarray(ys)
    return float((x @ y) / (x @ x))


def _thresholds_by_size(pooled, full: Mapping[str, float], target: float
                        ) -> tuple[tuple[int, ...], dict[str, tuple[float, ...]], dict]:
    """Per view, the normalised threshold naming ``target`` of strangers in clean galleries
    of each of ``STRANGER_SIZES`` entries (drawn from the cross-validation galleries) and,
    at their own size, ``full``. Sizes without enough strangers are left out.

    Returns:
        (sizes, view -> thresholds per size, {size: share of strangers aimed at}).
    """
    f, _, _, c, _ = pooled("ensemble")
    clean = c == "clean"
    own = int(np.median(f["gallery_size"][clean]))
    sizes = [s for s in STRANGER_SIZES if f"stranger_z@{s}" in f and np.isfinite(f[f"stranger_z@{s}"][clean]).sum() >= 20
             and s < own]
    by_size: dict[str, tuple[float, ...]] = {}
    for view in full:
        fv, _, _, cv, _ = pooled(view)
        per = [calibrate_cohort_norm(fv[f"stranger_z@{s}"][cv == "clean"], target) for s in sizes]
        by_size[view] = (*[float(t) for t in per], float(full[view]))
    return (*sizes, own), by_size, {str(s): target for s in (*sizes, own)}


def _whole_galleries(embedded: EmbeddedFiles, gallery_positions: np.ndarray, kinds: Sequence[str], seed: int,
                     models: Sequence[str], cache: EmbeddingCache | None, progress: bool) -> dict[str, Degraded]:
    """Per kind, every gallery photo degraded that way and detected as ``cmce index`` detects
    (the i-th kind seeded ``seed + i``)."""
    from cmce.experiments.degrade import DegradeSpec, degrade_gallery
    from cmce.faces.detector import create_detector

    detector = create_detector("index")
    out = {}
    for i, kind in enumerate(kinds):
        dfiles, _, dmask = degrade_gallery(embedded, gallery_positions, DegradeSpec(1.0, (kind,)), seed=seed + i,
                                           models=models, cache=cache, progress=progress, detector=detector)
        out[kind] = Degraded(dfiles.embeddings, dfiles.detection_probability, dmask)
    return out


@dataclass(frozen=True)
class Degraded:
    """Degraded copies of some photos, for training on and choosing by mixed-quality galleries.

    Attributes:
        embeddings: backbone -> (N, D), rows where ``mask`` hold the degraded copy's embedding.
        probability: (N,) detector probability of the degraded copy (where ``mask``).
        mask: (N,) which photos have a degraded copy (a face was found in it).
    """

    embeddings: dict
    probability: np.ndarray
    mask: np.ndarray

    def mixed(self, emb: dict, prob: np.ndarray, rows: np.ndarray) -> tuple[dict, np.ndarray]:
        """``emb``/``prob`` restricted to ``rows`` with every photo that has a copy swapped for it."""
        m = self.mask[rows]
        out = {k: np.where(m[:, None], self.embeddings[k][rows], v[rows]) for k, v in emb.items()}
        return out, np.where(m, self.probability[rows], prob[rows])


def augmented_pairs(inputs: np.ndarray, targets: np.ndarray, labels: np.ndarray, train: np.ndarray,
                    val: np.ndarray, copies: Sequence[tuple[np.ndarray, np.ndarray]] = ()):
    """Training pairs plus, for each training photo with a degraded copy, (copy -> clean target).

    The transformed embedding of a degraded gallery photo is trained to land on the query
    model's embedding of the clean photo. Validation stays clean.

    Args:
        copies: per set of degraded copies (a mixed gallery, a crop or tiny gallery),
            ``(inputs of the copies (N, D), which photos have one (N,))``.

    Returns:
        (inputs, targets, labels, train, val), extended.
    """
    n = len(inputs)
    xs, ys, labs, trs, vas = [inputs], [targets], [labels], [train], [val]
    for copy_inputs, mask in copies:
        extra = mask & train[:n]
        xs.append(copy_inputs[extra])
        ys.append(targets[extra])
        labs.append(labels[extra])
        trs.append(np.ones(int(extra.sum()), bool))
        vas.append(np.zeros(int(extra.sum()), bool))
    if len(xs) == 1:
        return inputs, targets, labels, train, val
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(labs), np.concatenate(trs), np.concatenate(vas)


def _augment_copies(model: str, sets: Sequence[Degraded]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``augmented_pairs``'s copies of one backbone from sets of degraded copies."""
    return [(d.embeddings[model], d.mask) for d in sets]


def _identity_targets(query_emb: np.ndarray, labels: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(N, D) per photo: the mean query-model embedding of its identity's *other* photos (zeros if none)."""
    out = np.zeros_like(query_emb)
    gal = set(np.flatnonzero(gallery).tolist())
    by_id: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_id.setdefault(lab, []).append(i)
    for rows in by_id.values():
        for i in rows:
            if i in gal:
                others = [j for j in rows if j != i]
                if others:
                    c = query_emb[others].mean(0)
                    out[i] = c / max(float(np.linalg.norm(c)), 1e-12)
    return out


def fit_fusion(kind: str, members: tuple[str, ...], vectors: list[np.ndarray], present: list[np.ndarray] | None,
               probability: np.ndarray, targets: np.ndarray, *, hidden: int = 16, steps: int = 300,
               lr: float = 0.02, weight_decay: float = 1e-3, seed: int = 0) -> FusionGate:
    """Learn member weights so that fused gallery vectors land on their identity.

    Loss: ``1 - cos(fused, target)`` per gallery photo, where the target is the mean
    query-model embedding of the identity's *other* photos (what its queries look
    like); rows whose target is zero are left out. ``weighted`` learns one logit per
    member; ``gated`` adds a ``hidden``-unit tanh layer over ``fusion_features``.
    Starts from equal weights (the plain mean). Full batch, Adam: a second or so.
    """
    import torch

    if kind == "mean":
        return FusionGate()
    if kind not in FUSIONS:
        raise DatasetError(f"fusion must be one of {FUSIONS}, got {kind!r}")
    keep = np.linalg.norm(targets, axis=1) > 0
    if keep.sum() < 10:
        raise DatasetError(f"too few gallery photos with another photo of their identity to learn a fusion ({keep.sum()})")
    m = len(vectors)
    torch.manual_seed(seed)
    x = torch.from_numpy(np.stack([v[keep] for v in vectors], 1).astype(np.float32))  # (N, M, D)
    pres = torch.from_numpy(np.stack([np.ones(len(probability), bool) if present is None else np.asarray(present[i], bool)
                                      for i in range(m)], 1)[keep])
    feats = torch.from_numpy(fusion_features(vectors, present, probability)[keep])
    tgt = torch.from_numpy(targets[keep].astype(np.float32))
    # cos(sum_i w_i x_i, t) needs only x_i . t and x_i . x_j: precomputed, each step is O(N M^2)
    xt = torch.einsum("nmd,nd->nm", x, tgt)
    xx = torch.einsum("nmd,nkd->nmk", x, x)
    bias = torch.zeros(m, requires_grad=True)
    params = [bias]
    if kind == "gated":
        w1 = torch.nn.Parameter(0.1 * torch.randn(hidden, feats.shape[1]))
        b1 = torch.nn.Parameter(torch.zeros(hidden))
        w2 = torch.nn.Parameter(torch.zeros(m, hidden))
        params += [w1, b1, w2]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        logits = bias.expand(len(x), m)
        if kind == "gated":
            logits = logits + torch.tanh(feats @ w1.T + b1) @ w2.T
        w = torch.softmax(logits.masked_fill(~pres, -1e9), dim=1)
        num = (w * xt).sum(1)
        norm = torch.sqrt(torch.einsum("nm,nmk,nk->n", w, xx, w).clamp_min(1e-12))
        loss = (1.0 - num / norm).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    if kind == "weighted":
        return FusionGate("weighted", members, bias=tuple(float(b) for b in bias.detach()))
    return FusionGate("gated", members, w1=tuple(tuple(float(v) for v in r) for r in w1.detach()),
                      b1=tuple(float(v) for v in b1.detach()), w2=tuple(tuple(float(v) for v in r) for r in w2.detach()),
                      bias=tuple(float(b) for b in bias.detach()))


def cross_validate_choices(
    emb: dict[str, np.ndarray],
    prob: np.ndarray,
    labels: np.ndarray,
    pool: np.ndarray,
    *,
    query_model: str,
    gallery_models: Sequence[str],
    epochs: dict[str, int],
    hidden: int,
    config: TrainConfig,
    folds: int = 5,
    seed: int = 0,
    degraded: Degraded | None = None,
    augment_sets: Sequence[Degraded] = (),
    fusions: Sequence[str] = ("mean",),
    answer_galleries: Mapping[str, Degraded] | None = None,
    guard_galleries: Mapping[str, Degraded] | None = None,
) -> dict:
    """k-fold cross-validation of the query member, the fusion and the quality score.

    The identities of ``pool`` (train + validation, never the held-out ones) are split
    into ``folds`` identity-disjoint folds. Per fold, each gallery model's transformer is
    trained on the other folds for ``epochs[m]`` epochs (with the degraded copies of
    their photos in ``augment_sets``, as ``train_bundle`` trains), and the fold is measured on its clean gallery and,
    when ``degraded`` is given, on its mixed-quality gallery (every gallery photo that
    has a degraded copy swapped for it). Each fusion in ``fusions`` other than the mean
    is learned (``fit_fusion``) on the other folds' out-of-fold member vectors, clean
    and degraded (stacking), then measured on the fold. So is the learned quality score
    (``quality.fit_quality_predictor``): fitted on the other folds' gallery entries and
    how their queries fared, measured on the fold. Figures are averaged over folds,
    weighted by their queries. ``answer_galleries`` (e.g. ``crop``, ``tiny``: every
    gallery photo degraded one way) are further conditions on which the query member
    and the fusion are chosen (beside clean and mixed) and the answer rule is calibrated
    (through ``_fold_galleries``); the quality score is still chosen on mixed galleries.
    ``guard_galleries`` join ``_fold_galleries`` only (the "Unknown" threshold's coverage
    guard is calibrated on them); they choose nothing.

    Returns:
        ``{"folds", "queries", "query_member_recall_at_1": {"without", "with"},
        "fusion_recall_at_1": {fusion: {"clean", "mixed"}} (the served member choice),
        "rejection_recall_at_1": {"without"|"with": {kind: [R@1 per rate]}} (clean),
        "mixed_rejection_recall_at_1": the same on mixed galleries, "rates"}``; the
        rejection curves are for the fusion ``_choose_fusion`` picks.
    """
    ids = np.unique(labels[pool])
    rng = np.random.default_rng(seed)
    parts = np.array_split(rng.permutation(ids), folds)
    q = emb[query_model]
    evs, nets_by_fold = [], []
    oof = {m: np.zeros((len(labels), q.shape[1]), np.float32) for m in gallery_models}
    oof_deg = {m: np.zeros((len(labels), q.shape[1]), np.float32) for m in gallery_models} if degraded else None
    for k, part in enumerate(parts):
        ev = pool & np.isin(labels, part)
        fit = pool & ~ev
        if len(first_image_protocol(labels[ev])[1]) == 0:
            continue
        nets = {}
        for m in gallery_models:
            x, y, lab, tr, _ = augmented_pairs(emb[m], q, labels, fit, np.zeros_like(fit),
                                               _augment_copies(m, augment_sets))
            nets[m] = train_transformer(
                x[tr], y[tr], lab[tr], None, None, None,
                arch=TransformerConfig(emb[m].shape[1], q.shape[1], hidden=hidden),
                config=config, fixed_epochs=epochs[m],
            ).module
            oof[m][ev] = transform_embeddings(nets[m], emb[m][ev])
            if degraded is not None:
                oof_deg[m][ev] = transform_embeddings(nets[m], degraded.embeddings[m][ev])
        evs.append(ev)
        nets_by_fold.append(nets)
        logger.info("cross-validation fold %d/%d trained", k + 1, folds)
    if not evs:
        raise DatasetError("cross-validation: no fold has an identity with two images")
    # out-of-fold member vectors of every pool gallery photo, clean and degraded, for learning fusions
    gal = np.zeros(len(labels), bool)
    pool_idx = np.flatnonzero(pool)
    gal[pool_idx[first_image_protocol(labels[pool_idx])[0]]] = True
    targets = _identity_targets(q, labels, gal)

    def member_rows(rows: np.ndarray, member: bool, dg: bool):
        src = oof_deg if dg else oof
        vecs = [src[m][rows] for m in gallery_models]
        if member:
            vecs.append((degraded.embeddings[query_model] if dg else q)[rows])
        return vecs

    learned: dict = {}

    def learn(kind: str, member: bool, train_rows: np.ndarray) -> FusionGate:
        if kind == "mean":
            return FusionGate()
        key = (kind, member, train_rows.tobytes())
        if key not in learned:
            learned[key] = _learn(kind, member, train_rows)
        return learned[key]

    def _learn(kind: str, member: bool, train_rows: np.ndarray) -> FusionGate:
        names = tuple(gallery_models) + (("query",) if member else ())
        rows = train_rows & gal
        vecs = member_rows(rows, member, False)
        probs, tg = [prob[rows]], [targets[rows]]
        if degraded is not None:
            drows = rows & degraded.mask
            vecs = [np.concatenate([a, b]) for a, b in zip(vecs, member_rows(drows, member, True))]
            probs.append(degraded.probability[drows])
            tg.append(targets[drows])
        return fit_fusion(kind, names, vecs, None, np.concatenate(probs), np.concatenate(tg), seed=seed)

    weights = np.asarray([len(first_image_protocol(labels[ev])[1]) for ev in evs], float)
    w = weights / weights.sum()
    conditions = ("clean", "mixed") if degraded is not None else ("clean",)
    fusion_r1: dict[bool, dict[str, dict[str, float]]] = {False: {}, True: {}}
    curves: dict[str, dict[bool, dict[str, list]]] = {c: {False: {}, True: {}} for c in conditions}

    def fold_bundle(k: int, member: bool, fusion: FusionGate) -> Bundle:
        return Bundle(query_model, tuple(gallery_models), nets_by_fold[k], member, fusion=fusion)

    def condition(ev: np.ndarray, cond: str):
        if cond == "clean":
            return {m: v[ev] for m, v in emb.items()}, prob[ev]
        if cond == "mixed":
            return degraded.mixed(emb, prob, ev)
        if answer_galleries and cond in answer_galleries:
            return answer_galleries[cond].mixed(emb, prob, ev)
        return guard_galleries[cond].mixed(emb, prob, ev)  # type: ignore[index]

    choice_conditions = (*conditions, *(answer_galleries or {}))  # what the member and fusion are chosen on
    for member in (False, True):
        for kind in fusions:
            per = {c: [] for c in choice_conditions}
            for k, ev in enumerate(evs):
                fb = fold_bundle(k, member, learn(kind, member, pool & ~ev))
                for c in choice_conditions:
                    e, pr = condition(ev, c)
                    per[c].append(_ensemble_recall(fb, e, pr, labels[ev]))
            fusion_r1[member][kind] = {c: float(w @ np.asarray(per[c])) for c in choice_conditions}
    chosen = {b: _choose_fusion(fusion_r1[b]) for b in (False, True)}
    # each fold's gallery entries with their queries' outcomes (clean and mixed): the
    # learned quality score is fitted on the other folds' entries and measured on the fold
    outcomes = {member: [[_entry_outcomes(fold_bundle(k, member, learn(chosen[member], member, pool & ~ev)),
                                          *condition(ev, c), labels[ev]) for c in conditions]
                         for k, ev in enumerate(evs)] for member in (False, True)}

    def predictor(member: bool, leave_out: int | None = None) -> QualityPredictor:
        return _fit_quality([o for k, per in enumerate(outcomes[member]) if k != leave_out for o in per])

    for member in (False, True):
        for k, ev in enumerate(evs):
            fb = fold_bundle(k, member, learn(chosen[member], member, pool & ~ev))
            qp = predictor(member, k)
            for c in conditions:
                e, pr = condition(ev, c)
                cv, _, _ = _quality_curves(fb, e, pr, labels[ev], predictor=qp)
                for kind, values in cv.items():
                    curves[c][member].setdefault(kind, []).append(values)

    def avg(cs: dict) -> dict:
        return {name: {k: [float(x) for x in w @ np.asarray(v)] for k, v in cs[b].items()}
                for name, b in (("without", False), ("with", True))}

    def score(b: bool) -> float:
        return float(np.mean([fusion_r1[b][chosen[b]][c] for c in conditions]))

    out = {
        "folds": folds,
        "queries": int(weights.sum()),
        "conditions": list(conditions),
        "query_member_recall_at_1": {"without": score(False), "with": score(True)},
        "fusion_recall_at_1": {name: fusion_r1[b] for name, b in (("without", False), ("with", True))},
        "chosen_fusion": {"without": chosen[False], "with": chosen[True]},
        "rejection_recall_at_1": avg(curves["clean"]),
        "rates": list(QUALITY_RATES),
    }
    if degraded is not None:
        out["mixed_rejection_recall_at_1"] = avg(curves["mixed"])
    out["_learn"] = learn  # the final fusion is learned on every fold's out-of-fold vectors (not serialised)
    out["_predictor"] = predictor  # member -> the learned quality score fitted on every fold (not serialised)

    def fold_galleries(member: bool):
        """Per fold: (fold number, the fold's served bundle, condition -> (emb, prob), labels), not serialised."""
        for k, ev in enumerate(evs):
            fb = fold_bundle(k, member, learn(chosen[member], member, pool & ~ev))
            yield k, fb, {c: condition(ev, c) for c in (*choice_conditions, *(guard_galleries or {}))}, labels[ev]

    out["_fold_galleries"] = fold_galleries
    return out


def _choose_fusion(figures: dict[str, dict[str, float]]) -> str:
    """The simplest fusion that no more complex one beats by more than 0.1 point of mean
    Recall@1 over the conditions measured (clean, mixed, and any whole-gallery kinds).

    Fusions are tried in the order of ``ensemble.FUSIONS`` (the paper's plain mean first);
    a later one replaces the current choice only when its mean Recall@1 is more than 0.1
    point higher, so a difference of a few queries never buys a more complex fusion.
    """
    def score(kind: str) -> float:
        return float(np.mean(list(figures[kind].values())))

    order = [k for k in FUSIONS if k in figures] + [k for k in figures if k not in FUSIONS]
    chosen = order[0]
    for kind in order[1:]:
        if score(kind) > score(chosen) + 1e-3:
            chosen = kind
    return chosen


def train_bundle(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    query_model: str = "sface",
    gallery_models: Sequence[str] = ("dlib-resnet34", "facenet-casia"),
    train_config: TrainConfig = TrainConfig(),
    hidden: int = 384,
    split: SplitConfig = SplitConfig(),
    query_member: str = "auto",
    quality: str = "auto",
    rejection_rate: float = 0.10,
    open_set_far: float = 1e-3,
    cache: EmbeddingCache | None = None,
    progress: bool = True,
    data_description: str | None = None,
    refit: bool = True,
    query_adapters: bool = True,
    cv_folds: int = 5,
    mixed_share: float = 0.6,
    degrade_augment: bool = True,
    fusion: str = "auto",
    abstain_below: float = 0.75,
    answer_kinds: Sequence[str] = ("crop", "tiny"),
    augment_kinds: Sequence[str] | None = None,
    strangers_named: float | None = 0.05,
    guard_kinds: Sequence[str] = TRAIN_KINDS,
) -> Bundle:
    """Train, calibrate and save a bundle. See the module docstring for the steps.

    Args:
        query_member: ``"auto"`` (decided on validation R@1), ``"yes"`` or ``"no"``.
        quality: ``"auto"`` or one of ``QUALITY_SCORES``.
        refit: after early stopping has picked the epoch count on the validation
            identities, retrain each transformer on train + validation identities for
            that many epochs (see ``fit_network``).
        query_adapters: also train the distillation-style baseline (query model ->
            each gallery model's space) that ``evaluate`` reports.
        cv_folds: make the ``auto`` choices (query member, quality score) by k-fold
            cross-validation over the train + validation identities
            (``cross_validate_choices``) instead of on the validation split alone;
            0 or 1: validation split.
        mixed_share: share of the non-held-out gallery photos (first photo of each
            identity) that get a degraded copy (seeded; every kind in
            ``degrade.TRAIN_KINDS``). The query member, the fusion and the quality
            score are then chosen on clean *and* mixed-quality validation galleries, and
            the rejection threshold is calibrated on the mixed one. 0 disables it.
        degrade_augment: train each transformer on the degraded copies too (the copy's
            embedding -> the query model's embedding of the clean photo): the mixed
            copies and the ``answer_kinds`` galleries' copies (tight crops, tiny faces).
        fusion: ``"auto"`` (chosen by cross-validation among ``ensemble.FUSIONS``; the
            plain mean unless another is better) or one of ``FUSIONS``.
        abstain_below: the answer rule (``answer_rules.AnswerPolicy``, chosen and fitted by
            the cross-validation) answers "Unknown" where its predicted chance of a
            right answer is below this (0.75: a wrong name costs three "Unknown"s), or
            lower where that would say "Unknown" to more than 10% of clean or 20% of
            other calibration queries (``capped_threshold``).
        answer_kinds: ``degrade`` kinds of whole galleries (every gallery photo degraded
            that way, detected as ``cmce index`` detects) on which, beside the clean and
            mixed galleries, the query member and fusion are chosen and the answer rule
            is calibrated.
        augment_kinds: which of ``answer_kinds``' galleries the transformers also train on
            with ``degrade_augment`` (None: all of them; ``()``: the mixed copies only, as
            bundles trained before them).
        strangers_named: the "Unknown" threshold on cohort-normalised scores
            (``unknown.CohortNorm``) names this share of strangers on the clean
            cross-validation galleries; None: the raw similarity thresholds only.
        guard_kinds: ``degrade`` kinds of further whole galleries that calibrate only the
            normalised threshold's coverage guard (``fit_coverage_guard``), beside the
            clean, mixed and ``answer_kinds`` ones; they choose nothing else.

    Returns:
        The saved bundle.
    """
    if isinstance(cv_folds, bool) or not isinstance(cv_folds, int) or cv_folds < 0:
        raise DatasetError(f"cv_folds must be 0 (validation split), 1 (the same) or a fold count >= 2; got {cv_folds!r}")
    from cmce.experiments.degrade import DegradeSpec

    for kind in (*answer_kinds, *guard_kinds):
        DegradeSpec(1.0, (kind,))  # an unknown kind fails here, before anything is embedded
    if augment_kinds is not None and set(augment_kinds) - set(answer_kinds):
        raise DatasetError(f"augment_kinds must be among the answer galleries {tuple(answer_kinds)}, "
                           f"got {tuple(augment_kinds)}")
    if strangers_named is not None and not 0.0 < strangers_named < 1.0:
        raise DatasetError(f"strangers_named is a share in (0, 1) or None, got {strangers_named!r}")
    ds = list_labelled_images(data_dir)
    labels = np.asarray(ds.labels)
    models = [query_model] + [m for m in gallery_models if m != query_model]
    embedded = embed_files(list(ds.paths), models, cache=cache, progress=progress)
    found = embedded.found
    splits = dataset_splits(ds.labels, split)
    tr, va = splits["train"] & found, splits["val"] & found
    if tr.sum() < 10 or va.sum() < 4:
        raise DatasetError(f"{data_dir}: too few faces to train ({tr.sum()} train, {va.sum()} validation)")
    emb = embedded.embeddings
    q = emb[query_model]
    if fusion != "auto" and fusion not in FUSIONS:
        raise DatasetError(f"fusion must be 'auto' or one of {FUSIONS}, got {fusion!r}")
    pool_idx = np.flatnonzero(found & (splits["train"] | splits["val"]))
    gpos = pool_idx[first_image_protocol(labels[pool_idx])[0]]  # the gallery photos that get degraded copies
    degraded, degrade_info = None, None
    if mixed_share > 0:
        from cmce.experiments.degrade import degrade_gallery

        dfiles, degrade_info, dmask = degrade_gallery(embedded, gpos, DegradeSpec(mixed_share, TRAIN_KINDS),
                                                      seed=split.seed + 1, models=models, cache=cache, progress=progress)
        degraded = Degraded(dfiles.embeddings, dfiles.detection_probability, dmask)
    answer_galleries: dict[str, Degraded] = {}
    if answer_kinds and (cv_folds > 1 or (degrade_augment and (augment_kinds is None or augment_kinds))):
        # galleries unlike the training photos, for calibrating the answer rule only: every
        # gallery photo cut to a tight crop, or shrunk to a tiny face, detected as `cmce index` does
        answer_galleries = _whole_galleries(embedded, gpos, answer_kinds, split.seed + 2, models, cache, progress)
    guard_galleries: dict[str, Degraded] = {}
    guard_kinds = tuple(k for k in guard_kinds if k not in answer_kinds)
    if guard_kinds and cv_folds > 1 and strangers_named is not None:
        # one degradation each, for the coverage guard of the "Unknown" threshold and the rule's threshold only
        guard_galleries = _whole_galleries(embedded, gpos, guard_kinds, split.seed + 4, models, cache, progress)
    augment_galleries = {k: g for k, g in answer_galleries.items() if augment_kinds is None or k in augment_kinds}
    augment = degrade_augment and (degraded is not None or bool(augment_galleries))
    # the transformers learn the mixed copies and the crop / tiny galleries' copies alike
    augment_sets = (([degraded] if degraded is not None else []) + list(augment_galleries.values())) if augment else []
    transformers, early, linear, history, adapters = {}, {}, {}, {}, {}
    for m in gallery_models:
        x, y, lab, tr_x, va_x = augmented_pairs(emb[m], q, labels, tr, va, _augment_copies(m, augment_sets))
        logger.info("training transformer %s -> %s on %d pairs", m, query_model, tr_x.sum())
        transformers[m], early[m], history[m] = fit_network(x, y, lab, tr_x, va_x, hidden=hidden, config=train_config,
                                                  refit=refit, progress=progress)
        # the no-learning baseline sees the same images as the transformer's final fit
        fit_rows = tr | va if refit else tr
        linear[m] = fit_linear_map(emb[m][fit_rows], q[fit_rows])
        logger.info("%s: best epoch %d, validation R@1 %.4f", m, history[m]["best_epoch"], history[m]["val_recall_at_1"])
        if query_adapters:
            adapters[m], _, _ = fit_network(q, emb[m], labels, tr, va, hidden=hidden, config=train_config,
                                         refit=refit, progress=False, adapt_queries=True)
    prob = embedded.detection_probability
    val_emb = {k: v[va] for k, v in emb.items()}
    # Every choice and threshold is measured with networks that have not seen the
    # identities measured (with ``refit`` the final ones have seen the validation ones).
    choice = _member_recalls(query_model, gallery_models, early, val_emb, prob[va], labels[va])
    cv, learn, fit_predictor = None, None, None
    fusions = FUSIONS if fusion == "auto" else (fusion,)
    if cv_folds > 1 and (query_member == "auto" or quality in ("auto", "learned") or fusion != "mean"):
        logger.info("choosing the query member, fusion and quality score by %d-fold cross-validation", cv_folds)
        cv = cross_validate_choices(
            emb, prob, labels, tr | va, query_model=query_model, gallery_models=gallery_models,
            epochs={m: history[m]["best_epoch"] for m in gallery_models}, hidden=hidden, config=train_config,
            folds=cv_folds, seed=split.seed, degraded=degraded, augment_sets=augment_sets, fusions=fusions,
            answer_galleries=answer_galleries, guard_galleries=guard_galleries,
        )
        learn = cv.pop("_learn")
        fit_predictor = cv.pop("_predictor")
        fold_galleries = cv.pop("_fold_galleries")
    elif fusion not in ("auto", "mean"):
        raise DatasetError(f"a learned fusion ({fusion}) needs cross-validation folds (--cv-folds >= 2)")
    member_figures = cv["query_member_recall_at_1"] if cv else {"without": choice[False], "with": choice[True]}
    member = member_figures["with"] > member_figures["without"] if query_member == "auto" else query_member == "yes"
    side = "with" if member else "without"
    gate = FusionGate()
    if cv and learn is not None:
        chosen = cv["chosen_fusion"][side]
        gate = learn(chosen, member, tr | va)  # learned on every fold's out-of-fold member vectors
    predictor = fit_predictor(member) if fit_predictor is not None else None
    if quality == "auto" and cv:
        # chosen for the ensemble the bundle will serve (with or without the query member),
        # on the mixed-quality validation galleries when there are degraded copies
        quality = _pick_quality(cv["mixed_rejection_recall_at_1" if degraded is not None else "rejection_recall_at_1"][side])
    cal, cal_info = _calibrate(Bundle(query_model, tuple(gallery_models), early, member, fusion=gate), val_emb,
                               prob[va], labels[va], rejection_rate, open_set_far, quality,
                               reject_on=degraded.mixed(emb, prob, va) if degraded is not None else None,
                               predictor=predictor)
    if cv is not None:
        # the answer rule: fitted on every fold's queries against out-of-fold galleries, clean and degraded
        rule, policies, norm, answer_info = calibrate_answers(fold_galleries(member), quality, fit_predictor, member,
                                                              thresholds=cal.similarity_thresholds,
                                                              abstain_below=abstain_below,
                                                              strangers_named=strangers_named,
                                                              guard_only=tuple(guard_galleries))
        cal = dataclasses.replace(cal, answer_rule=rule, answer_policies=policies, cohort_norm=norm)
        cal_info["answers"] = answer_info
    bundle = Bundle(query_model, tuple(gallery_models), transformers, member, calibration=cal,
                    linear_maps=linear, query_adapters=adapters, fusion=gate)
    bundle.info = {
        "training": {
            "data_description": data_description or f"folder-per-identity dataset {Path(data_dir).name}",
            "images": int(tr.sum()),
            "identities": len(set(labels[tr])),
            "validation_images": int(va.sum()),
            "validation_identities": len(set(labels[va])),
            "heldout_identities": len(set(labels[splits["test"]])),
            "split": asdict(split),
            "identity_fingerprint": identity_fingerprint(ds.labels),
            "identity_loss": train_config.identity_loss,
            "train_config": asdict(train_config),
            "hidden": hidden,
            "refit_on_train_and_validation": refit,
            "seed": train_config.seed,
            "no_face": int((~found).sum()),
            "transformers": history,
            "query_member_val_recall_at_1": {"without": choice[False], "with": choice[True]},
            **cal_info,
            "choices_by": f"{cv_folds}-fold cross-validation" if cv else "validation split",
            "fusion": gate.kind,
            "degrade_augment": augment,
            "augmented_with": (["mixed"] if augment and degraded is not None else []) + (list(augment_galleries) if augment else []),
            **({"mixed_quality_validation": degrade_info} if degrade_info else {}),
            **({"cross_validation": cv} if cv else {}),
        }
    }
    save_bundle(bundle, out_dir)
    return bundle


def heldout_subset(ds: LabelledImages, bundle: Bundle) -> LabelledImages:
    """The identities of ``ds`` the bundle never saw (its held-out test split).

    Raises:
        DatasetError: ``ds`` is not the dataset the bundle was trained on.
    """
    t = bundle.info.get("training", {})
    if t.get("identity_fingerprint") != identity_fingerprint(ds.labels):
        raise DatasetError(
            "--heldout needs the very dataset the bundle was trained on (identity lists differ)"
        )
    split = SplitConfig(**t["split"])
    return ds.subset(dataset_splits(ds.labels, split)["test"])


def embedded_subset(embedded: EmbeddedFiles, keep: np.ndarray) -> EmbeddedFiles:
    idx = np.flatnonzero(keep)
    return EmbeddedFiles(
        tuple(embedded.paths[i] for i in idx),
        tuple(embedded.faces[i] for i in idx),
        tuple(embedded.errors[i] for i in idx),
        {k: v[idx] for k, v in embedded.embeddings.items()},
    )
