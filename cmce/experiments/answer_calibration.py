"""Calibrating a bundle's answers: the answer rule, the "Unknown" threshold and its coverage guard.

``answer_records`` gives each cross-validation query's answer-rule inputs and outcome;
``calibrate_answers`` chooses and fits the answer rule of every view on them
(abstaining below a threshold ``capped_threshold`` keeps within ``ABSTAIN_CAPS``) and,
from the queries asked as strangers, the cohort-normalised "Unknown" threshold per
gallery size (``_thresholds_by_size``), capped by a coverage guard on the gallery's
doubt (``fit_coverage_guard``) that moves with gallery size (``guard_size_slope``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cmce.answer_metrics import cohort_normalised, stranger_best, top_matches, unknown_mask
from cmce.method.answer_rules import (
    ANSWER_RULES,
    choose_answer_rule,
    fit_answer_policy,
    out_of_fold_confidence,
    policy_features,
)
from cmce.method.bundle_model import Bundle
from cmce.method.ensemble import QualityModel
from cmce.method.quality import QualityPredictor
from cmce.method.unknown import DEFAULT_COHORT, CohortNorm, gallery_doubt
from cmce.models.transform import first_image_protocol

__all__ = ["ABSTAIN_CAPS", "GUARD_SHARES", "RULE_SHARE", "STRANGER_SIZES", "AnswerRecords", "answer_records", "calibrate_answers",
           "calibrate_cohort_norm", "capped_threshold", "fit_coverage_guard", "guard_doubt_margin", "guard_shares",
           "guard_size_slope"]

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
        view -> (``answers.policy_features`` plus ``cohort_z`` (the top-1's
        ``answers.cohort_normalised`` score), ``stranger_z`` and ``stranger_raw`` (the
        query's best normalised and raw scores with its person taken out of the gallery),
        the same at each of ``STRANGER_SIZES`` (``@size``: galleries drawn from this one;
        ``cohort_z@size`` for the queries whose person was drawn, NaN for the others),
        (Q,) wrong, (Q,) query identities); ``gallery_size`` and ``gallery_doubt``
        (``answers.gallery_doubt``) repeat the gallery's per query.
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
#: unknowns) on the calibration queries: on clean galleries, and on any gallery kind. The
#: product's promise is at most 10% on clean galleries and 20% on any kind of a *new*
#: gallery; "any" aims three points under it: on a new gallery of ~900 queries a share near
#: 20% has a binomial standard error of 1.3 points (one-sided 95%: 2.2), and a held-out
#: all-low-resolution gallery overshot an aim of 20% by 1.6 points (issue 22). Clean
#: galleries stay far under their cap (under 6% held out), so their aim is the cap.
#: ``cmce train --abstain-caps`` sets others per bundle.
ABSTAIN_CAPS = {"clean": 0.10, "any": 0.17}

#: How many points of the abstention caps the coverage guard leaves the answer rule.
RULE_SHARE = 0.02


def guard_shares(caps: Mapping[str, float]) -> dict[str, float]:
    """The coverage guard's shares for abstention ``caps``: each cap less ``RULE_SHARE``.

    Example:
        >>> guard_shares({"clean": 0.10, "any": 0.20})
        {'clean': 0.08, 'any': 0.18}
    """
    return {k: round(v - RULE_SHARE, 6) for k, v in caps.items()}


def capped_threshold(confidence: np.ndarray, below_threshold: np.ndarray, conditions: np.ndarray,
                     wanted: float, caps: Mapping[str, float] = ABSTAIN_CAPS,
                     reserved: Mapping[str, float] | None = None) -> float:
    """The highest abstention threshold <= ``wanted`` whose unknowns stay within the caps.

    A query answers "Unknown" when its top-1 similarity is below the view's threshold
    (``below_threshold``) or its confidence is below the abstention threshold. Per
    condition the share of unknowns may reach ``caps["clean"]`` on ``clean`` and
    ``caps["any"]`` elsewhere; where the similarity threshold alone passes the cap the
    rule abstains on nothing more there (the threshold returned is then ``-inf``).

    ``reserved`` (same keys): the share of a condition's queries counted as the
    threshold's unknowns at least. With the coverage guard the threshold alone may say
    "Unknown" to up to ``GUARD_SHARES`` of a new gallery's queries, even where it said
    less on the calibration galleries of that kind, so the rule may add only what is
    left above that share (the guard's own unknowns on calibration galleries move with
    the gallery; the rule's addition stays about where it was).

    Example:
        >>> capped_threshold(np.array([.9, .8, .3, .2]), np.zeros(4, bool), np.array(["clean"] * 4), 0.5,
        ...                  {"clean": 0.25, "any": 0.25})
        0.3
        >>> capped_threshold(np.array([.9, .8, .3, .2]), np.zeros(4, bool), np.array(["clean"] * 4), 0.5,
        ...                  {"clean": 0.25, "any": 0.25}, reserved={"clean": 0.25, "any": 0.25})
        -inf
    """
    t = float(wanted)
    for cond in np.unique(conditions):
        sel = conditions == cond
        n = int(sel.sum())
        key = "clean" if cond == "clean" else "any"
        taken = int(below_threshold[sel].sum())
        if reserved is not None:
            taken = max(taken, int(np.floor(reserved[key] * n + 1e-9)))
        allowed = int(np.floor(caps[key] * n + 1e-9)) - taken
        others = np.sort(confidence[sel & ~below_threshold])
        if allowed <= 0:
            return float("-inf")
        if allowed < len(others):
            t = min(t, float(others[allowed]))
    return t


#: The unknown shares the coverage guard allows the "Unknown" threshold alone, on clean
#: galleries and on any other kind: the abstention caps less two points for the answer rule.
GUARD_SHARES = guard_shares(ABSTAIN_CAPS)


def fit_coverage_guard(doubt: np.ndarray, z: np.ndarray, groups: np.ndarray, shares: Sequence[float],
                       kinds: np.ndarray | None = None, margin: float = 0.0
                       ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The most a normalised threshold may be, as a function of a gallery's mean doubt.

    Each group is one calibration gallery: its queries' cohort-normalised top scores ``z``
    and its doubt (``answers.gallery_doubt``; the group's is the mean over its queries). A
    threshold at the group's ``share`` quantile of ``z`` says "Unknown" to that share of
    its queries. The guard is the running minimum of those quantiles over galleries sorted
    by doubt: a gallery never gets a higher cap than a cleaner-looking one, and every
    calibration gallery keeps within its share.

    With ``kinds`` (one kind per query; a kind's groups are its cross-validation folds),
    each kind is placed by its worst fold: the lowest cap any of its folds needs, from the
    lowest doubt any of them showed, divided by ``1 + margin``. The same kind of gallery
    scores differently under networks trained on other people (the folds' caps for one
    kind spread over two spreads), and a bundle's final networks see a gallery with less
    doubt than the folds' networks did, so a cap read at a pooled point holds on the
    calibration galleries and not beyond them.

    Args:
        doubt, z, groups: (Q,) per query.
        shares: one allowed unknown share per group, in ``np.unique(groups)`` order.
        kinds: (Q,) the kind of gallery of each query (None: every group stands alone).
        margin: the relative shift of a kind's doubt the guard allows for (with ``kinds``).

    Returns:
        (ascending doubts, the cap at each, one {group, doubt, cap, queries} per group,
        or with ``kinds`` per kind, its folds' points under ``folds``).

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
        point = {"group": str(g), "doubt": float(doubt[sel].mean()),
                 "cap": float(np.quantile(z[sel], share)), "queries": int(sel.sum())}
        if kinds is not None:
            point["kind"] = str(np.asarray(kinds)[sel][0])
        points.append(point)
    if kinds is not None:
        points = [_worst_fold(k, [p for p in points if p["kind"] == k], margin)
                  for k in dict.fromkeys(p["kind"] for p in points)]
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


def _worst_fold(kind: str, folds: list[dict], margin: float) -> dict:
    """One kind's guard point: its folds' lowest cap at their lowest doubt over ``1 + margin``."""
    return {"group": kind, "doubt": min(p["doubt"] for p in folds) / (1.0 + margin),
            "cap": min(p["cap"] for p in folds), "queries": sum(p["queries"] for p in folds),
            "folds": [{k: v for k, v in p.items() if k != "kind"} for p in folds]}


def guard_doubt_margin(doubt: np.ndarray, groups: np.ndarray, kinds: np.ndarray, floor: float = 0.02,
                       most: float = 0.5) -> float:
    """How far one kind of gallery's mean doubt moves between networks trained on other
    people: the largest relative spread (highest over lowest) of a kind's fold doubts, over
    the kinds whose doubt is at least ``floor`` (below it the guard does not bind), at most
    ``most``. 0.0 when no kind has two folds.

    Example:
        >>> g = np.array(["a/0", "a/1", "b/0", "b/1"]); k = np.array(["a", "a", "b", "b"])
        >>> round(guard_doubt_margin(np.array([0.10, 0.11, 0.30, 0.36]), g, k), 3)
        0.2
    """
    doubt, groups, kinds = np.asarray(doubt, np.float64), np.asarray(groups), np.asarray(kinds)
    spread = 0.0
    for k in np.unique(kinds):
        means = [float(np.nanmean(doubt[groups == g])) for g in np.unique(groups[kinds == k])]
        means = [m for m in means if np.isfinite(m)]
        if len(means) >= 2 and min(means) >= floor:
            spread = max(spread, max(means) / min(means) - 1.0)
    return float(min(spread, most))


#: One query group's records: (fold, condition, view features, (Q,) wrong, (Q,) query identities).
Record = tuple[int, str, dict[str, np.ndarray], np.ndarray, np.ndarray]
#: Records pooled over folds: (features, wrong, fold per query, condition per query, identities).
Pooled = tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray]
#: Per fold: (fold number, the fold's served bundle, condition -> (emb, prob), labels).
FoldGallery = tuple[int, Bundle, Mapping[str, tuple[dict, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class AnswerRecords:
    """Every cross-validation query's ``answer_records``, per view.

    Attributes:
        by_view: view -> one ``Record`` per (fold, condition), in the order measured.
        guard_only: conditions that calibrate the coverage guard and the rule's
            threshold only (``pooled`` leaves them out unless asked).
    """

    by_view: Mapping[str, list[Record]]
    guard_only: tuple[str, ...] = ()

    def pooled(self, view: str, guard: bool = False) -> Pooled:
        """The view's records pooled over folds (and the ``guard_only`` conditions where ``guard``)."""
        rows = [r for r in self.by_view[view] if guard or r[1] not in self.guard_only]
        names = dict.fromkeys(f for r in rows for f in r[2])  # a fold too small for a stranger size lacks it: NaN
        feats = {f: np.concatenate([r[2].get(f, np.full(len(r[3]), np.nan)) for r in rows]) for f in names}
        return (feats, np.concatenate([r[3] for r in rows]), np.concatenate([np.full(len(r[3]), r[0]) for r in rows]),
                np.concatenate([np.full(len(r[3]), r[1]) for r in rows]), np.concatenate([r[4] for r in rows]))


def collect_answer_records(fold_galleries: Iterable[FoldGallery], quality: str,
                           fit_predictor: Callable[[bool, int | None], QualityPredictor] | None, member: bool,
                           cohort: int = DEFAULT_COHORT, guard_only: Sequence[str] = ()) -> AnswerRecords:
    """``answer_records`` of every fold's queries in each of its galleries, with the fold's quality score
    (``quality``; the learned one fitted without the fold, the disagreement score where there is none)."""
    records: dict[str, list[Record]] = {}
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
    return AnswerRecords(records, tuple(guard_only))


def calibrate_answers(fold_galleries: Iterable[FoldGallery], quality: str,
                      fit_predictor: Callable[[bool, int | None], QualityPredictor] | None, member: bool, *,
                      thresholds: Mapping[str, float], abstain_below: float = 0.75,
                      strangers_named: float | None = 0.05, cohort: int = DEFAULT_COHORT,
                      guard_only: Sequence[str] = (), seed: int = 0, caps: Mapping[str, float] = ABSTAIN_CAPS
                      ) -> tuple[str, dict, CohortNorm | None, dict]:
    """Choose and fit the answer rule of every view on cross-validation folds.

    Each fold's queries are searched in that fold's galleries (clean and every degraded
    condition) with networks, fusion and quality score that never saw the fold's
    identities. The rule is chosen on the ensemble view (``answers.choose_answer_rule``:
    a richer rule only where it beats the simpler one by more than its interval), then
    every rule is fitted on all folds for every view (the bundle keeps them all, so
    ``evaluate`` and the app can compare), on every condition (``guard_only`` ones too).
    Each abstains below ``abstain_below``, lowered where needed (``capped_threshold``, on
    out-of-fold confidences) so that with the view's "Unknown" threshold it answers
    "Unknown" on at most ``caps["clean"]`` of the clean calibration queries and ``caps["any"]``
    of any other kind's (``ABSTAIN_CAPS`` by default); the guard's shares are the caps less
    ``RULE_SHARE`` (``guard_shares``).

    The "Unknown" threshold: with ``strangers_named``, each view's normalised threshold
    (``answers.CohortNorm``, cohort ``cohort``) names that share of the clean galleries'
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
    records = collect_answer_records(fold_galleries, quality, fit_predictor, member, cohort, guard_only)
    feats, wrong, folds, conds, ids = records.pooled("ensemble")
    kind, report = choose_answer_rule(feats, wrong, folds, conds, ids, seed=seed)
    norm, guard_report = None, {}
    if strangers_named is not None:
        norm, guard_report = _calibrate_cohort_norms(records, strangers_named, cohort, guard_shares(caps))
    policies, unknown, strangers = {}, {}, {}
    for view in records.by_view:
        policies[view], view_unknown, strangers[view] = _fit_view_policies(
            records, view, thresholds.get(view, -np.inf), norm, abstain_below, kind, caps)
        if view_unknown is not None:
            unknown[view] = view_unknown
    report["abstain_below"] = abstain_below
    report["caps"] = dict(caps)
    report["thresholds"] = {v: {r: p.threshold for r, p in per.items()} for v, per in policies.items()}
    report["unknown_share"] = unknown  # out-of-fold, with the chosen rule and the "Unknown" threshold
    report["strangers_named"] = strangers  # out-of-fold queries asked as strangers, per condition (guard ones too)
    report["cohort_norm"] = norm.to_dict() if norm is not None else None
    report["coverage_guard"] = guard_report
    return kind, policies, norm, report


def _calibrate_cohort_norms(records: AnswerRecords, strangers_named: float, cohort: int,
                            shares: Mapping[str, float] = GUARD_SHARES) -> tuple[CohortNorm | None, dict]:
    """The normalised "Unknown" thresholds naming ``strangers_named`` of the clean galleries'
    strangers, per view and gallery size, with their coverage guard (None where the
    ensemble view has too few strangers), and the guard's report."""
    full = {}
    for view in records.by_view:
        fv, _, _, cv, _ = records.pooled(view)
        t = calibrate_cohort_norm(fv["stranger_z"][cv == "clean"], strangers_named)
        if t is not None:
            full[view] = t
    if "ensemble" not in full:
        return None, {}
    sizes, by_size, aims = _thresholds_by_size(records.pooled, full, strangers_named)
    guard_doubt, guard, slope, guard_report = _coverage_guard(records.pooled, full, sizes, shares)
    norm = CohortNorm(cohort, full, strangers_named, sizes, by_size, guard_doubt, guard, dict(shares),
                      sizes[-1], slope)
    guard_report["strangers_by_size"] = aims
    return norm, guard_report


def _z_thresholds(norm: CohortNorm | None, view: str, f: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """(Q,) each record's normalised threshold in its own gallery (None: not calibrated)."""
    if norm is None or view not in norm.thresholds:
        return None
    out = np.full(len(f["gallery_size"]), np.nan)
    for size, doubt in set(zip(f["gallery_size"].tolist(), f["gallery_doubt"].tolist())):
        sel = (f["gallery_size"] == size) & (f["gallery_doubt"] == doubt)
        out[sel] = norm.threshold(view, int(size), doubt)
    return out


def _fit_view_policies(records: AnswerRecords, view: str, raw_thr: float, norm: CohortNorm | None,
                       abstain_below: float, kind: str, caps: Mapping[str, float] = ABSTAIN_CAPS
                       ) -> tuple[dict, dict | None, dict]:
    """One view's answer rules, each fitted and capped on every kind of gallery (the guard's
    too: ``caps["any"]`` "Unknown" at most on any kind).

    Returns:
        (rule -> AnswerPolicy, condition -> unknown share with rule ``kind`` (None when
        ``kind`` is not among ``ANSWER_RULES``), condition -> strangers named).
    """
    f, w, fo, c, _ = records.pooled(view, guard=True)
    zg = _z_thresholds(norm, view, f)
    below = unknown_mask(f["similarity"], f["cohort_z"], raw_thr, zg)
    named = ~unknown_mask(f["stranger_raw"], f["stranger_z"], raw_thr, zg)
    strangers = {str(x): {"default": float(named[c == x].mean()),
                          "raw_threshold": float((f["stranger_raw"][c == x] >= raw_thr).mean()),
                          "unknown_by_threshold": float(below[c == x].mean())}
                 for x in np.unique(c)}
    policies, unknown = {}, None
    for rule in ANSWER_RULES:
        oof = out_of_fold_confidence(rule, f, w, fo)
        t = capped_threshold(oof, below, c, abstain_below, caps,
                             reserved=guard_shares(caps) if norm is not None else None)
        abst = below | (oof < t)
        policies[rule] = fit_answer_policy(rule, f, w).with_threshold(t, float(abst.mean()))
        if rule == kind:
            unknown = {str(x): float(abst[c == x].mean()) for x in np.unique(c)}
    return policies, unknown, strangers


def _coverage_guard(pooled: Callable[..., Pooled], full: Mapping[str, float], sizes: Sequence[int],
                    shares: Mapping[str, float] = GUARD_SHARES):
    """``fit_coverage_guard`` per view over every calibration gallery (each condition's
    folds apart, the ``guard_only`` conditions included; each kind placed by its worst
    fold, with the doubt margin of ``guard_doubt_margin``), on shared doubt points; and how
    the caps move with gallery size (``guard_size_slope``).

    Returns:
        (ascending doubts, view -> caps at them (never above the view's threshold),
        view -> slope per unit of log size, report).
    """
    fe, _, fold_e, cv_e, _ = pooled("ensemble", guard=True)
    margin = guard_doubt_margin(fe["gallery_doubt"], _fold_groups(cv_e, fold_e), cv_e)
    fits = {}
    for view in full:
        fv, _, fold, cv, _ = pooled(view, guard=True)
        groups = _fold_groups(cv, fold)
        group_shares = [shares["clean" if g.split("/")[0] == "clean" else "any"] for g in np.unique(groups)]
        d, caps, points = fit_coverage_guard(fv["gallery_doubt"], fv["cohort_z"], groups, group_shares, cv, margin)
        cond_shares = [shares["clean" if g == "clean" else "any"] for g in np.unique(cv)]
        fits[view] = (d, caps, points, guard_size_slope(fv, cv, sizes, cond_shares))
    doubt = fits["ensemble"][0]  # every view's galleries are the same, so are their doubts
    guard = {v: tuple(float(min(full[v], x)) for x in np.interp(doubt, d, caps)) for v, (d, caps, _, _) in fits.items()}
    slope = {v: fit[3] for v, fit in fits.items()}
    report = {"shares": dict(shares), "doubt_margin": margin, "placed_by": "worst fold",
              "doubt": doubt.tolist(), "caps": {v: list(g) for v, g in guard.items()},
              "galleries": fits["ensemble"][2], "size": int(sizes[-1]), "slope": slope}
    return tuple(float(x) for x in doubt), guard, slope, report


def _fold_groups(conditions: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """One calibration gallery per (condition, fold): ``"lowres/3"``."""
    return np.char.add(np.char.add(np.asarray(conditions).astype(str), "/"), np.asarray(folds).astype(str))


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


def _thresholds_by_size(pooled: Callable[..., Pooled], full: Mapping[str, float], target: float
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
