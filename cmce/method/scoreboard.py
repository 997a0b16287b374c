"""What the ensemble buys on a user's own labelled gallery: every column, leave-one-out.

Every labelled entry whose identity has at least one other entry becomes a query: its
query-model vector (what a new photo of that person would give) is searched, in each view,
against the vectors of all *other* entries that view can match. Only stored vectors are
used: nothing is embedded again. Per view ``v`` and query ``i``::

    top_i      = argmax_{j != i, j matchable in v} q_i . g_j^v
    hit_i      = label(top_i) == label_i                      (Recall@1: the paper's metric)
    unknown_i  = q_i . g_top^v < t_v                          (the view's similarity threshold)
    right_i    = hit_i and not unknown_i                      (the column named the right person)

``Recall@1`` is the share of ``hit``, the unknown rate the share of ``unknown``; a column
"got right what the ensemble missed" on the queries where its ``right`` is true and the
ensemble's is not (and the reverse), the same ✓/✗ a query's verdict shows. "Unknown" here
is the view's raw similarity threshold (a 0.1% false-accept rate), not the cohort
normalisation the app applies in galleries of more than 50 people.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cmce.errors import CmceError

__all__ = ["ScoreColumn", "Scoreboard", "gallery_scoreboard", "leave_one_out_scoreboard"]


@dataclass(frozen=True)
class ScoreColumn:
    """One column of the scoreboard.

    Attributes:
        view: ``"ensemble"``, a gallery model name, or ``"query"``.
        recall_at_1: share of queries whose top match is the right person.
        unknown_rate: share of queries whose top match is under the view's threshold.
        right_where_ensemble_missed: queries this column named right and the ensemble did not.
        missed_where_ensemble_right: queries the ensemble named right and this column did not.
    """

    view: str
    recall_at_1: float
    unknown_rate: float
    right_where_ensemble_missed: int
    missed_where_ensemble_right: int


@dataclass(frozen=True)
class Scoreboard:
    """Leave-one-out scores of every column of a labelled gallery.

    Attributes:
        queries: number of queries (labelled entries with another entry of their person).
        people: number of people those queries are of.
        columns: the ensemble first, then each gallery model, then the query model alone.
    """

    queries: int
    people: int
    columns: tuple[ScoreColumn, ...]

    def __post_init__(self) -> None:
        if self.queries < 0 or self.people < 0 or self.people > self.queries:
            raise CmceError(f"queries ({self.queries}) and people ({self.people}) must be >= 0, people <= queries")
        for c in self.columns:
            if not (0.0 <= c.recall_at_1 <= 1.0 and 0.0 <= c.unknown_rate <= 1.0):
                raise CmceError(f"column {c.view!r}: rates must be in [0, 1], got {c.recall_at_1}, {c.unknown_rate}")

    @property
    def usable(self) -> bool:
        """At least one query."""
        return self.queries > 0

    def column(self, view: str) -> ScoreColumn:
        """The column of ``view``.

        Raises:
            CmceError: no such column; the message lists the ones there are.
        """
        for c in self.columns:
            if c.view == view:
                return c
        raise CmceError(f"no column {view!r} in this scoreboard; it has {[c.view for c in self.columns]}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able data."""
        return {"queries": self.queries, "people": self.people,
                "columns": [{"view": c.view, "recall_at_1": round(c.recall_at_1, 4),
                             "unknown_rate": round(c.unknown_rate, 4),
                             "right_where_ensemble_missed": c.right_where_ensemble_missed,
                             "missed_where_ensemble_right": c.missed_where_ensemble_right} for c in self.columns]}


