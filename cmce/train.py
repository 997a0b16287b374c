"""Train a bundle on a folder-per-identity dataset: ``python -m cmce train``.

Steps: list the dataset; split identities into train / validation / held-out test
(disjoint, fixed seed); embed every image once with every backbone (cached); train
one transformer per gallery model on the train identities with early stopping on the
validation identities; pick by measurement on validation whether the query model's
own gallery embedding joins the ensemble and which quality score rejects best;
calibrate the rejection and open-set thresholds on validation; save the bundle.
The held-out identities are never seen; ``evaluate --heldout`` reports on them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

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

__all__ = ["SplitConfig", "dataset_splits", "train_bundle", "identity_fingerprint"]


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


def _calibrate(bundle: Bundle, emb: dict, prob: np.ndarray, labels: np.ndarray, rate: float, far: float,
               quality: str) -> tuple[Calibration, dict]:
    """Thresholds and quality-score choice measured on the validation identities."""
    gi, qi = first_image_protocol(labels)
    gal = {m: v[gi] for m, v in emb.items()}
    gv = bundle.gallery_vectors(gal, prob[gi])
    q_lab, g_lab = labels[qi], labels[gi]
    qv = emb[bundle.query_model][qi]
    thresholds = {}
    for view, vecs in [("ensemble", gv.ensemble)] + list(gv.views.items()):
        scores, same = M.verification_scores(qv @ vecs.T, q_lab, g_lab)
        thresholds[view] = float(M.threshold_at_far(scores, same, far))
    # The quality score is chosen on the gallery models' own ensemble (the paper's
    # setting): with the query model as a member too, validation errors are too few
    # (a handful of queries) to tell the scores apart.
    from .ensemble import fuse_members

    gallery_only = fuse_members(np.stack([gv.views[m] for m in bundle.gallery_models], axis=1))
    ens = qv @ gallery_only.T
    # calibration sample for rank-combined scores: the validation gallery
    ref = QualityModel.fit("combined", gv.uncertainty, prob[gi])
    curves = {}
    for kind in QUALITY_SCORES:
        qm = QualityModel(kind, ref.uncertainty_reference, ref.doubt_reference)
        s = qm.score(gv.uncertainty, prob[gi])
        curves[kind] = [
            M.recall_at_k(ens, q_lab, g_lab, ks=(1,), gallery_mask=M.gallery_rejection_mask(s, r))[1]
            for r in (0.05, 0.1, 0.2, 0.3)
        ]
    if quality == "auto":
        quality = max(curves, key=lambda k: float(np.mean(curves[k])))
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
) -> Bundle:
    """Train, calibrate and save a bundle. See the module docstring for the steps.

    Args:
        query_member: ``"auto"`` (decided on validation R@1), ``"yes"`` or ``"no"``.
        quality: ``"auto"`` or one of ``QUALITY_SCORES``.

    Returns:
        The saved bundle.
    """
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
    transformers, linear, history = {}, {}, {}
    for m in gallery_models:
        logger.info("training transformer %s -> %s on %d images", m, query_model, tr.sum())
        res = train_transformer(
            emb[m][tr], q[tr], labels[tr], emb[m][va], q[va], labels[va],
            arch=TransformerConfig(emb[m].shape[1], q.shape[1], hidden=hidden),
            config=train_config, progress=progress,
        )
        transformers[m] = res.module
        linear[m] = fit_linear_map(emb[m][tr], q[tr])
        history[m] = {"best_epoch": res.best_epoch, "val_recall_at_1": res.best_val_recall_at_1,
                      "epochs_run": len(res.history) - 1}
        logger.info("%s: best epoch %d, validation R@1 %.4f", m, res.best_epoch, res.best_val_recall_at_1)
    prob = embedded.detection_probability
    val_emb = {k: v[va] for k, v in emb.items()}
    choice = {}
    for member in (False, True):
        b = Bundle(query_model, tuple(gallery_models), transformers, member, linear_maps=linear)
        gi, qi = first_image_protocol(labels[va])
        gv = b.gallery_vectors({k: v[gi] for k, v in val_emb.items()}, prob[va][gi])
        choice[member] = M.recall_at_k(val_emb[query_model][qi] @ gv.ensemble.T, labels[va][qi], labels[va][gi], ks=(1,))[1]
    member = choice[True] > choice[False] if query_member == "auto" else query_member == "yes"
    bundle = Bundle(query_model, tuple(gallery_models), transformers, member, linear_maps=linear)
    cal, cal_info = _calibrate(bundle, val_emb, prob[va], labels[va], rejection_rate, open_set_far, quality)
    bundle.calibration = cal
    bundle.info = {
        "training": {
            "data_description": data_description or f"folder-per-identity dataset {Path(data_dir).name}",
            "images": int(tr.sum()),
            "identities": int(len(set(labels[tr]))),
            "validation_images": int(va.sum()),
            "validation_identities": int(len(set(labels[va]))),
            "heldout_identities": int(len(set(labels[splits["test"]]))),
            "split": asdict(split),
            "identity_fingerprint": identity_fingerprint(ds.labels),
            "identity_loss": train_config.identity_loss,
            "train_config": asdict(train_config),
            "hidden": hidden,
            "seed": train_config.seed,
            "no_face": int((~found).sum()),
            "transformers": history,
            "query_member_val_recall_at_1": {"without": choice[False], "with": choice[True]},
            **cal_info,
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
