"""The paper's query-model update on a folder-per-identity dataset: an old gallery re-projected
into a new query model's space without reading a photo (no backfill), against the old
gallery and a full backfill; what int8 transformers change; what each costs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmce.method.bundle_model import Bundle
from cmce.metrics.intervals import (
    bootstrap_mean_ci,
)
from cmce.metrics.retrieval import (
    top1_hits,
)
from cmce.metrics.verification import tar_at_far, verification_scores
from cmce.models.embed import EmbeddedFiles
from cmce.models.transform import first_image_protocol

from cmce.experiments.evaluate import protocol_split

logger = logging.getLogger(__name__)

__all__ = ["UPGRADE_STAGES", "evaluate_upgrade", "precision_effect", "upgrade_costs"]


UPGRADE_STAGES = ("before", "no_backfill", "backfill")


def _member_label(bundle_query: str, member: str) -> str:
    return f"{bundle_query} (own)" if member == "query" else member


def _upgrade_metrics(sim: np.ndarray, q_lab: np.ndarray, g_lab: np.ndarray) -> dict:
    scores, same = verification_scores(sim, q_lab, g_lab)
    # every query has a mate (first-image protocol), so no hit is NaN ("not counted")
    hits = top1_hits(sim, q_lab, g_lab)
    r1, lo, hi = bootstrap_mean_ci(hits)
    return {
        "recall_at_1": r1,
        "recall_at_1_ci95": [lo, hi],
        "tar_at_far_1e-2": float(tar_at_far(scores, same, 1e-2)),
        "tar_at_far_1e-3": float(tar_at_far(scores, same, 1e-3)),
    }


@dataclass(frozen=True)
class _OldSide:
    """What the old gallery served before the upgrade: its query model, stored backbones and scores."""

    query: str
    stored: Sequence[str]
    similarity: np.ndarray
    members: list[str]
    description: dict


def _old_side(old: Bundle | str, emb: dict[str, np.ndarray], gi: np.ndarray, qi: np.ndarray,
              prob: np.ndarray) -> _OldSide:
    """The ``before`` stage: the old bundle's ensemble, or one backbone searched symmetrically."""
    if isinstance(old, Bundle):
        gv_old = old.gallery_vectors({m: emb[m][gi] for m in old.models}, prob)
        before_members = [_member_label(old.query_model, m) for m in old.member_names]
        return _OldSide(old.query_model, old.models, emb[old.query_model][qi] @ gv_old.ensemble.T, before_members,
                        {"query": old.query_model, "gallery": before_members})
    return _OldSide(old, (old,), emb[old][qi] @ emb[old][gi].T, [old], {"query": old, "gallery": [old]})


def _upgrade_rows(sims: dict[str, np.ndarray], members: dict[str, list[str]], photos: dict[str, int],
                  queries: dict[str, str], costs: dict[str, float], q_lab: np.ndarray, g_lab: np.ndarray) -> list[dict]:
    """One row per stage of ``UPGRADE_STAGES``."""
    rows = []
    for stage in UPGRADE_STAGES:
        row = {"stage": stage, "members": members[stage], "query": queries[stage]}
        row.update(_upgrade_metrics(sims[stage], q_lab, g_lab))
        row["seconds_per_1k_entries"] = costs.get(stage)
        row["photos_read"] = photos[stage]
        rows.append(row)
    return rows


def _upgrade_comparisons(sims: dict[str, np.ndarray], q_lab: np.ndarray, g_lab: np.ndarray) -> list[dict]:
    """Paired bootstrap intervals of the Recall@1 gain from each stage to the next."""
    hits = {s: top1_hits(sims[s], q_lab, g_lab) for s in UPGRADE_STAGES}
    comparisons = []
    for a, b in (("before", "no_backfill"), ("no_backfill", "backfill")):
        d, lo, hi = bootstrap_mean_ci(hits[b] - hits[a])
        comparisons.append({"from": a, "to": b, "recall_at_1_gain": d, "ci95": [lo, hi]})
    return comparisons


