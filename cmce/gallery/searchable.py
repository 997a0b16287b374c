"""One way to search any gallery: the ``SearchableGallery`` interface and photo queries.

An in-memory ``Gallery`` and an ``ArchiveGallery`` are both searched through this
interface and answer with the same immutable results (``cmce.gallery.results``). A query
photo is read, detected and embedded by one function for both (``detect_query`` then
``search_photo``: the query model's one forward pass), so the app, the CLI and scripts
never redo those steps by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from cmce.errors import CmceError, NoFaceError
from cmce.faces.geometry import Face, too_small_image
from cmce.gallery.results import QueryResult, ViewResult
from cmce.io.images import load_image
from cmce.method.answers import DoubtMarks
from cmce.method.bundle_model import Bundle
from cmce.method.engine import FaceEngine

__all__ = ["QueryPhoto", "SearchableGallery", "detect_query", "search_photo"]

ImageInput = np.ndarray | bytes | str | os.PathLike


@runtime_checkable
class SearchableGallery(Protocol):
    """What every gallery answers, in memory or archive.

    ``view_names`` are the views a gallery answers in (an archive: ``("ensemble",)``).
    The ``search_*`` methods take the same options everywhere: ``k`` matches per view,
    ``rejected`` an (N,) bool mask of entries that never match (a rejected best match
    makes the answer "Unknown", never the next person), ``answer_rule`` one of
    ``answer_rules.ANSWER_RULES``, ``"none"`` or None (the bundle's), ``unknown_by`` one of
    ``unknown.UNKNOWN_BY``.
    """

    @property
    def bundle(self) -> Bundle: ...

    @property
    def view_names(self) -> tuple[str, ...]: ...

    def __len__(self) -> int: ...

    def doubt(self) -> DoubtMarks: ...

    def unknown_note(self, unknown_by: str | None = None) -> str: ...

    def rejected(self, *, rate: float | None = None, threshold: float | None = None) -> np.ndarray: ...

    def search_vector(self, query: np.ndarray, *, k: int = 5, rejected: np.ndarray | None = None,
                      query_probability: float = 1.0, answer_rule: str | None = None,
                      unknown_by: str | None = None) -> dict[str, ViewResult]:
        """Every view's answer to one (Dq,) query-model vector: view name -> result."""
        ...

    def search_vectors(self, queries: np.ndarray, *, view: str = "ensemble", k: int = 5,
                       rejected: np.ndarray | None = None, query_probability: np.ndarray | None = None,
                       answer_rule: str | None = None, unknown_by: str | None = None) -> list[ViewResult]:
        """One view's answer to each of (Q, Dq) query-model vectors (``query_probability``: (Q,))."""
        ...

    def search_image(self, image: ImageInput, *, face_index: int | None = None, k: int = 5,
                     rejected: np.ndarray | None = None, name: str = "query", answer_rule: str | None = None,
                     unknown_by: str | None = None) -> QueryResult:
        """Detect the faces of a photo and search with one (``search_photo``)."""
        ...


@dataclass(frozen=True)
class QueryPhoto:
    """A query photo read and detected, ready to be embedded.

    Attributes:
        name: shown in messages.
        image: (H, W, 3) uint8 RGB.
        faces: every face found, largest first.
    """

    name: str
    image: np.ndarray = field(repr=False)
    faces: tuple[Face, ...]


def detect_query(engine: FaceEngine, image: ImageInput, name: str = "query") -> QueryPhoto:
    """Read a query photo (anything ``load_image`` reads, or an (H, W, 3) uint8 array) and detect its faces.

    Raises:
        ImageError: unreadable photo.
    """
    is_rgb = isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8 and image.shape[2] == 3
    img = image if is_rgb else load_image(image, name=name)
    faces = sorted(engine.detect([img], [name])[0], key=lambda f: -f.area)
    return QueryPhoto(name, img, tuple(faces))


def search_photo(gallery: SearchableGallery, engine: FaceEngine, photo: QueryPhoto, *,
                 face_index: int | None = None, k: int = 5, rejected: np.ndarray | None = None,
                 answer_rule: str | None = None, unknown_by: str | None = None) -> QueryResult:
    """Embed one face of a detected query photo with the query model and search every view.

    Args:
        gallery: any gallery.
        engine: the models (its query model embeds the face).
        photo: from ``detect_query``.
        face_index: which face (in ``photo.faces`` order, largest first); default the largest.
        k, rejected, answer_rule, unknown_by: see ``SearchableGallery``.

    Raises:
        NoFaceError: no face in the photo. CmceError: ``face_index`` out of range.
        GalleryError: empty gallery.
    """
    faces, name = photo.faces, photo.name
    if not faces:
        why = too_small_image(photo.image.shape)
        raise NoFaceError(f"{name}: no face found in the query photo" + (f" ({why})" if why else ""))
    i = 0 if face_index is None else face_index
    if not 0 <= i < len(faces):
        raise CmceError(f"{name}: face {i} asked for, but the photo has {len(faces)} (0..{len(faces) - 1})")
    q = engine.embed_query_face(photo.image, faces[i])
    views = gallery.search_vector(q, k=k, rejected=rejected, query_probability=faces[i].probability,
                                  answer_rule=answer_rule, unknown_by=unknown_by)
    return QueryResult(faces, i, views, gallery.bundle.calibration.open_set_far)
