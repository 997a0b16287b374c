"""Train a bundle on a folder-per-identity dataset: ``python -m cmce train``.

Steps: list the dataset; split identities into train / validation / held-out test
(disjoint, fixed seed); embed every image once with every backbone (cached); train
one transformer per gallery model on the train identities with early stopping on the
validation identities; pick by measurement on validation whether the query model's
own gallery embedding joins the ensemble and which quality score rejects best for
that ensemble;
calibrate the rejection and open-set thresholds on validation; save the bundle.
The held-out identities are never seen; ``evaluate --heldout`` reports on them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import metrics as M
from .bundle import Bundle, Calibration, save_bundle
from .data import LabelledImages, list_labelled_images, split_identities
from .embed import EmbeddedFiles, EmbeddingCache, embed_files
from .ensemble import QUALITY_SCORES, QualityModel
from .errors import DatasetError
from .transform import (
    TrainConfig,
    TransformerConfig,
    first_image_protocol,
    fit_linear_map,
    train_transformer,
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
                    random_repeats: int = 5) -> tuple[dict, int, float]:
    """Recall@1 after rejecting 5/10/20/30% of the gallery by each quality score.

    Measured on the ensemble ``bundle`` serves (with the query model's own gallery
    embedding as a member when ``bundle.query_member``): a score is chosen for the
    errors that ensemble makes. The combined score's ranks are fitted on this very
    gallery. ``random`` is the mean of ``random_repeats`` random rejections (seeded).

    Returns:
        (quality kind or ``random`` -> list of Recall@1 per rate, number of queries,
        Recall@1 with nothing rejected).
    """
    gi, qi = first_image_protocol(labels)
    gv = bundle.gallery_vectors({m: v[gi] for m, v in emb.items()}, prob[gi])
    q_lab, g_lab = labels[qi], labels[gi]
    sim = emb[bundle.query_model][qi] @ gv.ensemble.T
    ref = QualityModel.fit("combined", gv.uncertainty, prob[gi])

    def r1(score: np.ndarray, rate: float) -> float:
        return M.recall_at_k(sim, q_lab, g_lab, ks=(1,), gallery_mask=M.gallery_rejection_mask(score, rate))[1]

    curves = {}
    for kind in QUALITY_SCORES:
        s = QualityModel(kind, ref.uncertainty_reference, ref.doubt_reference).score(gv.uncertainty, prob[gi])
        curves[kind] = [r1(s, r) for r in QUALITY_RATES]
    rng = np.random.default_rng(0)
    draws = [rng.random(len(gi)) for _ in range(random_repeats)]
    curves["random"] = [float(np.mean([r1(d, r) for d in draws])) for r in QUALITY_RATES]
    return curves, len(qi), M.recall_at_k(sim, q_lab, g_lab, ks=(1,))[1]


def _member_recalls(query_model: str, gallery_models: Sequence[str], transformers: dict, emb: dict,
                    prob: np.ndarray, labels: np.ndarray) -> dict[bool, float]:
    """Ensemble Recall@1 without (False) and with (True) the query model as a member."""
    gi, qi = first_image_protocol(labels)
    out = {}
    for member in (False, True):
        b = Bundle(query_model, tuple(gallery_models), transformers, member)
        gv = b.gallery_vectors({k: v[gi] for k, v in emb.items()}, prob[gi])
        out[member] = M.recall_at_k(emb[query_model][qi] @ gv.ensemble.T, labels[qi], labels[gi], ks=(1,))[1]
    return out


def _pick_quality(curves: dict) -> str:
    """The quality score with the best mean Recall@1 over the rejection rates."""
    return max(QUALITY_SCORES, key=lambda k: float(np.mean(curves[k])))


def _calibrate(bundle: Bundle, emb: dict, prob: np.ndarray, labels: np.ndarray, rate: float, far: float,
               quality: str) -> tuple[Calibration, dict]:
    """Thresholds (and, for ``quality="auto"``, the quality score) measured on the validation identities."""
    gi, qi = first_image_protocol(labels)
    gal = {m: v[gi] for m, v in emb.items()}
    gv = bundle.gallery_vectors(gal, prob[gi])
    q_lab, g_lab = labels[qi], labels[gi]
    qv = emb[bundle.query_model][qi]
    thresholds = {}
    for view, vecs in [("ensemble", gv.ensemble)] + list(gv.views.items()):
        scores, same = M.verification_scores(qv @ vecs.T, q_lab, g_lab)
        thresholds[view] = float(M.threshold_at_far(scores, same, far))
    curves, _, _ = _quality_curves(bundle, emb, prob, labels)
    if quality == "auto":
        quality = _pick_quality(curves)
    # calibration sample for rank-combined scores: the validation gallery
    ref = QualityModel.fit("combined", gv.uncertainty, prob[gi])
    qm = QualityModel(quality, ref.uncertainty_reference, ref.doubt_reference)
    s = qm.score(gv.uncertainty, prob[gi])
    cal = Calibration(
        rejection_rate=rate,
        rejection_threshold=float(M.threshold_for_rate(s, rate)),
        quality=qm,
        open_set_far=far,
        similarity_thresholds=thresholds,
    )
    return cal, {"val_rejection_recall_at_1": curves, "chosen_quality": quality}


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
) -> dict:
    """k-fold cross-validation of the query-member decision and the quality score.

    The identities of ``pool`` (train + validation, never the held-out ones) are split
    into ``folds`` identity-disjoint folds. Per fold, each gallery model's transformer is
    trained on the other folds for ``epochs[m]`` epochs (the count early stopping
    chose), and the fold is measured like the validation split: ensemble Recall@1 with
    and without the query model as a member, and Recall@1 of each of those two ensembles
    after rejection by each quality score (and at random). Figures are averaged over
    folds, weighted by their queries; every non-held-out identity is measured once.

    Returns:
        ``{"folds", "queries", "query_member_recall_at_1": {"without", "with"},
        "rejection_recall_at_1": {"without"|"with": {kind: [R@1 per rate]}}, "rates"}``.
    """
    ids = np.unique(labels[pool])
    rng = np.random.default_rng(seed)
    parts = np.array_split(rng.permutation(ids), folds)
    member = {False: [], True: []}
    curves: dict[bool, dict[str, list]] = {False: {}, True: {}}
    weights = []
    q = emb[query_model]
    for k, part in enumerate(parts):
        ev = pool & np.isin(labels, part)
        fit = pool & ~ev
        if len(first_image_protocol(labels[ev])[1]) == 0:
            continue
        nets = {}
        for m in gallery_models:
            nets[m] = train_transformer(
                emb[m][fit], q[fit], labels[fit], None, None, None,
                arch=TransformerConfig(emb[m].shape[1], q.shape[1], hidden=hidden),
                config=config, fixed_epochs=epochs[m],
            ).module
        ev_emb = {m: v[ev] for m, v in emb.items()}
        for b in (False, True):
            # one pass per ensemble: its Recall@1 decides the member, its curves the quality score
            c, n, r1 = _quality_curves(Bundle(query_model, tuple(gallery_models), nets, b), ev_emb, prob[ev],
                                       labels[ev])
            member[b].append(r1)
            for kind, values in c.items():
                curves[b].setdefault(kind, []).append(values)
        weights.append(n)
        logger.info("cross-validation fold %d/%d: %d queries; R@1 without/with query member %.4f/%.4f",
                    k + 1, folds, n, member[False][-1], member[True][-1])
    if not weights:
        raise DatasetError("cross-validation: no fold has an identity with two images")
    w = np.asarray(weights, float) / sum(weights)
    return {
        "folds": folds,
        "queries": int(sum(weights)),
        "query_member_recall_at_1": {"without": float(w @ member[False]), "with": float(w @ member[True])},
        "rejection_recall_at_1": {
            name: {k: [float(x) for x in w @ np.asarray(v)] for k, v in curves[b].items()}
            for name, b in (("without", False), ("with", True))
        },
        "rates": list(QUALITY_RATES),
    }


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

    Returns:
        The saved bundle.
    """
    if isinstance(cv_folds, bool) or not isinstance(cv_folds, int) or cv_folds < 0:
        raise DatasetError(f"cv_folds must be 0 (validation split), 1 (the same) or a fold count >= 2; got {cv_folds!r}")
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
    transformers, early, linear, history, adapters = {}, {}, {}, {}, {}
    for m in gallery_models:
        logger.info("training transformer %s -> %s on %d images", m, query_model, tr.sum())
        transformers[m], early[m], history[m] = fit_network(emb[m], q, labels, tr, va, hidden=hidden, config=train_config,
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
    cv = None
    if cv_folds > 1 and (query_member == "auto" or quality == "auto"):
        logger.info("choosing the query member and quality score by %d-fold cross-validation", cv_folds)
        cv = cross_validate_choices(
            emb, prob, labels, tr | va, query_model=query_model, gallery_models=gallery_models,
            epochs={m: history[m]["best_epoch"] for m in gallery_models}, hidden=hidden, config=train_config,
            folds=cv_folds, seed=split.seed,
        )
    member_figures = cv["query_member_recall_at_1"] if cv else {"without": choice[False], "with": choice[True]}
    member = member_figures["with"] > member_figures["without"] if query_member == "auto" else query_member == "yes"
    if quality == "auto" and cv:
        # chosen for the ensemble the bundle will serve (with or without the query member)
        quality = _pick_quality(cv["rejection_recall_at_1"]["with" if member else "without"])
    cal, cal_info = _calibrate(Bundle(query_model, tuple(gallery_models), early, member), val_emb, prob[va],
                               labels[va], rejection_rate, open_set_far, quality)
    bundle = Bundle(query_model, tuple(gallery_models), transformers, member, calibration=cal,
                    linear_maps=linear, query_adapters=adapters)
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
