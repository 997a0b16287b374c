"""Group a gallery's faces into people: ``group_faces`` and its immutable ``PeopleGrouping``.

The similarity is the cosine of the face vectors, or with ``query_weight`` w > 0 the weighted
mean ``(1 - w) cos(ensemble) + w cos(query model)`` of two cosines: the served ensemble vectors'
and the query model's own embeddings' (:func:`grouping_vectors`: both live in the query model's
space; a face without a query-model embedding uses its ensemble vector for both).

The steps (each in its own module):

1. the similarity graph: each face's ``k`` nearest faces from a search index, pairs at or
   above ``threshold`` kept (:func:`cmce.people.graph.knn_graph`); pairs that must be different
   people (a cannot-link, two faces of one photo, two names) are dropped from it;
2. a clustering of the graph (:func:`cmce.people.graph.cluster`);
3. doubt: each face's *neighbourhood agreement* is the share of its edge weight that goes to its
   own cluster (1 for a face with no edge); its *doubt* is the larger of ``1 - agreement`` and
   the percentile of its ``uncertainty`` in the gallery, and faces grouped with others come
   before faces alone (a face alone cannot be in a wrong person). Faces whose uncertainty passes
   ``doubt_above`` (the bundle's calibrated rejection cut) and the ``unsure_share`` most doubted
   faces go to the *unsure* set, are taken out of the graph, and the rest is clustered again;
4. the constraints are enforced (:func:`cmce.people.constraints.honour`): a must-link unit is one
   person, conflicting faces are different people. Constrained faces are never held out;
5. with ``detach_below`` set, a free face whose similarity to the normalised mean of its person's
   *other* faces is under ``detach_below`` leaves the person and stands alone
   (:func:`detach_outliers`): Chinese whispers can carry a face into a person through one or two
   edges while it is far from the person as a whole (on degraded photos, often another person's);
6. with ``attach_above`` set, a face left alone (not constrained) joins the person whose
   normalised mean vector is most similar to it when that similarity is at least
   ``attach_above`` and beats the second most similar person's by ``attach_margin``, unless
   a constraint says it is not that person (:func:`attach_alone`); degraded photos' faces, whose
   similarity to each of their person's faces is under ``threshold``, are often close to its mean;
7. people get ids (largest first), the name their named faces carry, and a cohesion (the mean
   cosine of their faces to their normalised mean); people under ``min_faces`` faces are unsure
   too (reason ``"few faces"``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from cmce.errors import PeopleError
from cmce.people.constraints import Constraints, honour, pairs_array
from cmce.people.graph import CLUSTERINGS, cluster, knn_graph
from cmce.search.base import VectorSearch

logger = logging.getLogger(__name__)

__all__ = ["GroupingConfig", "PeopleGrouping", "Person", "UnsureFace", "UNSURE_REASONS", "attach_alone",
           "detach_outliers", "group_faces", "grouping_vectors"]

UNSURE_REASONS = ("uncertain", "split neighbourhood", "few faces")
"""Why a face is unsure: its uncertainty, a neighbourhood split between people, or a person too small."""

_CHUNK = 65_536
"""Rows a pass turns into float64 at a time."""


@dataclass(frozen=True)
class GroupingConfig:
    """How faces are grouped.

    Attributes:
        threshold: the lowest cosine similarity that links two faces (calibrated per bundle on
            its training identities: :mod:`cmce.people.calibration`).
        method: the clustering, one of :data:`cmce.people.graph.CLUSTERINGS`.
        k: neighbours looked up per face.
        unsure_share: the share of faces held out as unsure, the most doubted first (0 to 0.9).
        doubt_above: faces whose ``uncertainty`` is above this are unsure (None: no cut).
        min_faces: people with fewer faces are unsure (``"few faces"``); 1 keeps every person.
        index: the index built for the graph when none is given: ``auto``, ``exact`` or ``compact``.
        seed: the clustering's random seed.
        query_weight: the weight of the query model's own cosine in the similarity (0: the
            ensemble's alone; needs ``query_vectors`` in :func:`group_faces` when above 0).
        attach_above: a face left alone joins its most similar person (by the person's mean
            vector) at or above this similarity (None: no attach pass).
        attach_margin: ... and only when that person is at least this much more similar than the
            second most similar one.
        detach_below: a free face leaves its person when its similarity to the mean vector of the
            person's other faces is under this, before the attach pass (None: no detach pass).
    """

    threshold: float = 0.5
    method: str = "chinese_whispers"
    k: int = 30
    unsure_share: float = 0.0
    doubt_above: float | None = None
    min_faces: int = 1
    index: str = "auto"
    seed: int = 0
    query_weight: float = 0.0
    attach_above: float | None = None
    attach_margin: float = 0.1
    detach_below: float | None = None

    def __post_init__(self) -> None:
        if not -1.0 <= float(self.threshold) <= 1.0:
            raise PeopleError(f"threshold must be a cosine similarity in [-1, 1]; got {self.threshold!r}")
        if self.method not in CLUSTERINGS:
            raise PeopleError(f"method must be one of {', '.join(CLUSTERINGS)}; got {self.method!r}")
        if int(self.k) < 1:
            raise PeopleError(f"k must be >= 1; got {self.k!r}")
        if not 0.0 <= float(self.unsure_share) <= 0.9:
            raise PeopleError(f"unsure_share must be in [0, 0.9]; got {self.unsure_share!r}")
        if int(self.min_faces) < 1:
            raise PeopleError(f"min_faces must be >= 1; got {self.min_faces!r}")
        if self.index not in ("auto", "exact", "compact"):
            raise PeopleError(f"index must be 'auto', 'exact' or 'compact'; got {self.index!r}")
        if not 0.0 <= float(self.query_weight) <= 1.0:
            raise PeopleError(f"query_weight must be in [0, 1]; got {self.query_weight!r}")
        if self.attach_above is not None and not -1.0 <= float(self.attach_above) <= 1.0:
            raise PeopleError(f"attach_above must be a cosine similarity in [-1, 1] or None; got {self.attach_above!r}")
        if not 0.0 <= float(self.attach_margin) <= 2.0:
            raise PeopleError(f"attach_margin must be in [0, 2]; got {self.attach_margin!r}")
        if self.detach_below is not None and not -1.0 <= float(self.detach_below) <= 1.0:
            raise PeopleError(f"detach_below must be a cosine similarity in [-1, 1] or None; got {self.detach_below!r}")


@dataclass(frozen=True)
class Person:
    """One person found: ``id``, the positions of its faces (sorted), its name or None, its cohesion."""

    id: int
    members: tuple[int, ...]
    name: str | None
    cohesion: float

    def __post_init__(self) -> None:
        if not self.members:
            raise PeopleError(f"person {self.id} has no face")
        if not -1.0 <= self.cohesion <= 1.0 + 1e-6:
            raise PeopleError(f"cohesion must be a cosine in [-1, 1]; got {self.cohesion!r}")


@dataclass(frozen=True)
class UnsureFace:
    """A face not given to any person: its position and why (one of :data:`UNSURE_REASONS`)."""

    position: int
    reason: str

    def __post_init__(self) -> None:
        if self.reason not in UNSURE_REASONS:
            raise PeopleError(f"reason must be one of {UNSURE_REASONS}; got {self.reason!r}")


@dataclass(frozen=True)
class PeopleGrouping:
    """Faces grouped into people, and the faces held out as unsure.

    Every position in ``0..size-1`` is in exactly one person or in ``unsure`` (checked).
    """

    people: tuple[Person, ...]
    unsure: tuple[UnsureFace, ...]
    size: int
    config: GroupingConfig = field(default_factory=GroupingConfig)

    def __post_init__(self) -> None:
        seen = np.zeros(self.size, np.int64)
        for p in self.people:
            seen[list(p.members)] += 1
        seen[[u.position for u in self.unsure]] += 1
        if (seen != 1).any():
            raise PeopleError("every face must be in exactly one person or unsure")
        if sorted(p.id for p in self.people) != list(range(len(self.people))):
            raise PeopleError("people ids must be 0..P-1")

    @property
    def labels(self) -> np.ndarray:
        """(size,) the person id of each face, -1 for an unsure face."""
        out = np.full(self.size, -1, np.int64)
        for p in self.people:
            out[list(p.members)] = p.id
        return out

    @property
    def grouped(self) -> int:
        """Faces given to a person."""
        return self.size - len(self.unsure)

    def summary(self) -> str:
        """``"N people, M faces grouped, K unsure"``."""
        return f"{len(self.people)} people, {self.grouped} faces grouped, {len(self.unsure)} unsure"


def _check_vectors(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or not len(v):
        raise PeopleError(f"vectors must be a non-empty (N, D) array; got shape {v.shape}")
    if not np.isfinite(v).all():
        raise PeopleError("vectors must be finite")
    norms = np.linalg.norm(v, axis=1)
    if np.abs(norms - 1).max() > 1e-3:
        raise PeopleError("vectors must be L2-normalised rows (cosine similarity is their dot product)")
    return np.ascontiguousarray(v)


def grouping_vectors(vectors: np.ndarray, query_vectors: np.ndarray | None, query_weight: float) -> np.ndarray:
    """Unit rows whose dot products are ``(1 - w) cos(vectors) + w cos(query_vectors)`` (w = ``query_weight``).

    Rows of ``query_vectors`` that are all zero (no query-model embedding) take the row of
    ``vectors`` instead (both are in the query model's space). With w = 0, ``vectors`` itself.

    Example:
        >>> e = np.array([[1, 0], [0, 1]], np.float32); q = np.array([[1, 0], [1, 0]], np.float32)
        >>> j = grouping_vectors(e, q, 0.5); round(float(j[0] @ j[1]), 3)  # (0 + 1) / 2
        0.5
    """
    w = float(query_weight)
    v = _check_vectors(vectors)
    if w == 0.0:
        return v
    if query_vectors is None:
        raise PeopleError(f"query_weight {w} needs the query model's own embeddings (query_vectors)")
    q = np.asarray(query_vectors, np.float32)
    if q.shape != v.shape:
        raise PeopleError(f"query_vectors must have the shape of vectors {v.shape}; got {q.shape}")
    q = np.where((np.abs(q).sum(axis=1) == 0)[:, None], v, q)
    q = _check_vectors(q)
    return np.ascontiguousarray(np.hstack([np.sqrt(1.0 - w) * v, np.sqrt(w) * q]), dtype=np.float32)


def attach_alone(vectors: np.ndarray, labels: np.ndarray, cons: Constraints, *, above: float, margin: float,
                 kept: np.ndarray | None = None, index_kind: str = "auto") -> np.ndarray:
    """``labels`` with each free face that is alone given to its most similar person, when sure enough.

    A face alone (its label held by no other face among ``kept``) and not constrained joins the
    person (another label) whose normalised mean vector is most similar to it, when that
    similarity is at least ``above``, at least ``margin`` over the second most similar person's,
    and no face of that person conflicts with it (a cannot-link, one photo, another name). The
    people's means are those before the pass: an attached face does not pull others in.

    Example:
        Two faces of Ada, one of Bo, and a blurred face of Ada under the edge threshold::

            >>> v = np.array([[1, 0, 0], [0.99, 0.14, 0], [0, 0, 1], [0.75, 0.66, 0]], np.float32)
            >>> v /= np.linalg.norm(v, axis=1, keepdims=True)
            >>> attach_alone(v, np.array([0, 0, 1, 2]), Constraints(4), above=0.7, margin=0.1).tolist()
            [0, 0, 1, 0]
    """
    from cmce.people.graph import GRAPH_MIN_PROBES, GRAPH_PROBE_DIVISOR, search_index
    from cmce.search.compact import CompactIndex

    labels = np.asarray(labels, np.int64).copy()
    kept = np.ones(len(labels), bool) if kept is None else np.asarray(kept, bool)
    ids, inverse, counts = np.unique(labels[kept], return_inverse=True, return_counts=True)
    if len(ids) < 2:
        return labels
    kidx = np.flatnonzero(kept)
    alone = kidx[(counts[inverse] == 1) & ~cons.constrained[kidx]]
    if not len(alone):
        return labels
    # each person's sum of its faces in position order (as np.add.at would, 20 times faster)
    order = np.argsort(inverse, kind="stable")
    centres = np.add.reduceat(vectors[kidx[order]], np.r_[0, np.cumsum(counts)[:-1]], axis=0, dtype=np.float64)
    centres = (centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    index = search_index(centres, index_kind)
    extra = {}
    if isinstance(index, CompactIndex):  # as for the graph: a face's own person sits in its nearest lists
        extra = {"nprobe": max(GRAPH_MIN_PROBES, index.nlist // GRAPH_PROBE_DIVISOR), "rerank": 16}
    res = index.search(np.ascontiguousarray(vectors[alone]), k=min(3, len(ids)), **extra)
    pos, sc = res.positions, res.scores
    own = np.searchsorted(ids, labels[alone])
    units_in: dict[int, set[int]] = {}
    for p, lab in zip(kidx.tolist(), labels[kidx].tolist()):
        units_in.setdefault(lab, set()).add(int(cons.unit[p]))
    for i, face in enumerate(alone.tolist()):
        cand = [(float(s), int(c)) for s, c in zip(sc[i], pos[i]) if c >= 0 and c != own[i]]
        if not cand or cand[0][0] < above:
            continue
        if len(cand) > 1 and cand[0][0] - cand[1][0] < margin:
            continue
        target = int(ids[cand[0][1]])
        u = int(cons.unit[face])
        if any(cons.conflict(u, w) for w in units_in.get(target, ())):
            continue
        labels[face] = target
    return labels


def detach_outliers(vectors: np.ndarray, labels: np.ndarray, cons: Constraints, *, below: float,
                    kept: np.ndarray | None = None) -> np.ndarray:
    """``labels`` with each free face far from the rest of its person made a person of its own.

    A face of a person of two or more faces (among ``kept``), not constrained, whose cosine to the
    normalised mean of the person's *other* faces is under ``below`` gets a new label of its own.
    The means are those before the pass. A face alone cannot break a constraint, so none is broken.

    Example:
        Three faces of Ada, and a face chained into her person though far from her mean::

            >>> v = np.array([[1, 0, 0], [0.98, 0.2, 0], [0.98, -0.2, 0], [0.3, 0, 0.95]], np.float32)
            >>> v /= np.linalg.norm(v, axis=1, keepdims=True)
            >>> detach_outliers(v, np.array([0, 0, 0, 0]), Constraints(4), below=0.5).tolist()
            [0, 0, 0, 1]
    """
    labels = np.asarray(labels, np.int64).copy()
    kept = np.ones(len(labels), bool) if kept is None else np.asarray(kept, bool)
    kidx = np.flatnonzero(kept)
    if not len(kidx):
        return labels
    ids, inverse, counts = np.unique(labels[kidx], return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    sums = np.add.reduceat(vectors[kidx[order]], np.r_[0, np.cumsum(counts)[:-1]], axis=0, dtype=np.float64)
    cand = np.flatnonzero((counts[inverse] > 1) & ~cons.constrained[kidx])
    if not len(cand):
        return labels
    sim = np.empty(len(cand))
    for start in range(0, len(cand), _CHUNK):  # float64 rows a chunk at a time (1M faces: not 2 GiB at once)
        part = cand[start:start + _CHUNK]
        face = vectors[kidx[part]].astype(np.float64)
        rest = sums[inverse[part]] - face
        rest /= np.maximum(np.linalg.norm(rest, axis=1, keepdims=True), 1e-12)
        sim[start:start + _CHUNK] = np.einsum("ij,ij->i", rest, face)
    out = kidx[cand[sim < below]]
    labels[out] = int(labels.max(initial=-1)) + 1 + np.arange(len(out))
    return labels


def _agreement(graph: sp.csr_matrix, labels: np.ndarray) -> np.ndarray:
    """Share of each face's edge weight that goes to its own cluster (1 for a face with no edge)."""
    g = graph.tocoo()
    same = labels[g.row] == labels[g.col]
    total = np.bincount(g.row, weights=g.data, minlength=graph.shape[0])
    own = np.bincount(g.row[same], weights=g.data[same], minlength=graph.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, own / np.where(total > 0, total, 1), 1.0)


def _percentile(x: np.ndarray) -> np.ndarray:
    return (np.argsort(np.argsort(x, kind="stable"), kind="stable") + 1) / len(x)


def _without(graph: sp.csr_matrix, pairs: np.ndarray) -> sp.csr_matrix:
    if not len(pairs):
        return graph
    n = graph.shape[0]
    mask = sp.coo_matrix((np.ones(2 * len(pairs)), (np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]])),
                         shape=(n, n)).tocsr()
    g = graph - graph.multiply(mask > 0)
    g.eliminate_zeros()
    return g.tocsr()


