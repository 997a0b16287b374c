"""Folder-per-identity datasets, identity-disjoint splits and LFW pair lists."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmce.errors import DatasetError
from cmce.io.images import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

__all__ = [
    "LabelledImages",
    "list_labelled_images",
    "label_from_filename",
    "split_identities",
    "read_lfw_pairs",
    "sample_pairs",
]

_NUMBERED = re.compile(r"^(?P<name>.+?)[_\- ](?P<num>\d{1,6})$")


def label_from_filename(path: str | os.PathLike) -> str | None:
    """Identity encoded in a ``Name_0001.jpg``-style file name, or None.

    >>> label_from_filename("George_W_Bush_0003.jpg")
    'George_W_Bush'
    >>> label_from_filename("holiday.jpg") is None
    True
    """
    m = _NUMBERED.match(Path(path).stem)
    return m.group("name") if m else None


@dataclass(frozen=True)
class LabelledImages:
    """Image files with an identity label each, sorted by (label, file name).

    Attributes:
        paths: absolute paths.
        labels: identity label per path.
        root: the folder they were listed from.
    """

    paths: tuple[Path, ...]
    labels: tuple[str, ...]
    root: Path

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def identities(self) -> list[str]:
        return sorted(set(self.labels))

    def subset(self, keep: np.ndarray | list[int]) -> "LabelledImages":
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, int)
        return LabelledImages(
            tuple(self.paths[i] for i in idx), tuple(self.labels[i] for i in idx), self.root
        )


def list_labelled_images(root: str | os.PathLike, *, recursive: bool = True) -> LabelledImages:
    """List a folder-per-identity dataset (``root/<identity>/<image>``).

    Images directly in ``root`` take their label from a ``Name_0001.jpg``-style file
    name, else their file stem. Deeper folders (``root/a/b/x.jpg``) take the first
    folder below ``root`` as label when ``recursive``.

    Raises:
        DatasetError: root missing or holding no image.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; expected <root>/<identity>/<image>")
    pairs: list[tuple[str, Path]] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        rel_dir = Path(dirpath).relative_to(root)
        if real in seen_dirs or any(part.startswith(".") for part in rel_dir.parts) or (
            not recursive and len(rel_dir.parts) > 1
        ):
            dirnames[:] = []  # symlink loop, hidden folder, or too deep
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for fname in sorted(filenames):
            p = Path(dirpath) / fname
            if fname.startswith(".") or p.suffix.lower() not in IMAGE_EXTENSIONS or not p.is_file():
                continue
            rel = p.relative_to(root)
            label = rel.parts[0] if len(rel.parts) > 1 else (label_from_filename(p) or p.stem)
            pairs.append((label, p))
    if not pairs:
        raise DatasetError(
            f"{root}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    pairs.sort(key=lambda t: (t[0], t[1].name))
    return LabelledImages(tuple(p for _, p in pairs), tuple(lab for lab, _ in pairs), root)


def split_identities(
    labels: list[str] | tuple[str, ...], val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Identity-disjoint split into train and validation.

    Identities are shuffled with ``seed``; the first ``val_fraction`` of the identities
    that have at least two images (the ones that can be evaluated) go to validation,
    together with a matching share of single-image identities as distractors.

    Returns:
        Two bool masks over ``labels``: (train, validation).
    """
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels_arr = np.asarray(labels)
    names, counts = np.unique(labels_arr, return_counts=True)
    rng = np.random.default_rng(seed)
    val: set[str] = set()
    for group in (names[counts >= 2], names[counts < 2]):
        group = group.copy()
        rng.shuffle(group)
        val.update(group[: int(round(len(group) * val_fraction))].tolist())
    is_val = np.array([lab in val for lab in labels_arr], dtype=bool)
    return ~is_val, is_val


def read_lfw_pairs(path: str | os.PathLike, root: str | os.PathLike) -> list[tuple[Path, Path, bool]]:
    """Read an LFW ``pairs*.txt`` file into (image_a, image_b, same_person) triples.

    Format: first line the number of pairs per class (or folds and count); then
    ``name i j`` for same pairs and ``name1 i name2 j`` for different pairs.
    """
    root = Path(root)
    out: list[tuple[Path, Path, bool]] = []
    lines = Path(path).read_text().splitlines()[1:]
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            a, b, same = (parts[0], int(parts[1])), (parts[0], int(parts[2])), True
        elif len(parts) == 4:
            a, b, same = (parts[0], int(parts[1])), (parts[2], int(parts[3])), False
        else:
            continue
        out.append(tuple(root / n / f"{n}_{i:04d}.jpg" for n, i in (a, b)) + (same,))  # type: ignore[arg-type]
    if not out:
        raise DatasetError(f"{path}: no pairs found")
    return out


def sample_pairs(
    pairs: list[tuple[Path, Path, bool]], per_class: int, seed: int = 0
) -> list[tuple[Path, Path, bool]]:
    """A fixed random subset: ``per_class`` same and ``per_class`` different pairs."""
    rng = np.random.default_rng(seed)
    same = [p for p in pairs if p[2]]
    diff = [p for p in pairs if not p[2]]
    if len(same) < per_class or len(diff) < per_class:
        raise DatasetError(f"asked for {per_class} pairs per class; have {len(same)} same, {len(diff)} different")
    return [same[i] for i in sorted(rng.choice(len(same), per_class, replace=False))] + [
        diff[i] for i in sorted(rng.choice(len(diff), per_class, replace=False))
    ]
