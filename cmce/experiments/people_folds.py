"""Out-of-fold served vectors of a bundle's training identities, for calibrating the grouping.

A bundle's transformers were trained on its training identities, so their served vectors of
those identities are tighter than those of new faces: a grouping threshold read on them is too
high for a real library. The bundles chose their fusion and quality score by k-fold
cross-validation (``cross_validation.cross_validate_choices``); :func:`fold_bundles` trains the
same folds again (the same identities per fold, the same epochs, hidden size, training settings
and degraded copies as ``train_bundle``) and serves each fold's identities with the networks
trained on the other folds, the bundle's own fusion and quality score around them. Retraining
costs about 8 s a fold for a two-model bundle on 2 CPU cores (the photos' embeddings and
degraded copies come from the embedding cache).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cmce.errors import DatasetError
from cmce.experiments.cross_validation import FoldData, _train_folds
from cmce.experiments.splits import SplitConfig
from cmce.experiments.train import _degraded_sets, _embed_photos
from cmce.method.bundle_model import Bundle
from cmce.models.embed import EmbeddingCache
from cmce.models.transform import TrainConfig

logger = logging.getLogger(__name__)

__all__ = ["FoldBundles", "fold_bundles"]


@dataclass(frozen=True)
class FoldBundles:
    """One bundle per cross-validation fold, each serving only identities it was not trained on.

    Attributes:
        bundles: per fold, the bundle with that fold's networks (trained on the other folds).
        fold_of: identity -> its fold.
    """

    bundles: tuple[Bundle, ...]
    fold_of: Mapping[str, int]

    def spaces(self, embeddings: Mapping[str, np.ndarray], prob: np.ndarray, labels: np.ndarray) -> dict:
        """Out-of-fold ``ensemble`` (unit rows) and ``quality`` of faces labelled ``labels``.

        Raises:
            DatasetError: a face's identity is in no fold (it is not a training identity).
        """
        labels = np.asarray(labels)
        folds = np.array([self.fold_of.get(str(x), -1) for x in labels])
        if (folds < 0).any():
            raise DatasetError(f"{int((folds < 0).sum())} faces are of identities outside the bundle's folds")
        ens, qual = None, np.zeros(len(labels), np.float64)
        for k, fb in enumerate(self.bundles):
            rows = np.flatnonzero(folds == k)
            if not len(rows):
                continue
            gv = fb.gallery_vectors({m: v[rows] for m, v in embeddings.items()}, np.asarray(prob)[rows])
            if ens is None:
                ens = np.zeros((len(labels), gv.ensemble.shape[1]), np.float32)
            ens[rows] = gv.ensemble
            qual[rows] = gv.quality
        assert ens is not None
        ens /= np.maximum(np.linalg.norm(ens, axis=1, keepdims=True), 1e-12)
        return {"ensemble": ens, "quality": qual}


def fold_bundles(data_dir, bundle: Bundle, *, cache: EmbeddingCache | None, progress: bool = False) -> FoldBundles:
    """Retrain ``bundle``'s cross-validation folds (see the module's docstring).

    Raises:
        DatasetError: the bundle records no cross-validation (nothing says how its folds were made).
    """
    tr = bundle.info.get("training", {})
    folds = int(tr.get("cross_validation", {}).get("folds", 0))
    if folds < 2:
        raise DatasetError("the bundle was not trained with cross-validation folds (info.training.cross_validation)")
    split = SplitConfig(**tr["split"])
    photos = _embed_photos(data_dir, bundle.query_model, bundle.gallery_models, split, "auto", cache, progress)
    mixed_share = float(tr.get("mixed_quality_validation", {}).get("share", 0.0))
    sets = _degraded_sets(photos, split.seed, folds, mixed_share, (), (), None, bool(tr.get("degrade_augment")),
                          None, cache, progress)
    emb, prob, labels = photos.embedded.embeddings, photos.embedded.detection_probability, photos.labels
    pool = photos.train | photos.val
    data = FoldData(emb, prob, labels, pool, bundle.query_model, tuple(bundle.gallery_models), sets.degraded)
    ids = np.unique(labels[pool])
    parts = np.array_split(np.random.default_rng(split.seed).permutation(ids), folds)  # as cross_validate_choices
    epochs = {m: int(tr["transformers"][m]["best_epoch"]) for m in bundle.gallery_models}
    nets = _train_folds(data, parts, epochs, int(tr["hidden"]), TrainConfig(**tr["train_config"]), sets.augment_sets)
    bundles, fold_of = [], {}
    for k, (ev, networks) in enumerate(zip(nets.evs, nets.nets)):
        bundles.append(Bundle(bundle.query_model, tuple(bundle.gallery_models), networks, bundle.query_member,
                              calibration=bundle.calibration, fusion=bundle.fusion))
        for ident in np.unique(labels[ev]).tolist():
            fold_of[str(ident)] = k
    logger.info("%d fold bundles retrained for %d identities", len(bundles), len(fold_of))
    return FoldBundles(tuple(bundles), fold_of)
