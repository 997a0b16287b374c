"""The identity-disjoint train / validation / held-out split a bundle is trained on.

``train_bundle`` records the split in the bundle; ``heldout_subset`` recovers the
held-out identities from it, so ``evaluate --heldout`` measures faces never trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cmce.errors import DatasetError
from cmce.io.datasets import LabelledImages, split_identities
from cmce.method.bundle_model import Bundle
from cmce.models.embed import EmbeddedFiles

__all__ = ["SplitConfig", "dataset_splits", "embedded_subset", "heldout_subset", "identity_fingerprint"]


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
    """The rows of ``embedded`` where ``keep`` (a bool mask over its files) holds."""
    idx = np.flatnonzero(keep)
    return EmbeddedFiles(
        tuple(embedded.paths[i] for i in idx),
        tuple(embedded.faces[i] for i in idx),
        tuple(embedded.errors[i] for i in idx),
        {k: v[idx] for k, v in embedded.embeddings.items()},
    )
