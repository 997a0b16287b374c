"""How well rejection works on a user's own labelled gallery (leave-one-out).

Every labelled entry whose identity has at least one other entry becomes a query: its
query-model vector (what a new photo of that person would give) is searched against
the ensemble vectors of all *other* entries. Rejecting the most doubtful share ``r``
of the gallery (highest quality score first, as the app does) removes those entries
both as queries and as matches; Recall@1 is measured on what is left::

    kept_r      = entries not rejected at rate r
    Q_r         = {i in kept_r : label_i known, some j in kept_r, j != i, has label_i}
    hit_i       = label(argmax_{j in kept_r, j != i} s_ij) == label_i,  s_ij = q_i . e_j
    recall_r    = |{i in Q_r : hit_i}| / |Q_r|

The baseline rejects a random share ``r`` instead (mean over ``random_draws`` draws).
Unlabelled entries (background faces) stay in the gallery as distractors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cmce.errors import CmceError
from cmce.metrics.rejection import gallery_rejection_mask

__all__ = ["DEFAULT_RATES", "RiskCoverage", "leave_one_out_risk_coverage", "gallery_risk_coverage"]

DEFAULT_RATES: tuple[float, ...] = tuple(round(r, 2) for r in np.arange(0.0, 0.81, 0.05))


@dataclass(frozen=True)
class RiskCoverage:
    """Leave-one-out Recall@1 of a gallery against its rejection rate.

    Attributes:
        rates: (R,) rejection rates.
        recall_uncertainty: (R,) Recall@1 when the most doubtful entries are rejected
            (nan where no query is left).
        recall_random: (R,) mean Recall@1 when random entries are rejected.
        queries: (R,) number of queries counted at each rate.
        hits: (N,) bool, top-1 correct with nothing rejected (False for non-queries).
        is_query: (N,) bool, entries that were queries with nothing rejected.
    """

    rates: np.ndarray
    recall_uncertainty: np.ndarray
    recall_random: np.ndarray
    queries: np.ndarray
    hits: np.ndarray
    is_query: np.ndarray

    @property
    def usable(self) -> bool:
        """At least one query with nothing rejected."""
        return bool(self.queries[0] > 0) if len(self.queries) else False


class _Ranking:
    """Every query's gallery entries sorted by similarity, so any rejection is cheap."""

    def __init__(self, sim: np.ndarray, labels: np.ndarray, known: np.ndarray, can_query: np.ndarray):
        n = sim.shape[0]
        sim = sim.copy()
        np.fill_diagonal(sim, -np.inf)  # an entry never matches itself
        self.order = np.argsort(-sim, axis=1, kind="stable").astype(np.int32)[:, : max(n - 1, 0)]
        self.labels, self.known, self.can_query = labels, known, can_query
        self.n_labels = int(labels.max()) + 1 if known.any() else 0

    def top1(self, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(counted, hit) per entry for the gallery ``kept``."""
        n = len(kept)
        per_label = np.bincount(self.labels[kept & self.known], minlength=self.n_labels)
        counted = kept & self.known
        counted[counted] = per_label[self.labels[counted]] >= 2  # itself and one more
        counted &= self.can_query
        if not counted.any():
            return counted, counted.copy()
        rows = np.flatnonzero(counted)
        kept_sorted = kept[self.order[rows]]
        best = self.order[rows, np.argmax(kept_sorted, axis=1)]
        hit = np.zeros(n, bool)
        hit[rows] = self.known[best] & (self.labels[best] == self.labels[rows])
        return counted, hit


def leave_one_out_risk_coverage(
    query_vectors: np.ndarray,
    gallery_vectors: np.ndarray,
    labels: Sequence[str | None],
    quality: np.ndarray,
    *,
    rates: Sequence[float] = DEFAULT_RATES,
    random_draws: int = 10,
    seed: int = 0,
    can_query: np.ndarray | None = None,
) -> RiskCoverage:
    """Leave-one-out Recall@1 with rejection by quality score vs random rejection.

    Args:
        query_vectors: (N, D) unit vectors of the entries as queries (query model).
        gallery_vectors: (N, D) unit vectors of the entries as matches (ensemble).
        labels: N identity labels, None for unlabelled entries.
        quality: (N,) quality score, higher = rejected first.
        rates: rejection rates in [0, 1).
        random_draws: random rejections averaged for the baseline.
        seed: seed of the random baseline.
        can_query: (N,) bool, entries that can act as queries (default all; an entry
            without the query model's own embedding cannot). A NaN quality score (no
            measurable disagreement) is never rejected first.

    Returns:
        RiskCoverage.

    Raises:
        CmceError: shapes that do not agree or a rate outside [0, 1).

    Example:
        Entries 0 and 1 are "a", 2 and 3 are "b"; entry 3 is a poor photo of "b", close
        to entry 1, with the highest quality score. Nothing rejected: queries 1 and 3
        find each other, 2 of 4 right (0.5); rejecting 1 of 4 removes entry 3, "b" has
        no pair left, and both "a" queries are right (1.0)::

        >>> q = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]], np.float32)
        >>> rc = leave_one_out_risk_coverage(q, q, ["a", "a", "b", "b"], np.array([0.1, 0.2, 0.3, 0.9]),
        ...                                  rates=[0.0, 0.25], random_draws=1)
        >>> rc.recall_uncertainty.tolist(), rc.queries.tolist()
        ([0.5, 1.0], [4, 2])
    """
    q = np.asarray(query_vectors, np.float32)
    g = np.asarray(gallery_vectors, np.float32)
    quality = np.asarray(quality, np.float64)
    quality = np.where(np.isnan(quality), -np.inf, quality)
    n = len(labels)
    if q.ndim != 2 or g.ndim != 2 or q.shape != g.shape or q.shape[0] != n or quality.shape != (n,):
        raise CmceError(
            f"query_vectors and gallery_vectors must be (N, D) and labels/quality N long; got "
            f"{q.shape}, {g.shape}, {n} labels, quality {quality.shape}"
        )
    rate_list = [float(r) for r in rates]
    if any(not 0.0 <= r < 1.0 for r in rate_list):
        raise CmceError(f"every rate must be in [0, 1), got {rate_list}")
    known = np.array([lab is not None for lab in labels], bool)
    codes = {lab: i for i, lab in enumerate(sorted({lab for lab in labels if lab is not None}))}
    lab_arr = np.array([codes[lab] if lab is not None else -1 for lab in labels], np.int64)
    can = np.ones(n, bool) if can_query is None else np.asarray(can_query, bool)
    ranking = _Ranking(q @ g.T, lab_arr, known, can)
    rng = np.random.default_rng(seed)
    rec_u = np.full(len(rate_list), np.nan)
    rec_r = np.full(len(rate_list), np.nan)
    counts = np.zeros(len(rate_list), np.int64)
    hits0 = np.zeros(n, bool)
    query0 = np.zeros(n, bool)
    for j, r in enumerate(rate_list):
        kept = gallery_rejection_mask(quality, r) if n else np.zeros(0, bool)
        counted, hit = ranking.top1(kept)
        counts[j] = counted.sum()
        if counts[j]:
            rec_u[j] = hit.sum() / counts[j]
        if j == 0 or r == 0.0:
            hits0, query0 = hit, counted
        draws = []
        n_rejected = int((~kept).sum())
        for _ in range(max(random_draws, 1) if n_rejected else 1):
            kept_r = np.ones(n, bool)
            kept_r[rng.permutation(n)[:n_rejected]] = False
            c, h = ranking.top1(kept_r)
            if c.any():
                draws.append(h.sum() / c.sum())
        if draws:
            rec_r[j] = float(np.mean(draws))
    return RiskCoverage(np.asarray(rate_list), rec_u, rec_r, counts, hits0, query0)


def gallery_risk_coverage(gallery, *, rates: Sequence[float] = DEFAULT_RATES, random_draws: int = 10) -> RiskCoverage:
    """:func:`leave_one_out_risk_coverage` over the live entries of a ``cmce.gallery.Gallery``.

    Queries use ``gallery.vectors.views["query"]`` (entries lacking the query model's own
    embedding are not queries), matches ``gallery.vectors.ensemble``, rejection
    ``gallery.vectors.quality``. ``hits`` and ``is_query`` are over the live
    entries, in ``gallery.positions`` order.
    """
    live = gallery.positions
    vec = gallery.vectors
    labels = [gallery.entries[i].label if vec.available["ensemble"][i] else None for i in live]
    return leave_one_out_risk_coverage(
        vec.views["query"][live], vec.ensemble[live], labels, vec.quality[live],
        rates=rates, random_draws=random_draws, can_query=vec.available["query"][live],
    )
