"""Search of an in-memory gallery: every view's ranked matches and answer to one query vector.

``Gallery.search_vector`` holds the gallery's lock and hands its state to ``search_views``.
Answers are decided as for an archive (``answers.decide_answer``): every live entry is
searched, a rejected entry never appears among the matches and, when it is a view's best
match, blocks the answer ("Unknown"), doubtful entries are marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cmce.gallery.ingest import GalleryEntry
from cmce.gallery.results import Match, ViewResult
from cmce.method.answers import decide_answer
from cmce.method.bundle_model import Calibration, GalleryVectors
from cmce.method.unknown import gallery_doubt, unknown_norm
from cmce.search.index import VectorIndex

__all__ = ["search_views"]


def search_views(
    query: np.ndarray,
    *,
    entries: Sequence[GalleryEntry],
    vectors: GalleryVectors,
    indexes: Mapping[str, VectorIndex],
    live: np.ndarray,
    doubtful: np.ndarray,
    calibration: Calibration,
    views: Sequence[str],
    k: int = 5,
    rejected: np.ndarray | None = None,
    query_probability: float = 1.0,
    answer_rule: str | None = None,
    unknown_by: str | None = None,
) -> dict[str, ViewResult]:
    """Search ``views`` with one query-model vector (see ``Gallery.search_vector``).

    Args:
        query: (Dq,) unit vector from the query model.
        entries: the gallery's entries, by position (N).
        vectors: their fused vectors and scores.
        indexes: view name -> its index over the positions (removed entries removed).
        live: (N,) bool, entries not removed (all searched).
        doubtful: (N,) bool, entries marked doubtful (``Gallery.doubt``).
        calibration: the bundle's calibration (thresholds, answer rules, cohort norm).
        views: the views to search, in the order of the result.
        k, rejected, query_probability, answer_rule, unknown_by: see ``Gallery.search_vector``.

    Returns:
        view name -> ViewResult.
    """
    vec = vectors
    rejected = np.zeros(len(entries), bool) if rejected is None else np.asarray(rejected, bool)
    keep = ~rejected
    q = np.asarray(query, np.float32)[None, :]
    cal = calibration
    out = {}
    norm = unknown_norm(cal.cohort_norm, unknown_by)
    size = int(live.sum())  # every live entry is searched
    doubt = gallery_doubt(vec.quality[live]) if norm is not None else None
    fetch = max(k, 20, norm.hits_for(size) if norm is not None else 0)
    for view in views:
        index = indexes[view]
        hits = index.search(q, k=fetch)
        hit_pos = [int(p) for p in hits.positions[0] if p >= 0]
        hit_scores = [float(s) for s, p in zip(hits.scores[0], hits.positions[0]) if p >= 0]
        res = hits if not rejected[hit_pos].any() else index.search(q, k=k, mask=keep)
        matches = []
        for score, pos in zip(res.scores[0][:k], res.positions[0][:k]):
            if pos < 0:
                continue
            e = entries[pos]
            has = vec.entry_members(int(pos))
            ms = {m: float(vec.views[m][pos] @ q[0]) for m in has} if view == "ensemble" else {}
            lacks = tuple(m for m in vec.members if m not in has)
            matches.append(Match(int(pos), e.label, e.source, float(score), float(vec.uncertainty[pos]),
                                 float(vec.quality[pos]), ms, has, lacks, bool(doubtful[pos]), e.entry_id, e.uri))
        thr = float(cal.similarity_thresholds.get(view, -1.0))
        policy = None if answer_rule == "none" else cal.answer_policy(view, answer_rule)
        top = hit_pos[0] if hit_pos else None
        answer = decide_answer(
            hit_scores, [entries[p].label for p in hit_pos],
            [entries[p].label or f"\0{p}" for p in hit_pos], threshold=thr, policy=policy,
            query_probability=query_probability,
            entry_quality=float(vec.quality[top]) if top is not None else float("nan"),
            entry_disagreement=float(vec.uncertainty[top]) if top is not None else float("nan"),
            blocked=bool(top is not None and rejected[top]), doubtful=bool(top is not None and doubtful[top]),
            norm=norm, view=view, gallery_size=size, gallery_doubt=doubt)
        out[view] = ViewResult(view, tuple(matches), thr, answer.unknown, answer)
    return out
