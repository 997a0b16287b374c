"""What the ensemble buys on a user's own labelled gallery: every column, leave-one-out.

Every labelled entry whose identity has at least one other entry becomes a query: its
query-model vector (what a new photo of that person would give) is searched, in each view,
against the vectors of all *other* entries that view can match. Only stored vectors are
used: nothing is embedded again. Per view ``v`` and query ``i``::

    top_i      = argmax_{j != i, j matchable in v} q_i . g_j^v
    hit_i      = label(top_i) == label_i                      (Recall@1: the paper's metric)
    unknown_i  = the search's "Unknown" on those hits (see below)
    right_i    = hit_i and not unknown_i                      (the column named the right person)

``Recall@1`` is the share of ``hit``, the unknown rate the share of ``unknown``; a column
"got right what the ensemble missed" on the queries where its ``right`` is true and the
ensemble's is not (and the reverse), the same ✓/✗ a query's verdict shows.

"Unknown" is decided as a search of the gallery decides it (``SearchRule``): each query's
best hits among the other entries go through ``cmce.method.answers.decide_answer`` with the
bundle's cohort normalisation (in galleries of more than ``cohort`` people, with the
coverage guard of the gallery's own doubt), its answer rule, the query face's detector
probability and the best hit's quality: what a search of the gallery without that entry
answers (``gallery_scoreboard``). Without a rule, the view's raw similarity threshold
(``q_i . g_top^v < t_v``) decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cmce.errors import CmceError, one_named
from cmce.method.answer_rules import AnswerPolicy, policy_features
from cmce.method.unknown import CohortNorm, unknown_norm

__all__ = ["ScoreColumn", "Scoreboard", "SearchRule", "gallery_scoreboard", "leave_one_out_scoreboard"]

MIN_HITS = 20  # hits a search lists at least (``cmce.gallery.view_search``): the answer rule's margin reads them


@dataclass(frozen=True)
class SearchRule:
    """How a search of the gallery says "Unknown", for the scoreboard to say it the same way.

    Attributes:
        norm: the cohort-normalised threshold the search applies (``unknown.unknown_norm``; None: raw only).
        policies: view name -> its answer rule (None or missing: none).
        query_probability: (N,) each entry's detector probability, as a query face's.
        quality: (N,) each entry's quality score (the answer rule's input; the gallery's doubt).
        disagreement: (N,) each entry's members' disagreement (NaN: not measurable).
        doubtful: (N,) bool, entries marked doubtful.
    """

    norm: CohortNorm | None
    policies: Mapping[str, AnswerPolicy | None]
    query_probability: np.ndarray
    quality: np.ndarray
    disagreement: np.ndarray
    doubtful: np.ndarray

    def unknown(self, view: str, rows: np.ndarray, hits: np.ndarray, scores: np.ndarray, keys: np.ndarray,
                threshold: float) -> np.ndarray:
        """(Q,) bool: whether a search of the other entries answers "Unknown" to each query:
        ``cmce.method.answers.decide_answer``'s rule, for every query at once.

        Args:
            rows: (Q,) the queries' positions (each left out of its own search).
            hits: (Q, F) each query's best hits' positions, best first (-1 after the last one).
            scores: (Q, F) their similarities.
            keys: (N,) int, each entry's person (its label's code; one of its own when unlabelled).
            threshold: the view's similarity threshold.
        """
        listed = hits >= 0
        s1 = np.where(listed[:, 0], scores[:, 0], np.nan)
        unknown = ~listed[:, 0]  # nothing to match: "Unknown"
        key = np.where(listed, keys[np.maximum(hits, 0)], -1)
        other = listed & (key != key[:, :1])  # hits of another person than the best one
        other[:, 0] = False
        z_thr = None
        if self.norm is not None and len(keys) - 1 > 0:
            z_thr = self.norm.threshold_per_doubt(view, len(keys) - 1, self.doubts()[rows])
        decided = np.zeros(len(rows), bool)
        if z_thr is not None:
            cohort = self.norm.cohort
            taken = other & (np.cumsum(other, axis=1) <= cohort)  # the next ``cohort`` people's scores
            full = taken.sum(axis=1) == cohort
            x = np.where(taken, scores, 0.0).astype(np.float64)
            mean = x.sum(axis=1) / cohort
            std = np.sqrt((np.where(taken, scores - mean[:, None], 0.0) ** 2).sum(axis=1) / cohort)
            z = (s1 - mean) / np.maximum(std, 1e-6)
            decided = full & listed[:, 0] & np.isfinite(z)
            unknown |= decided & (z < z_thr)
        unknown |= ~decided & listed[:, 0] & (s1 < threshold)
        policy = self.policies.get(view)
        ask = ~unknown
        if policy is not None and ask.any():
            top = np.maximum(hits[:, 0], 0)
            first_other = np.argmax(other, axis=1)
            last = np.maximum(listed.sum(axis=1) - 1, 0)
            margin = np.where(other.any(axis=1), s1 - scores[np.arange(len(rows)), first_other],
                              np.where(last > 0, s1 - scores[np.arange(len(rows)), last], s1 + 1.0))
            feats = policy_features(s1[ask], margin[ask], self.query_probability[rows][ask],
                                    np.asarray(self.quality, np.float64)[top][ask],
                                    np.asarray(self.disagreement, np.float64)[top][ask])
            unknown[np.flatnonzero(ask)] = policy.confidence(feats) < policy.threshold
        return unknown

    def doubts(self) -> np.ndarray:
        """(N,) the doubt (``unknown.gallery_doubt``) of the gallery each entry's search sees: all entries but it."""
        q = np.asarray(self.quality, np.float64)
        ok = np.isfinite(q)
        total, count = q[ok].sum(), ok.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            return (total - np.where(ok, q, 0.0)) / (count - ok)


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
        rows: (Q,) the queries' positions (``gallery_scoreboard``: in the gallery).
        decisions: view -> ((Q,) bool hit, (Q,) bool unknown), query by query.
    """

    queries: int
    people: int
    columns: tuple[ScoreColumn, ...]
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False, compare=False)
    decisions: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

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
        return one_named(self.columns, view, key=lambda c: c.view, what="column", where=" in this scoreboard")

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
    rule: SearchRule | None = None,
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
        rule: decide "Unknown" as a search does (``SearchRule``); None: by ``thresholds`` alone.

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
    fetch = min(n - 1, max(MIN_HITS, rule.norm.hits_for(n - 1) if rule is not None and rule.norm is not None else 0))
    for v in views:
        sim = q[rows] @ np.asarray(view_vectors[v], np.float32).T  # (Q, N)
        sim[np.arange(len(rows)), rows] = -np.inf  # an entry never matches itself
        if available is not None and v in available:
            sim[:, ~np.asarray(available[v], bool)] = -np.inf
        top = np.argmax(sim, axis=1)
        best = sim[np.arange(len(rows)), top]
        hit = np.isfinite(best) & (lab[top] == lab[rows])
        if rule is None:
            unknown = ~np.isfinite(best) | (best < float(thresholds.get(v, -1.0)))
        else:  # the best ``fetch`` hits of each query, best first, as a search lists them
            import torch  # its top-k: 20 times numpy's argpartition and sort here

            best_scores, best_hits = torch.from_numpy(sim).topk(fetch, dim=1)
            hits, scores = best_hits.numpy(), best_scores.numpy()
            hits[~np.isfinite(scores)] = -1
            keys = np.where(lab >= 0, lab, len(codes) + np.arange(n))
            unknown = rule.unknown(v, rows, hits, scores, keys, float(thresholds.get(v, -1.0)))
        results[v] = (hit, unknown, hit & ~unknown)
    ens_right = results["ensemble"][2]
    columns = tuple(ScoreColumn(v, float(hit.mean()), float(unknown.mean()), int((right & ~ens_right).sum()),
                                int((ens_right & ~right).sum())) for v, (hit, unknown, right) in results.items())
    return Scoreboard(len(rows), int(len(np.unique(lab[rows]))), columns, rows,
                      {v: (hit, unknown) for v, (hit, unknown, _) in results.items()})


def gallery_scoreboard(gallery, unknown_by: str | None = None) -> Scoreboard:
    """:func:`leave_one_out_scoreboard` over the live entries of a ``cmce.gallery.Gallery``.

    Queries use ``gallery.vectors.views["query"]`` (entries lacking the query model's own
    embedding are not queries); every view of the gallery is a column. "Unknown" is what
    ``gallery.search_vector`` (nothing rejected, the bundle's answer rule) answers on the
    gallery without the query's entry, with ``unknown_by`` (``unknown.UNKNOWN_BY``; None:
    the default, ``normalised``) and each entry's detector probability as the query's.
    """
    live = gallery.positions
    vec = gallery.vectors
    cal = gallery.bundle.calibration
    views = {v: (vec.ensemble if v == "ensemble" else vec.views[v])[live] for v in gallery.view_names}
    entries = [gallery.entries[i] for i in live]
    labels = [e.label for e in entries]
    available = {v: vec.available[v][live] for v in views if v in vec.available}
    rule = SearchRule(unknown_norm(cal.cohort_norm, unknown_by), {v: cal.answer_policy(v) for v in views},
                      np.array([e.face.probability for e in entries], np.float64), vec.quality[live],
                      vec.uncertainty[live], gallery.doubt().doubtful[live])
    board = leave_one_out_scoreboard(vec.views["query"][live], views, labels, cal.similarity_thresholds,
                                     available=available, can_query=vec.available["query"][live], rule=rule)
    return replace(board, rows=live[board.rows])
