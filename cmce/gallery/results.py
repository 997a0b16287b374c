"""What a gallery search answers: one immutable result type per idea, for every gallery.

An in-memory ``Gallery`` and an ``ArchiveGallery`` answer a query the same way: a
``ViewResult`` per view (column) holding its ranked ``Match`` es and its ``Answer``; a
photo query (``search_image``) returns a ``QueryResult`` with the faces found and the
views. An archive answers in the ``"ensemble"`` view only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cmce.faces.geometry import Face
from cmce.method.answers import Answer

__all__ = ["Match", "QueryResult", "ViewResult"]


@dataclass(frozen=True)
class Match:
    """One gallery entry returned for a query in one view.

    Attributes:
        position: the entry's row in its gallery.
        label: identity label (None: unlabelled).
        source: file name shown to users.
        score: cosine similarity to the query.
        uncertainty: the members' disagreement (NaN: fewer than two members).
        quality: the bundle's quality score (higher = less trustworthy).
        member_scores: for the ensemble view of an in-memory gallery, each member's
            similarity (empty elsewhere).
        members: the ensemble members this entry was fused from (``"query"``: the
            query model's own embedding); empty where not known (archives).
        lacks: the members it lacks (indexed before the bundle that serves it).
        doubtful: the entry's quality score is above the bundle's calibrated threshold
            (it is searched, and marked).
        entry_id: ``<content hash>:<face number>`` ("" where the entry has none).
        uri: where the photo can be read again (None: not kept).
    """

    position: int
    label: str | None
    source: str
    score: float
    uncertainty: float
    quality: float
    member_scores: Mapping[str, float] = field(default_factory=dict)
    members: tuple[str, ...] = ()
    lacks: tuple[str, ...] = ()
    doubtful: bool = False
    entry_id: str = ""
    uri: str | None = None


@dataclass(frozen=True)
class ViewResult:
    """The ranked matches of one view (column).

    Attributes:
        view: ``"ensemble"``, a gallery model name, or ``"query"``.
        matches: best first; rejected entries never appear.
        threshold: similarity below which the answer is "unknown".
        unknown: the view names nobody (``answer.kind`` is not ``match``).
        answer: what the view answers and why (``answers.Answer``): a named person, or
            "Unknown" because nothing reaches the threshold, the answer rule is unsure,
            or the best match is a rejected or doubtful photo (whose queries are never
            handed to the next person).
    """

    view: str
    matches: tuple[Match, ...]
    threshold: float
    unknown: bool
    answer: Answer | None = None


@dataclass(frozen=True)
class QueryResult:
    """Everything a photo query returns.

    Attributes:
        faces: the faces found in the photo, largest first.
        chosen: the index (in ``faces``) of the face searched.
        views: view name -> its result.
        far: the bundle's open-set false accept rate.
    """

    faces: tuple[Face, ...]
    chosen: int
    views: Mapping[str, ViewResult]
    far: float
