"""Train a bundle on a folder-per-identity dataset: ``python -m cmce train``.

Steps: list the dataset; split identities into train / validation / held-out test
(disjoint, fixed seed; ``splits``); embed every image once with every backbone (cached);
train one transformer per gallery model on the train identities with early stopping on
the validation identities (``train_networks``); pick by measurement on validation
whether the query model's own gallery embedding joins the ensemble, how its members are
fused, and which quality score rejects best for that ensemble (``cross_validation``; the
learned score is fitted on the cross-validation folds' out-of-fold gallery entries);
calibrate the rejection and open-set thresholds on validation (``validation``) and the
answer rule on the folds (``answer_calibration``); save the bundle.
The held-out identities are never seen; ``evaluate --heldout`` reports on them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cmce.errors import DatasetError
from cmce.experiments.answer_calibration import ABSTAIN_CAPS, calibrate_answers
from cmce.experiments.cross_validation import CrossValidation, cross_validate_choices
from cmce.experiments.degrade import TRAIN_KINDS
from cmce.experiments.splits import SplitConfig, dataset_splits, identity_fingerprint
from cmce.experiments.train_networks import (
    Degraded,
    augment_copies,
    augmented_pairs,
    fit_network,
    whole_galleries,
)
from cmce.experiments.validation import (
    calibrate_validation,
    member_recalls,
    pick_quality,
)
from cmce.io.datasets import LabelledImages, list_labelled_images
from cmce.method.bundle import save_bundle
from cmce.method.bundle_model import Bundle, Calibration
from cmce.method.ensemble import FUSIONS, FusionGate
from cmce.models.embed import EmbeddedFiles, EmbeddingCache, embed_files
from cmce.models.transform import TrainConfig, first_image_protocol, fit_linear_map

logger = logging.getLogger(__name__)

__all__ = ["train_bundle"]


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
    abstain_caps: Mapping[str, float] | None = None,
) -> Bundle:
    """Train, calibrate and save a bundle. See the module docstring for the steps.

    Longer than 80 lines only by its many keyword options and their documentation: the
    body is a few lines per step, each step a named function below.

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
        abstain_below: the answer rule (``answers.AnswerPolicy``, chosen and fitted by
            the cross-validation) answers "Unknown" where its predicted chance of a
            right answer is below this (0.75: a wrong name costs three "Unknown"s), or
            lower where that would say "Unknown" to more than ``abstain_caps`` of the
            calibration queries (``capped_threshold``).
        answer_kinds: ``degrade`` kinds of whole galleries (every gallery photo degraded
            that way, detected as ``cmce index`` detects) on which, beside the clean and
            mixed galleries, the query member and fusion are chosen and the answer rule
            is calibrated.
        augment_kinds: which of ``answer_kinds``' galleries the transformers also train on
            with ``degrade_augment`` (None: all of them; ``()``: the mixed copies only, as
            bundles trained before them).
        strangers_named: the "Unknown" threshold on cohort-normalised scores
            (``answers.CohortNorm``) names this share of strangers on the clean
            cross-validation galleries; None: the raw similarity thresholds only.
        guard_kinds: ``degrade`` kinds of further whole galleries that calibrate only the
            normalised threshold's coverage guard (``fit_coverage_guard``), beside the
            clean, mixed and ``answer_kinds`` ones; they choose nothing else.
        abstain_caps: ``{"clean": ..., "any": ...}``, the most the default answers
            "Unknown" on the clean and on any other kind of calibration gallery; the
            coverage guard's shares are these less two points. None:
            ``answer_calibration.ABSTAIN_CAPS`` (10% and 17%).

    Returns:
        The saved bundle.
    """
    _check_options(cv_folds, answer_kinds, guard_kinds, augment_kinds, strangers_named, abstain_caps)
    photos = _embed_photos(data_dir, query_model, gallery_models, split, fusion, cache, progress)
    sets = _degraded_sets(photos, split.seed, cv_folds, mixed_share, answer_kinds, guard_kinds, augment_kinds,
                          degrade_augment, strangers_named, cache, progress)
    nets = _train_networks(photos, query_model, gallery_models, sets.augment_sets, hidden=hidden,
                           config=train_config, refit=refit, query_adapters=query_adapters, progress=progress)
    # Every choice and threshold is measured with networks that have not seen the
    # identities measured (with ``refit`` the final ones have seen the validation ones).
    tr, va = photos.train, photos.val
    prob, labels = photos.embedded.detection_probability, photos.labels
    val_emb = {k: v[va] for k, v in photos.embedded.embeddings.items()}
    choice = member_recalls(query_model, gallery_models, nets.early, val_emb, prob[va], labels[va])
    cv = None
    if cv_folds > 1 and (query_member == "auto" or quality in ("auto", "learned") or fusion != "mean"):
        logger.info("choosing the query member, fusion and quality score by %d-fold cross-validation", cv_folds)
        cv = cross_validate_choices(
            photos.embedded.embeddings, prob, labels, tr | va, query_model=query_model,
            gallery_models=gallery_models, epochs={m: nets.history[m]["best_epoch"] for m in gallery_models},
            hidden=hidden, config=train_config, folds=cv_folds, seed=split.seed, degraded=sets.degraded,
            augment_sets=sets.augment_sets, fusions=FUSIONS if fusion == "auto" else (fusion,),
            answer_galleries=sets.answer_galleries, guard_galleries=sets.guard_galleries,
        )
    elif fusion not in ("auto", "mean"):
        raise DatasetError(f"a learned fusion ({fusion}) needs cross-validation folds (--cv-folds >= 2)")
    member_figures = cv.report["query_member_recall_at_1"] if cv else {"without": choice[False], "with": choice[True]}
    member = member_figures["with"] > member_figures["without"] if query_member == "auto" else query_member == "yes"
    gate = FusionGate()
    if cv:  # learned on every fold's out-of-fold member vectors
        gate = cv.learn(cv.report["chosen_fusion"]["with" if member else "without"], member, tr | va)
    early = Bundle(query_model, tuple(gallery_models), nets.early, member, fusion=gate)
    cal, cal_info = _calibrate_bundle(photos, sets, cv, early, quality=quality, rejection_rate=rejection_rate,
                                      open_set_far=open_set_far, abstain_below=abstain_below,
                                      strangers_named=strangers_named, abstain_caps=abstain_caps)
    bundle = Bundle(query_model, tuple(gallery_models), nets.transformers, member, calibration=cal,
                    linear_maps=nets.linear, query_adapters=nets.adapters, fusion=gate)
    bundle.info = {"training": _training_info(
        photos, sets, nets, cv, data_dir, data_description, split, train_config, hidden, refit, cv_folds,
        {"without": choice[False], "with": choice[True]}, cal_info, gate)}
    save_bundle(bundle, out_dir)
    return bundle


def _check_options(cv_folds: int, answer_kinds: Sequence[str], guard_kinds: Sequence[str],
                   augment_kinds: Sequence[str] | None, strangers_named: float | None,
                   abstain_caps: Mapping[str, float] | None = None) -> None:
    """Fail on ``train_bundle`` options that cannot work, before anything is embedded."""
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
    if abstain_caps is not None and (set(abstain_caps) != {"clean", "any"}
                                     or not all(0.02 < v < 1.0 for v in abstain_caps.values())):
        raise DatasetError(f"abstain_caps is {{'clean': share, 'any': share}}, each share in (0.02, 1): the "
                           f"coverage guard keeps 2 points of it for the answer rule; got {abstain_caps!r}")


@dataclass(frozen=True)
class TrainingPhotos:
    """The dataset, embedded and split.

    Attributes:
        models: the query model first, then the other gallery models.
        splits: ``dataset_splits`` (every photo); train, val: those with a face found.
        gallery_positions: the non-held-out gallery photos (first of each identity):
            those that get degraded copies.
    """

    ds: LabelledImages
    labels: np.ndarray
    models: list[str]
    embedded: EmbeddedFiles
    splits: dict[str, np.ndarray]
    train: np.ndarray
    val: np.ndarray
    gallery_positions: np.ndarray


def _embed_photos(data_dir: str | os.PathLike, query_model: str, gallery_models: Sequence[str], split: SplitConfig,
                  fusion: str, cache: EmbeddingCache | None, progress: bool) -> TrainingPhotos:
    """List, embed and split the dataset (and check ``fusion``, as ever after embedding)."""
    ds = list_labelled_images(data_dir)
    labels = np.asarray(ds.labels)
    models = [query_model] + [m for m in gallery_models if m != query_model]
    embedded = embed_files(list(ds.paths), models, cache=cache, progress=progress)
    found = embedded.found
    splits = dataset_splits(ds.labels, split)
    tr, va = splits["train"] & found, splits["val"] & found
    if tr.sum() < 10 or va.sum() < 4:
        raise DatasetError(f"{data_dir}: too few faces to train ({tr.sum()} train, {va.sum()} validation)")
    if fusion != "auto" and fusion not in FUSIONS:
        raise DatasetError(f"fusion must be 'auto' or one of {FUSIONS}, got {fusion!r}")
    pool_idx = np.flatnonzero(found & (splits["train"] | splits["val"]))
    gpos = pool_idx[first_image_protocol(labels[pool_idx])[0]]  # the gallery photos that get degraded copies
    return TrainingPhotos(ds, labels, models, embedded, splits, tr, va, gpos)


@dataclass(frozen=True)
class DegradedSets:
    """The degraded galleries a bundle is trained, chosen and calibrated on.

    Attributes:
        degraded: the mixed-quality gallery's copies (None without ``mixed_share``);
            degrade_info: its report.
        answer_galleries: kind -> whole degraded gallery choosing and calibrating answers.
        guard_galleries: kind -> whole degraded gallery calibrating only the coverage guard.
        augment_galleries: the answer galleries the transformers also train on.
        augment: whether the transformers train on degraded copies at all.
        augment_sets: the sets of copies they train on.
    """

    degraded: Degraded | None
    degrade_info: dict | None
    answer_galleries: dict[str, Degraded]
    guard_galleries: dict[str, Degraded]
    augment_galleries: dict[str, Degraded]
    augment: bool
    augment_sets: list[Degraded]


def _degraded_sets(photos: TrainingPhotos, seed: int, cv_folds: int, mixed_share: float,
                   answer_kinds: Sequence[str], guard_kinds: Sequence[str], augment_kinds: Sequence[str] | None,
                   degrade_augment: bool, strangers_named: float | None, cache: EmbeddingCache | None,
                   progress: bool) -> DegradedSets:
    """Degrade the gallery photos: a mixed share (seed ``seed + 1``), whole answer galleries
    (``seed + 2``...) and whole guard galleries (``seed + 4``...), each only where used."""
    from cmce.experiments.degrade import DegradeSpec

    embedded, gpos, models = photos.embedded, photos.gallery_positions, photos.models
    degraded, degrade_info = None, None
    if mixed_share > 0:
        from cmce.experiments.degrade import degrade_gallery

        dfiles, degrade_info, dmask = degrade_gallery(embedded, gpos, DegradeSpec(mixed_share, TRAIN_KINDS),
                                                      seed=seed + 1, models=models, cache=cache, progress=progress)
        degraded = Degraded(dfiles.embeddings, dfiles.detection_probability, dmask)
    answer_galleries: dict[str, Degraded] = {}
    if answer_kinds and (cv_folds > 1 or (degrade_augment and (augment_kinds is None or augment_kinds))):
        # galleries unlike the training photos, for calibrating the answer rule only: every
        # gallery photo cut to a tight crop, or shrunk to a tiny face, detected as `cmce index` does
        answer_galleries = whole_galleries(embedded, gpos, answer_kinds, seed + 2, models, cache, progress)
    guard_galleries: dict[str, Degraded] = {}
    guard_kinds = tuple(k for k in guard_kinds if k not in answer_kinds)
    if guard_kinds and cv_folds > 1 and strangers_named is not None:
        # one degradation each, for the coverage guard of the "Unknown" threshold and the rule's threshold only
        guard_galleries = whole_galleries(embedded, gpos, guard_kinds, seed + 4, models, cache, progress)
    augment_galleries = {k: g for k, g in answer_galleries.items() if augment_kinds is None or k in augment_kinds}
    augment = degrade_augment and (degraded is not None or bool(augment_galleries))
    # the transformers learn the mixed copies and the crop / tiny galleries' copies alike
    augment_sets = (([degraded] if degraded is not None else []) + list(augment_galleries.values())) if augment else []
    return DegradedSets(degraded, degrade_info, answer_galleries, guard_galleries, augment_galleries, augment,
                        augment_sets)


@dataclass(frozen=True)
class TrainedNetworks:
    """Per gallery model: the final transformer, the early-stopped one (trained on the train
    identities only), the linear baseline, the training history and the query adapter."""

    transformers: dict
    early: dict
    linear: dict
    history: dict
    adapters: dict


def _train_networks(photos: TrainingPhotos, query_model: str, gallery_models: Sequence[str],
                    augment_sets: Sequence[Degraded], *, hidden: int, config: TrainConfig, refit: bool,
                    query_adapters: bool, progress: bool) -> TrainedNetworks:
    """Each gallery model's transformer (``fit_network``, on the degraded copies too), its
    linear baseline and, with ``query_adapters``, its query adapter."""
    emb, labels, tr, va = photos.embedded.embeddings, photos.labels, photos.train, photos.val
    q = emb[query_model]
    transformers, early, linear, history, adapters = {}, {}, {}, {}, {}
    for m in gallery_models:
        x, y, lab, tr_x, va_x = augmented_pairs(emb[m], q, labels, tr, va, augment_copies(m, augment_sets))
        logger.info("training transformer %s -> %s on %d pairs", m, query_model, tr_x.sum())
        transformers[m], early[m], history[m] = fit_network(x, y, lab, tr_x, va_x, hidden=hidden, config=config,
                                                            refit=refit, progress=progress)
        # the no-learning baseline sees the same images as the transformer's final fit
        fit_rows = tr | va if refit else tr
        linear[m] = fit_linear_map(emb[m][fit_rows], q[fit_rows])
        logger.info("%s: best epoch %d, validation R@1 %.4f", m, history[m]["best_epoch"], history[m]["val_recall_at_1"])
        if query_adapters:
            adapters[m], _, _ = fit_network(q, emb[m], labels, tr, va, hidden=hidden, config=config,
                                            refit=refit, progress=False, adapt_queries=True)
    return TrainedNetworks(transformers, early, linear, history, adapters)


def _calibrate_bundle(photos: TrainingPhotos, sets: DegradedSets, cv: CrossValidation | None, early: Bundle, *,
                      quality: str, rejection_rate: float, open_set_far: float, abstain_below: float,
                      strangers_named: float | None, abstain_caps: Mapping[str, float] | None = None
                      ) -> tuple[Calibration, dict]:
    """The bundle's calibration, measured with the early-stopped networks ``early``: the
    quality score (chosen by cross-validation for ``"auto"``), the validation thresholds
    and, after cross-validation, the answer rule fitted on its folds."""
    va, emb, prob = photos.val, photos.embedded.embeddings, photos.embedded.detection_probability
    member, degraded = early.query_member, sets.degraded
    side = "with" if member else "without"
    predictor = cv.predictor(member) if cv is not None else None
    if quality == "auto" and cv:
        # chosen for the ensemble the bundle will serve (with or without the query member),
        # on the mixed-quality validation galleries when there are degraded copies
        quality = pick_quality(cv.report["mixed_rejection_recall_at_1" if degraded is not None
                                         else "rejection_recall_at_1"][side])
    cal, cal_info = calibrate_validation(early, {k: v[va] for k, v in emb.items()}, prob[va], photos.labels[va],
                                         rejection_rate, open_set_far, quality,
                                         reject_on=degraded.mixed(emb, prob, va) if degraded is not None else None,
                                         predictor=predictor)
    if cv is not None:
        # the answer rule: fitted on every fold's queries against out-of-fold galleries, clean and degraded
        rule, policies, norm, answer_info = calibrate_answers(cv.fold_galleries(member), quality, cv.predictor, member,
                                                              thresholds=cal.similarity_thresholds,
                                                              abstain_below=abstain_below,
                                                              strangers_named=strangers_named,
                                                              guard_only=tuple(sets.guard_galleries),
                                                              caps=abstain_caps or ABSTAIN_CAPS)
        cal = dataclasses.replace(cal, answer_rule=rule, answer_policies=policies, cohort_norm=norm)
        cal_info["answers"] = answer_info
    return cal, cal_info


def _training_info(photos: TrainingPhotos, sets: DegradedSets, nets: TrainedNetworks, cv: CrossValidation | None,
                   data_dir: str | os.PathLike, data_description: str | None, split: SplitConfig,
                   train_config: TrainConfig, hidden: int, refit: bool, cv_folds: int,
                   member_recall: dict[str, float], cal_info: dict, gate: FusionGate) -> dict:
    """The bundle's training summary (``bundle.info["training"]``)."""
    labels, tr, va = photos.labels, photos.train, photos.val
    augment, degraded = sets.augment, sets.degraded
    return {
        "data_description": data_description or f"folder-per-identity dataset {Path(data_dir).name}",
        "images": int(tr.sum()),
        "identities": len(set(labels[tr])),
        "validation_images": int(va.sum()),
        "validation_identities": len(set(labels[va])),
        "heldout_identities": len(set(labels[photos.splits["test"]])),
        "split": asdict(split),
        "identity_fingerprint": identity_fingerprint(photos.ds.labels),
        "identity_loss": train_config.identity_loss,
        "train_config": asdict(train_config),
        "hidden": hidden,
        "refit_on_train_and_validation": refit,
        "seed": train_config.seed,
        "no_face": int((~photos.embedded.found).sum()),
        "transformers": nets.history,
        "query_member_val_recall_at_1": member_recall,
        **cal_info,
        "choices_by": f"{cv_folds}-fold cross-validation" if cv else "validation split",
        "fusion": gate.kind,
        "degrade_augment": augment,
        "augmented_with": (["mixed"] if augment and degraded is not None else [])
        + (list(sets.augment_galleries) if augment else []),
        **({"mixed_quality_validation": sets.degrade_info} if sets.degrade_info else {}),
        **({"cross_validation": cv.report} if cv else {}),
    }
