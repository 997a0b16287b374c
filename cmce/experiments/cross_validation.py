"""k-fold cross-validation of a bundle's choices: query member, fusion, quality score.

``cross_validate_choices`` trains each fold's transformers on the other folds and
measures every choice on the fold's galleries (clean, mixed-quality and whole degraded
ones). What it returns (``CrossValidation``) goes on to ``train_bundle``: the fusion
learner (``FusionLearner``), the learned quality score (``QualityPredictors``) and the
fold galleries the answer rule is calibrated on (``answer_calibration.calibrate_answers``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from cmce.errors import DatasetError
from cmce.experiments.answer_calibration import FoldGallery
from cmce.experiments.train_networks import (
    Degraded,
    augment_copies,
    augmented_pairs,
    fit_fusion,
    identity_targets,
)
from cmce.experiments.validation import (
    QUALITY_RATES,
    ensemble_recall,
    entry_outcomes,
    fit_quality,
    quality_curves,
)
from cmce.method.bundle_model import Bundle
from cmce.method.ensemble import FUSIONS, FusionGate
from cmce.method.quality import QualityPredictor
from cmce.models.transform import (
    TrainConfig,
    TransformerConfig,
    first_image_protocol,
    train_transformer,
    transform_embeddings,
)

logger = logging.getLogger(__name__)

__all__ = ["CrossValidation", "FoldData", "FoldNetworks", "FusionLearner", "QualityPredictors",
           "cross_validate_choices"]


@dataclass(frozen=True)
class FoldData:
    """What the folds are measured on.

    Attributes:
        emb, prob, labels: every photo's embeddings (backbone -> (N, D)), detector
            probability and identity.
        pool: (N,) the photos cross-validated (train + validation identities).
        degraded: the mixed-quality gallery's degraded copies, if any.
        answer_galleries, guard_galleries: whole degraded galleries by kind.
    """

    emb: dict[str, np.ndarray]
    prob: np.ndarray
    labels: np.ndarray
    pool: np.ndarray
    query_model: str
    gallery_models: tuple[str, ...]
    degraded: Degraded | None = None
    answer_galleries: Mapping[str, Degraded] | None = None
    guard_galleries: Mapping[str, Degraded] | None = None

    def condition(self, ev: np.ndarray, cond: str) -> tuple[dict, np.ndarray]:
        """The photos ``ev`` as gallery ``cond`` has them: ``clean``, ``mixed`` or a whole-gallery kind."""
        if cond == "clean":
            return {m: v[ev] for m, v in self.emb.items()}, self.prob[ev]
        if cond == "mixed":
            return self.degraded.mixed(self.emb, self.prob, ev)  # type: ignore[union-attr]
        if self.answer_galleries and cond in self.answer_galleries:
            return self.answer_galleries[cond].mixed(self.emb, self.prob, ev)
        return self.guard_galleries[cond].mixed(self.emb, self.prob, ev)  # type: ignore[index]


@dataclass(frozen=True)
class FoldNetworks:
    """Per measured fold, its photos and the networks trained without them; and every
    pool photo's out-of-fold member vectors (clean and, with degraded copies, degraded).

    Attributes:
        evs: per fold, (N,) its photos (folds without a query left out).
        nets: per fold, gallery model -> transformer trained on the other folds.
        oof, oof_deg: gallery model -> (N, D) out-of-fold transformed embeddings.
    """

    evs: list[np.ndarray]
    nets: list[dict]
    oof: dict[str, np.ndarray]
    oof_deg: dict[str, np.ndarray] | None

    def bundle(self, data: FoldData, k: int, member: bool, fusion: FusionGate) -> Bundle:
        """Fold ``k``'s bundle, with or without the query member, fused by ``fusion``."""
        return Bundle(data.query_model, data.gallery_models, self.nets[k], member, fusion=fusion)