def _ensemble_size_curve(views: dict[str, np.ndarray], qv: np.ndarray, q_lab: np.ndarray, g_lab: np.ndarray,
                         query_model: str) -> list[dict]:
    """The no-backfill figures by number of members, each the mean over every subset of that size."""
    from itertools import combinations

    from cmce.method.ensemble import fuse_members

    kept = list(views)
    curve = []
    for n in range(1, len(kept) + 1):
        per = []
        for subset in combinations(kept, n):
            fused = fuse_members([views[m] for m in subset])
            per.append({"members": [_member_label(query_model, m) for m in subset],
                        **_upgrade_metrics(qv @ fused.T, q_lab, g_lab)})
        curve.append({"members": n, "subsets": per,
                      **{k: float(np.mean([p[k] for p in per]))
                         for k in ("recall_at_1", "tar_at_far_1e-2", "tar_at_far_1e-3")}})
    return curve


def evaluate_upgrade(
    embedded: EmbeddedFiles,
    labels: Sequence[str],
    new: Bundle,
    old: Bundle | str,
    *,
    seconds_per_1k_entries: dict[str, float] | None = None,
) -> dict:
    """The paper's query-model update on one dataset: before, without and with backfill.

    The old gallery holds what the old side embedded: the old bundle's backbones
    (``old`` a Bundle), or one backbone alone (``old`` a backbone name: a photo
    library indexed by one model, searched symmetrically). Then

    * ``before``: old queries against the old gallery as the old side served it;
    * ``no_backfill``: new-query-model queries against the old gallery's raw
      embeddings re-projected by the new bundle (members it lacks are left out);
    * ``backfill``: the new bundle with every member (the missing backbones embedded).

    Same first-image protocol as ``evaluate_embedded``. ``embedded`` must hold every
    backbone of both sides.

    Args:
        embedded: faces and embeddings of the dataset.
        labels: identity per file.
        new: the new bundle.
        old: the old bundle, or the name of the one backbone an old library holds.
        seconds_per_1k_entries: stage -> measured cost of that path (see
            ``upgrade_costs``); recorded as given.

    Returns:
        JSON-ready ``{"from", "to", "rows", "ensemble_size", "comparisons"}``: ``rows``
        has ``stage``, ``members``, ``query``, ``recall_at_1`` (+ 95% bootstrap
        interval), ``tar_at_far_1e-2``, ``tar_at_far_1e-3``, ``seconds_per_1k_entries``
        and ``photos_read``; ``ensemble_size`` the no-backfill Recall@1 and TARs by
        number of members (mean over member subsets); ``comparisons`` paired bootstrap
        intervals of the Recall@1 differences.
    """
    labels = np.asarray(labels)
    _, gi, qi = protocol_split(labels, embedded.found)
    g_lab, q_lab = labels[gi], labels[qi]
    emb, prob = embedded.embeddings, embedded.detection_probability[gi]
    costs = seconds_per_1k_entries or {}
    before = _old_side(old, emb, gi, qi, prob)
    nq = new.query_model
    gv_nb = new.gallery_vectors({m: emb[m][gi] for m in new.models if m in before.stored}, prob)
    gv_bf = new.gallery_vectors({m: emb[m][gi] for m in new.models}, prob)
    qv = emb[nq][qi]
    kept = [m for m, p in zip(gv_nb.members, gv_nb.member_present.all(axis=0)) if p]
    sims = {"before": before.similarity, "no_backfill": qv @ gv_nb.ensemble.T, "backfill": qv @ gv_bf.ensemble.T}
    members = {"before": before.members, "no_backfill": [_member_label(nq, m) for m in kept],
               "backfill": [_member_label(nq, m) for m in gv_bf.members]}
    photos = {"before": 0, "no_backfill": 0,
              "backfill": int(len(gi)) if set(new.models) - set(before.stored) else 0}
    queries = {"before": before.query, "no_backfill": nq, "backfill": nq}
    rows = _upgrade_rows(sims, members, photos, queries, costs, q_lab, g_lab)
    comparisons = _upgrade_comparisons(sims, q_lab, g_lab)
    views = {m: (gv_nb.views["query"] if m == "query" else gv_nb.views[m]) for m in kept}
    return {
        "from": before.description,
        "to": {"query": nq, "gallery": [_member_label(nq, m) for m in new.member_names]},
        "counts": {"gallery": int(len(gi)), "queries": int(len(qi))},
        "rows": rows,
        "comparisons": comparisons,
        "ensemble_size": _ensemble_size_curve(views, qv, q_lab, g_lab, nq),
    }