def _cluster_kept(graph: sp.csr_matrix, vectors: np.ndarray, keep: np.ndarray, cfg: GroupingConfig) -> np.ndarray:
    labels = np.full(len(keep), -1, np.int64)
    idx = np.flatnonzero(keep)
    sub = graph[idx][:, idx].tocsr()
    labels[idx] = cluster(cfg.method, sub, vectors=vectors[idx], threshold=cfg.threshold, seed=cfg.seed)
    return labels


def group_faces(
    vectors: np.ndarray,
    *,
    query_vectors: np.ndarray | None = None,
    uncertainty: np.ndarray | None = None,
    photo_ids: Sequence | None = None,
    must_link: Iterable[Sequence[int]] | None = None,
    cannot_link: Iterable[Sequence[int]] | None = None,
    known_labels: Mapping[int, str] | None = None,
    config: GroupingConfig = GroupingConfig(),
    index: VectorSearch | None = None,
) -> PeopleGrouping:
    """Group faces into people (the steps are in the module's docstring).

    Args:
        vectors: (N, D) L2-normalised face vectors (the gallery's served ensemble vectors).
        query_vectors: (N, D) the query model's own embeddings of the faces (needed when
            ``config.query_weight`` > 0; all-zero rows: none, the ensemble row stands in).
        uncertainty: (N,) doubt per face, higher = more doubtful (the bundle's quality score), or None.
        photo_ids: (N,) the photo each face comes from; faces of one photo are different people.
        must_link: pairs of positions that are one person (always honoured).
        cannot_link: pairs of positions that are different people (always honoured).
        known_labels: position -> name of faces already named: one name is one person, two
            names two people; a person holding named faces carries their name, and new faces
            join a named person when the graph puts them with it and they are not unsure.
        config: the settings.
        index: the gallery's own search index over exactly ``vectors`` (None: one is built; not used
            with ``query_weight`` > 0, whose similarity it does not hold).

    Raises:
        PeopleError: bad vectors, settings or positions, or constraints that contradict each other.
    """
    v = grouping_vectors(vectors, query_vectors, config.query_weight)
    if config.query_weight > 0:
        index = None  # the gallery's own index is over the ensemble vectors, not the grouping's
    n = len(v)
    must_link, cannot_link = pairs_array(must_link, n, "must_link"), pairs_array(cannot_link, n, "cannot_link")
    cons = Constraints(n, must_link=must_link, cannot_link=cannot_link, photo_ids=photo_ids, names=known_labels)
    unc = None
    if uncertainty is not None:
        unc = np.asarray(uncertainty, np.float64)
        if unc.shape != (n,) or not np.isfinite(unc).all():
            raise PeopleError(f"uncertainty must be (N,) = ({n},) finite numbers; got shape {unc.shape}")
    graph = _without(knn_graph(v, k=config.k, threshold=config.threshold, index=index, index_kind=config.index),
                     cons.cannot)
    free = ~cons.constrained
    reason = np.full(n, "", dtype=object)
    if unc is not None and config.doubt_above is not None:
        reason[(unc > config.doubt_above) & free] = "uncertain"
    labels = np.full(n, -1, np.int64)
    # the whole graph's clustering is needed for the doubt share, or when no face is cut as uncertain;
    # otherwise the faces kept are clustered below and it would be thrown away (the same result)
    if config.unsure_share > 0 or not (reason != "").any():
        labels = honour(cluster(config.method, graph, vectors=v, threshold=config.threshold, seed=config.seed),
                        graph, cons)
        if config.detach_below is not None:
            labels = detach_outliers(v, labels, cons, below=config.detach_below)
        if config.attach_above is not None:
            labels = attach_alone(v, labels, cons, above=config.attach_above, margin=config.attach_margin,
                                  index_kind=config.index)
    if config.unsure_share > 0:
        split = 1.0 - _agreement(graph, labels)
        pct = _percentile(unc) if unc is not None else np.zeros(n)
        doubt = np.maximum(split, pct)
        # a face alone cannot be in a wrong person: faces grouped with others are doubted first
        alone = np.bincount(labels, minlength=int(labels.max()) + 1)[labels] == 1
        doubt[alone] -= 2.0
        doubt[~free] = -np.inf
        doubt[reason != ""] = -np.inf
        take = int(round(config.unsure_share * n)) - int(np.count_nonzero(reason != ""))
        if take > 0:
            chosen = np.argsort(-doubt, kind="stable")[:take]
            chosen = chosen[np.isfinite(doubt[chosen])]
            reason[chosen] = np.where(pct[chosen] >= split[chosen], "uncertain", "split neighbourhood")
    held = reason != ""
    if held.any():
        labels = _cluster_kept(graph, v, ~held, config)
        kept_cons = _restrict(cons, ~held, must_link, cannot_link, photo_ids, known_labels)
        labels[~held] = honour(labels[~held], graph[~held][:, ~held], kept_cons)
        if config.detach_below is not None:
            labels[~held] = detach_outliers(v[~held], labels[~held], kept_cons, below=config.detach_below)
        if config.attach_above is not None:
            labels[~held] = attach_alone(v[~held], labels[~held], kept_cons, above=config.attach_above,
                                         margin=config.attach_margin, index_kind=config.index)
    return _result(v, labels, reason, cons, config)