def leave_one_out_scoreboard(
    query_vectors: np.ndarray,
    view_vectors: Mapping[str, np.ndarray],
    labels: Sequence[str | None],
    thresholds: Mapping[str, float],
    *,
    available: Mapping[str, np.ndarray] | None = None,
    can_query: np.ndarray | None = None,
) -> Scoreboard:
    """Leave-one-out Recall@1, unknown rate and wins against the ensemble of every view.

    Args:
        query_vectors: (N, D) unit vectors of the entries as queries (query model).
        view_vectors: view name -> (N, D) unit vectors of the entries as matches in that
            view; must hold ``"ensemble"`` (the columns keep this order, ensemble first).
        labels: N identity labels, None for unlabelled entries (distractors, never queries).
        thresholds: view name -> similarity under which it answers Unknown (missing: -1).
        available: view name -> (N,) bool, the entries that view can match (default all).
        can_query: (N,) bool, entries that can be queries (default all; an entry without
            the query model's own embedding cannot).

    Returns:
        Scoreboard.

    Raises:
        CmceError: shapes that do not agree, or no ``"ensemble"`` view.

    Example:
        Entries 0, 1 are "a", 2, 3 are "b". The ensemble finds every pair (4 of 4); the
        view "m" sees entry 3 closest to entry 0, so query 3 goes to "a" (3 of 4) and
        query 0 still finds entry 1::

        >>> q = np.array([[1, 0], [0.9, 0.44], [0, 1], [0.44, 0.9]], np.float32)
        >>> m = np.array([[1, 0], [0.9, 0.44], [0, 1], [0.8, 0.6]], np.float32)
        >>> sb = leave_one_out_scoreboard(q, {"ensemble": q, "m": m}, ["a", "a", "b", "b"], {})
        >>> [(c.view, c.recall_at_1, c.missed_where_ensemble_right) for c in sb.columns]
        [('ensemble', 1.0, 0), ('m', 0.75, 1)]
    """
    q = np.asarray(query_vectors, np.float32)
    n = len(labels)
    if "ensemble" not in view_vectors:
        raise CmceError(f"view_vectors must hold 'ensemble'; it has {list(view_vectors)}")
    if q.ndim != 2 or q.shape[0] != n:
        raise CmceError(f"query_vectors must be (N, D) with N = {n} labels, got {q.shape}")
    views = ["ensemble"] + [v for v in view_vectors if v != "ensemble"]
    for v in views:
        if np.shape(view_vectors[v]) != q.shape:
            raise CmceError(f"view {v!r}: vectors must be {q.shape} like the queries, got {np.shape(view_vectors[v])}")
    codes = {lab: i for i, lab in enumerate(sorted({lab for lab in labels if lab is not None}))}
    lab = np.array([codes[x] if x is not None else -1 for x in labels], np.int64)
    can = np.ones(n, bool) if can_query is None else np.asarray(can_query, bool)
    per_label = np.bincount(lab[lab >= 0], minlength=max(len(codes), 1))  # no label at all: one empty bin
    is_query = (lab >= 0) & can & (per_label[np.maximum(lab, 0)] >= 2)
    rows = np.flatnonzero(is_query)
    if not len(rows):
        return Scoreboard(0, 0, tuple(ScoreColumn(v, 0.0, 0.0, 0, 0) for v in views))
    results = {}
    for v in views:
        sim = q[rows] @ np.asarray(view_vectors[v], np.float32).T  # (Q, N)
        sim[np.arange(len(rows)), rows] = -np.inf  # an entry never matches itself
        if available is not None and v in available:
            sim[:, ~np.asarray(available[v], bool)] = -np.inf
        top = np.argmax(sim, axis=1)
        best = sim[np.arange(len(rows)), top]
        hit = np.isfinite(best) & (lab[top] == lab[rows])
        unknown = ~np.isfinite(best) | (best < float(thresholds.get(v, -1.0)))
        results[v] = (hit, unknown, hit & ~unknown)
    ens_right = results["ensemble"][2]
    columns = tuple(ScoreColumn(v, float(hit.mean()), float(unknown.mean()), int((right & ~ens_right).sum()),
                                int((ens_right & ~right).sum())) for v, (hit, unknown, right) in results.items())
    return Scoreboard(len(rows), int(len(np.unique(lab[rows]))), columns)


def gallery_scoreboard(gallery) -> Scoreboard:
    """:func:`leave_one_out_scoreboard` over the live entries of a ``cmce.gallery.Gallery``.

    Queries use ``gallery.vectors.views["query"]`` (entries lacking the query model's own
    embedding are not queries); every view of the gallery is a column, with the bundle's
    calibrated similarity thresholds.
    """
    live = gallery.positions
    vec = gallery.vectors
    views = {v: (vec.ensemble if v == "ensemble" else vec.views[v])[live] for v in gallery.view_names}
    labels = [gallery.entries[i].label for i in live]
    available = {v: vec.available[v][live] for v in views if v in vec.available}
    return leave_one_out_scoreboard(vec.views["query"][live], views, labels,
                                    gallery.bundle.calibration.similarity_thresholds, available=available,
                                    can_query=vec.available["query"][live])