def _train_folds(data: FoldData, parts: Sequence[np.ndarray], epochs: Mapping[str, int], hidden: int,
                 config: TrainConfig, augment_sets: Sequence[Degraded]) -> FoldNetworks:
    """Each fold's transformers, trained on the other folds for ``epochs[m]`` epochs."""
    emb, labels, pool, degraded = data.emb, data.labels, data.pool, data.degraded
    q = emb[data.query_model]
    evs, nets_by_fold = [], []
    oof = {m: np.zeros((len(labels), q.shape[1]), np.float32) for m in data.gallery_models}
    oof_deg = ({m: np.zeros((len(labels), q.shape[1]), np.float32) for m in data.gallery_models}
               if degraded else None)
    for k, part in enumerate(parts):
        ev = pool & np.isin(labels, part)
        fit = pool & ~ev
        if len(first_image_protocol(labels[ev])[1]) == 0:
            continue
        nets = {}
        for m in data.gallery_models:
            x, y, lab, tr, _ = augmented_pairs(emb[m], q, labels, fit, np.zeros_like(fit),
                                               augment_copies(m, augment_sets))
            nets[m] = train_transformer(
                x[tr], y[tr], lab[tr], None, None, None,
                arch=TransformerConfig(emb[m].shape[1], q.shape[1], hidden=hidden),
                config=config, fixed_epochs=epochs[m],
            ).module
            oof[m][ev] = transform_embeddings(nets[m], emb[m][ev])
            if degraded is not None:
                oof_deg[m][ev] = transform_embeddings(nets[m], degraded.embeddings[m][ev])  # type: ignore[index]
        evs.append(ev)
        nets_by_fold.append(nets)
        logger.info("cross-validation fold %d/%d trained", k + 1, len(parts))
    if not evs:
        raise DatasetError("cross-validation: no fold has an identity with two images")
    return FoldNetworks(evs, nets_by_fold, oof, oof_deg)


def _fusion_targets(data: FoldData) -> tuple[np.ndarray, np.ndarray]:
    """(N,) the pool's gallery photos (first image of each identity) and (N, D) their ``identity_targets``."""
    gal = np.zeros(len(data.labels), bool)
    pool_idx = np.flatnonzero(data.pool)
    gal[pool_idx[first_image_protocol(data.labels[pool_idx])[0]]] = True
    return gal, identity_targets(data.emb[data.query_model], data.labels, gal)


@dataclass(frozen=True)
class FusionLearner:
    """Fusions learned on out-of-fold member vectors of the pool's gallery photos, clean and
    degraded (stacking); memoised by (kind, member, training rows).

    Attributes:
        gallery: (N,) the pool's gallery photos; targets: (N, D) their ``identity_targets``.
    """

    data: FoldData
    nets: FoldNetworks
    seed: int
    gallery: np.ndarray
    targets: np.ndarray
    learned: dict = field(default_factory=dict)

    def __call__(self, kind: str, member: bool, train_rows: np.ndarray) -> FusionGate:
        """The fusion ``kind`` learned on the gallery photos among ``train_rows`` (the mean: nothing to learn)."""
        if kind == "mean":
            return FusionGate()
        key = (kind, member, train_rows.tobytes())
        if key not in self.learned:
            self.learned[key] = self._learn(kind, member, train_rows)
        return self.learned[key]

    def _learn(self, kind: str, member: bool, train_rows: np.ndarray) -> FusionGate:
        data = self.data
        names = tuple(data.gallery_models) + (("query",) if member else ())
        rows = train_rows & self.gallery
        vecs = self.member_rows(rows, member, False)
        probs, tg = [data.prob[rows]], [self.targets[rows]]
        if data.degraded is not None:
            drows = rows & data.degraded.mask
            vecs = [np.concatenate([a, b]) for a, b in zip(vecs, self.member_rows(drows, member, True))]
            probs.append(data.degraded.probability[drows])
            tg.append(self.targets[drows])
        return fit_fusion(kind, names, vecs, None, np.concatenate(probs), np.concatenate(tg), seed=self.seed)

    def member_rows(self, rows: np.ndarray, member: bool, degraded: bool) -> list[np.ndarray]:
        """The out-of-fold member vectors of ``rows`` (the query model's own last, with ``member``)."""
        data = self.data
        src = self.nets.oof_deg if degraded else self.nets.oof
        vecs = [src[m][rows] for m in data.gallery_models]  # type: ignore[index]
        if member:
            q = data.emb[data.query_model]
            own = data.degraded.embeddings[data.query_model] if degraded else q  # type: ignore[union-attr]
            vecs.append(own[rows])
        return vecs