def precision_effect(
    embedded: EmbeddedFiles, labels: Sequence[str], bundle: Bundle, serving: Bundle, stored: Sequence[str], *,
    precision: str,
) -> dict:
    """What re-projecting in another precision changes, against float32: the no-backfill stage.

    The old gallery's raw embeddings (``stored`` backbones, first-image protocol) are
    re-projected by ``bundle`` (float32) and by ``serving`` (the same bundle in
    ``precision``, ``cmce.method.precision.at_precision``).

    Returns:
        JSON-ready ``{"precision", "queries", "top1_changed", "float32", "cosine_distance_median",
        "cosine_distance_max"}``: the queries whose top-1 answer differs, the float32
        figures (``recall_at_1`` with its interval, TARs) to set beside the upgrade's
        ``no_backfill`` row, and the cosine distance between the two fused vectors of each entry.
    """
    labels = np.asarray(labels)
    idx = np.flatnonzero(embedded.found)
    gi_l, qi_l = first_image_protocol(labels[idx])
    gi, qi = idx[gi_l], idx[qi_l]
    emb, prob = embedded.embeddings, embedded.detection_probability[gi]
    kept = {m: emb[m][gi] for m in bundle.models if m in stored}
    full, low = (b.gallery_vectors(kept, prob).ensemble for b in (bundle, serving))
    q = emb[bundle.query_model][qi]
    dist = 1.0 - (full * low).sum(axis=1)
    return {
        "precision": precision,
        "queries": int(len(qi)),
        "top1_changed": int(((q @ full.T).argmax(axis=1) != (q @ low.T).argmax(axis=1)).sum()),
        "float32": _upgrade_metrics(q @ full.T, labels[qi], labels[gi]),
        "cosine_distance_median": float(np.median(dist)) if len(dist) else float("nan"),
        "cosine_distance_max": float(dist.max()) if len(dist) else float("nan"),
    }


def upgrade_costs(
    embedded: EmbeddedFiles, labels: Sequence[str], new: Bundle, stored: Sequence[str], *,
    sample: int = 32, repeats: int = 5, serving: Bundle | None = None,
) -> dict[str, float]:
    """Measured seconds per 1,000 gallery entries of each upgrade path, on this machine.

    * ``before``: 0 (the gallery as it was).
    * ``no_backfill``: re-projecting the gallery's raw embeddings with the new
      bundle, fusing, scoring and building the index (median of ``repeats``).
    * ``backfill``: that, plus reading, decoding and embedding each photo again with
      the backbones the old gallery lacks (timed on ``sample`` gallery photos).

    Args:
        embedded, labels: the dataset (first-image protocol gallery).
        new: the new bundle.
        stored: the backbones the old gallery holds.
        serving: ``new`` as it re-projects (``cmce.method.precision.at_precision``; default ``new``).
    """
    import time

    from cmce.gallery.persistence import derive
    from cmce.io.images import load_image
    from cmce.models.backbones import create_backbone

    labels = np.asarray(labels)
    idx = np.flatnonzero(embedded.found)
    gi = idx[first_image_protocol(labels[idx])[0]]
    emb = {m: embedded.embeddings[m][gi] for m in new.models if m in stored}
    prob = embedded.detection_probability[gi]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        derive(new, (serving or new).gallery_vectors(emb, prob))
        times.append(time.perf_counter() - start)
    project = 1000.0 * float(np.median(times)) / max(len(gi), 1)
    missing = [m for m in new.models if m not in stored]
    embed = 0.0
    if missing:
        backbones = [create_backbone(m) for m in missing]
        picks = gi[:sample]
        for bb in backbones:  # warm-up: first calls allocate
            bb.embed_faces(load_image(embedded.paths[picks[0]]), [embedded.faces[picks[0]]])
        start = time.perf_counter()
        for i in picks:
            img = load_image(Path(embedded.paths[i]).read_bytes(), name=str(embedded.paths[i]))
            for bb in backbones:
                bb.embed_faces(img, [embedded.faces[i]])
        embed = 1000.0 * (time.perf_counter() - start) / len(picks)
    return {"before": 0.0, "no_backfill": project, "backfill": project + embed}