def _restrict(cons: Constraints, keep: np.ndarray, must_link, cannot_link, photo_ids, names) -> Constraints:
    """The constraints among the kept faces, renumbered (held-out faces are never constrained ones)."""
    new = -np.ones(cons.n, np.int64)
    new[keep] = np.arange(int(keep.sum()))

    def pairs(arr: np.ndarray) -> np.ndarray:
        return new[arr[keep[arr].all(axis=1)]] if len(arr) else arr

    ids = None if photo_ids is None else np.asarray(photo_ids)[keep]
    return Constraints(int(keep.sum()), must_link=pairs(must_link), cannot_link=pairs(cannot_link), photo_ids=ids,
                       names={int(new[p]): nm for p, nm in (names or {}).items() if keep[p]})


def _result(v: np.ndarray, labels: np.ndarray, reason: np.ndarray, cons: Constraints,
            config: GroupingConfig) -> PeopleGrouping:
    held = reason != ""
    groups: dict[int, list[int]] = {}
    for p in np.flatnonzero(~held).tolist():
        groups.setdefault(int(labels[p]), []).append(p)
    people_faces = sorted(groups.values(), key=lambda m: (-len(m), m[0]))
    unsure = [UnsureFace(int(p), str(reason[p])) for p in np.flatnonzero(held)]
    people = []
    for members in people_faces:
        if len(members) < config.min_faces and not cons.constrained[members].any():
            unsure += [UnsureFace(p, "few faces") for p in members]
            continue
        names = {cons.unit_name[int(u)] for u in set(cons.unit[members].tolist()) if int(u) in cons.unit_name}
        centre = v[members].mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        cohesion = float(np.clip((v[members] @ centre).mean(), -1.0, 1.0))
        people.append(Person(len(people), tuple(members), next(iter(names)) if names else None, cohesion))
    unsure.sort(key=lambda u: u.position)
    return PeopleGrouping(tuple(people), tuple(unsure), len(v), config)