@dataclass(frozen=True)
class QualityPredictors:
    """The learned quality score, fitted on folds' gallery entries and how their queries fared.

    Attributes:
        outcomes: member -> per fold, per condition (clean, mixed) ``entry_outcomes``.
    """

    outcomes: Mapping[bool, list[list[dict]]]

    def __call__(self, member: bool, leave_out: int | None = None) -> QualityPredictor:
        """Fitted on every fold but ``leave_out``."""
        return fit_quality([o for k, per in enumerate(self.outcomes[member]) if k != leave_out for o in per])


@dataclass(frozen=True)
class CrossValidation:
    """What ``cross_validate_choices`` found, and what ``train_bundle`` goes on with.

    Attributes:
        report: the JSON-ready measurements (see ``cross_validate_choices``).
        learn: the fusion learner (the final fusion is learned on every fold's out-of-fold vectors).
        chosen: member -> the fusion chosen for it.
        choice_conditions: the galleries the member and fusion were chosen on.
        predictor: member -> the learned quality score (fitted on every fold unless one is left out).
    """

    report: dict
    data: FoldData
    nets: FoldNetworks
    learn: FusionLearner
    chosen: Mapping[bool, str]
    choice_conditions: tuple[str, ...]
    predictor: QualityPredictors

    def fold_bundle(self, k: int, member: bool) -> Bundle:
        """Fold ``k``'s bundle with the fusion chosen for ``member``, learned without the fold."""
        fusion = self.learn(self.chosen[member], member, self.data.pool & ~self.nets.evs[k])
        return self.nets.bundle(self.data, k, member, fusion)

    def fold_galleries(self, member: bool) -> Iterator[FoldGallery]:
        """Per fold: (fold number, the fold's served bundle, condition -> (emb, prob), labels)."""
        data = self.data
        for k, ev in enumerate(self.nets.evs):
            fb = self.fold_bundle(k, member)
            conds = (*self.choice_conditions, *(data.guard_galleries or {}))
            yield k, fb, {c: data.condition(ev, c) for c in conds}, data.labels[ev]


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
) -> CrossValidation:
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
    (through ``CrossValidation.fold_galleries``); the quality score is still chosen on mixed galleries.
    ``guard_galleries`` join ``fold_galleries`` only (the "Unknown" threshold's coverage
    guard is calibrated on them); they choose nothing.

    Returns:
        The choices' measurements, with the fusion learner, the learned quality score and
        the fold galleries that ``train_bundle`` goes on with. Its ``report`` is
        ``{"folds", "queries", "query_member_recall_at_1": {"without", "with"},
        "fusion_recall_at_1": {fusion: {"clean", "mixed"}} (the served member choice),
        "rejection_recall_at_1": {"without"|"with": {kind: [R@1 per rate]}} (clean),
        "mixed_rejection_recall_at_1": the same on mixed galleries, "rates"}``; the
        rejection curves are for the fusion ``_choose_fusion`` picks.
    """
    ids = np.unique(labels[pool])
    rng = np.random.default_rng(seed)
    parts = np.array_split(rng.permutation(ids), folds)
    data = FoldData(emb, prob, labels, pool, query_model, tuple(gallery_models), degraded, answer_galleries,
                    guard_galleries)
    nets = _train_folds(data, parts, epochs, hidden, config, augment_sets)
    learn = FusionLearner(data, nets, seed, *_fusion_targets(data))
    weights = np.asarray([len(first_image_protocol(labels[ev])[1]) for ev in nets.evs], float)
    w = weights / weights.sum()
    conditions = ("clean", "mixed") if degraded is not None else ("clean",)
    choice_conditions = (*conditions, *(answer_galleries or {}))  # what the member and fusion are chosen on
    fusion_r1 = _fusion_recalls(data, nets, learn, fusions, choice_conditions, w)
    chosen = {b: _choose_fusion(fusion_r1[b]) for b in (False, True)}
    # each fold's gallery entries with their queries' outcomes (clean and mixed): the
    # learned quality score is fitted on the other folds' entries and measured on the fold
    found = CrossValidation({}, data, nets, learn, chosen, choice_conditions,
                            QualityPredictors(_fold_outcomes(data, nets, learn, chosen, conditions)))
    curves = _rejection_curves(found, conditions)
    found.report.update({
        "folds": folds,
        "queries": int(weights.sum()),
        "conditions": list(conditions),
        "query_member_recall_at_1": {"without": _member_score(fusion_r1, chosen, conditions, False),
                                     "with": _member_score(fusion_r1, chosen, conditions, True)},
        "fusion_recall_at_1": {name: fusion_r1[b] for name, b in (("without", False), ("with", True))},
        "chosen_fusion": {"without": chosen[False], "with": chosen[True]},
        "rejection_recall_at_1": _weighted_curves(w, curves["clean"]),
        "rates": list(QUALITY_RATES),
    })
    if degraded is not None:
        found.report["mixed_rejection_recall_at_1"] = _weighted_curves(w, curves["mixed"])
    return found


def _fusion_recalls(data: FoldData, nets: FoldNetworks, learn: FusionLearner, fusions: Sequence[str],
                    conditions: Sequence[str], w: np.ndarray) -> dict[bool, dict[str, dict[str, float]]]:
    """member -> fusion -> condition -> Recall@1 averaged over folds with weights ``w``."""
    fusion_r1: dict[bool, dict[str, dict[str, float]]] = {False: {}, True: {}}
    for member in (False, True):
        for kind in fusions:
            per: dict[str, list[float]] = {c: [] for c in conditions}
            for k, ev in enumerate(nets.evs):
                fb = nets.bundle(data, k, member, learn(kind, member, data.pool & ~ev))
                for c in conditions:
                    e, pr = data.condition(ev, c)
                    per[c].append(ensemble_recall(fb, e, pr, data.labels[ev]))
            fusion_r1[member][kind] = {c: float(w @ np.asarray(per[c])) for c in conditions}
    return fusion_r1


def _fold_outcomes(data: FoldData, nets: FoldNetworks, learn: FusionLearner, chosen: Mapping[bool, str],
                   conditions: Sequence[str]) -> dict[bool, list[list[dict]]]:
    """member -> per fold, per condition: ``entry_outcomes`` with the chosen fusion."""
    return {member: [[entry_outcomes(nets.bundle(data, k, member, learn(chosen[member], member, data.pool & ~ev)),
                                     *data.condition(ev, c), data.labels[ev]) for c in conditions]
                     for k, ev in enumerate(nets.evs)] for member in (False, True)}


def _rejection_curves(found: CrossValidation, conditions: Sequence[str]) -> dict[str, dict[bool, dict[str, list]]]:
    """condition -> member -> quality kind -> per fold, Recall@1 per rejection rate, with the
    learned quality score fitted without the fold."""
    curves: dict[str, dict[bool, dict[str, list]]] = {c: {False: {}, True: {}} for c in conditions}
    data = found.data
    for member in (False, True):
        for k, ev in enumerate(found.nets.evs):
            fb = found.fold_bundle(k, member)
            qp = found.predictor(member, k)
            for c in conditions:
                e, pr = data.condition(ev, c)
                cv, _, _ = quality_curves(fb, e, pr, data.labels[ev], predictor=qp)
                for kind, values in cv.items():
                    curves[c][member].setdefault(kind, []).append(values)
    return curves


def _weighted_curves(w: np.ndarray, cs: Mapping[bool, dict[str, list]]) -> dict:
    """``{"without"|"with": {kind: [R@1 per rate]}}`` averaged over folds with weights ``w``."""
    return {name: {k: [float(x) for x in w @ np.asarray(v)] for k, v in cs[b].items()}
            for name, b in (("without", False), ("with", True))}


def _member_score(fusion_r1: Mapping[bool, dict[str, dict[str, float]]], chosen: Mapping[bool, str],
                  conditions: Sequence[str], member: bool) -> float:
    """Mean Recall@1 over ``conditions`` of the fusion chosen with or without the query member."""
    return float(np.mean([fusion_r1[member][chosen[member]][c] for c in conditions]))


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
