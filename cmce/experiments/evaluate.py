"""The paper's table on a folder-per-identity dataset: 1:N identification.

Protocol: among the images where a face was found, per identity with >= 2 images the
first image by file name joins the gallery and the others are queries; identities
with one image join the gallery as distractors. Files without a face are counted and
reported (``counts``), not silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmce.errors import DatasetError
from cmce.experiments.evaluate_answers import answer_report
from cmce.method.bundle_model import Bundle
from cmce.metrics.intervals import (
    bootstrap_mean_ci,
    cluster_bootstrap,
    relative_error_reduction,
    tar_at_far_cluster_ci,
)
from cmce.metrics.rejection import gallery_rejection_mask
from cmce.metrics.results import Evaluation
from cmce.metrics.retrieval import (
    l2_normalise,
    mean_average_precision,
    recall_at_k,
    top1_hits,
)
from cmce.metrics.verification import tar_at_far, verification_scores
from cmce.models.embed import EmbeddedFiles
from cmce.models.transform import first_image_protocol, transform_embeddings

logger = logging.getLogger(__name__)

__all__ = [
    "REJECTION_RATES", "UPGRADE_STAGES", "ViewScores", "adapter_row_name", "evaluate_embedded", "evaluate_upgrade",
    "gallery_positions",
    "plot_risk_coverage", "precision_effect", "row_metrics", "upgrade_costs",
]

REJECTION_RATES = (0.05, 0.10, 0.20, 0.30)


@dataclass(frozen=True)
class ViewScores:
    """One row of the table before metrics: the query-gallery similarity matrix."""

    name: str
    kind: str
    query: str
    gallery: tuple[str, ...]
    similarity: np.ndarray


def row_metrics(sim: np.ndarray, q_lab: np.ndarray, g_lab: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Recall@1/5, mAP and TAR@FAR=1e-3 of one similarity matrix (Q, G)."""
    r = recall_at_k(sim, q_lab, g_lab, ks=(1, 5), gallery_mask=mask)
    scores, same = verification_scores(sim, q_lab, g_lab, gallery_mask=mask)
    return {
        "recall_at_1": float(r[1]),
        "recall_at_5": float(r[5]),
        "map": float(mean_average_precision(sim, q_lab, g_lab, gallery_mask=mask)),
        "tar_at_far_1e-3": float(tar_at_far(scores, same, 1e-3)),
    }


def build_views(bundle: Bundle, emb: dict[str, np.ndarray], prob: np.ndarray, gi: np.ndarray, qi: np.ndarray):
    """All rows' similarity matrices plus the gallery's quality scores."""
    q = bundle.query_model
    qv = emb[q][qi]
    gal = {m: v[gi] for m, v in emb.items()}
    gv = bundle.gallery_vectors(gal, prob[gi])
    rows = [ViewScores("query model symmetric", "symmetric", q, (q,), qv @ gal[q].T)]
    for m in bundle.gallery_models:
        rows.append(ViewScores(f"{m} symmetric", "symmetric", m, (m,), emb[m][qi] @ gal[m].T))
    for m in bundle.gallery_models:
        rows.append(ViewScores(f"{m} -> {q} (transformer)", "asymmetric", q, (m,), qv @ gv.views[m].T))
    members = list(bundle.gallery_models) + ([q] if bundle.query_member else [])
    rows.append(ViewScores("CMCE ensemble", "ensemble", q, tuple(members), qv @ gv.ensemble.T))
    if bundle.fusion.kind != "mean":  # the paper's plain mean of the same members, for comparison
        plain = l2_normalise(np.mean([gv.views[m] for m in bundle.gallery_models] + ([gal[q]] if bundle.query_member else []), 0))
        rows.append(ViewScores("CMCE ensemble, plain mean (the paper)", "ensemble", q, tuple(members), qv @ plain.T))
    alt = "CMCE ensemble + query member" if not bundle.query_member else "CMCE ensemble without query member"
    alt_members = [gv.views[m] for m in bundle.gallery_models] + ([] if bundle.query_member else [gal[q]])
    alt_vec = l2_normalise(np.mean(alt_members, axis=0))
    rows.append(ViewScores(alt, "ensemble", q, tuple(bundle.gallery_models) + (() if bundle.query_member else (q,)), qv @ alt_vec.T))
    if bundle.linear_maps:
        lin = []
        for m in bundle.gallery_models:
            v = l2_normalise(gal[m] @ bundle.linear_maps[m])
            lin.append(v)
            rows.append(ViewScores(f"{m} -> {q} (least-squares linear)", "baseline", q, (m,), qv @ v.T))
        rows.append(ViewScores("least-squares linear ensemble", "baseline", q, tuple(bundle.gallery_models), qv @ l2_normalise(np.mean(lin, 0)).T))
    # Distillation-style baseline, the opposite direction of CMCE: the query is mapped
    # into the gallery model's space, the gallery is that model's own embedding.
    for m in bundle.gallery_models:
        if m in bundle.query_adapters:
            aq = transform_embeddings(bundle.query_adapters[m], qv)
            rows.append(ViewScores(adapter_row_name(q, m), "baseline", q, (m,), aq @ l2_normalise(gal[m]).T))
    return rows, gv


def quality_scores_by_kind(bundle: Bundle, gv, probability: np.ndarray) -> dict[str, np.ndarray]:
    """Every quality score the bundle can give for a gallery (higher = rejected first).

    ``"bundle"`` is the shipped one; ``detection`` ranks by the lowest detector
    probability; ``combined`` and ``learned`` where the bundle's calibration carries them.
    """
    out = {"bundle": gv.quality, "disagreement": gv.uncertainty, "detection": -np.asarray(probability)}
    shipped = bundle.calibration.quality
    for kind in ("combined", "learned"):
        if kind == shipped.kind:
            out[kind] = gv.quality
        elif kind in shipped.kinds:
            out[kind] = shipped.with_kind(kind).score(gv.uncertainty, probability, *gv.member_arrays())
    return out


def gallery_positions(embedded: EmbeddedFiles, labels: Sequence[str]) -> np.ndarray:
    """Indices of the gallery photos under this module's protocol (first face-found image per identity)."""
    labels = np.asarray(labels)
    idx = np.flatnonzero(embedded.found)
    return idx[first_image_protocol(labels[idx])[0]]


def adapter_row_name(query_model: str, gallery_model: str) -> str:
    """Name of the distillation-style (query adapter) baseline row."""
    return f"{query_model} distilled into {gallery_model} space (query adapter)"


def _open_set_accuracy(sim: np.ndarray, q_lab, g_lab, keep: np.ndarray, threshold: float) -> float:
    """Share of queries answered right when rejected entries cannot match.

    A query whose mate was kept is right if its best kept match is the mate and scores
    at least ``threshold``; a query whose mate was rejected is right only if its best
    kept score is below ``threshold`` ("unknown").
    """
    s = np.where(keep[None, :], sim, -np.inf)
    best = s.argmax(1)
    best_s = s[np.arange(len(s)), best]
    mate_kept = np.array([np.any(keep & (g_lab == lab)) for lab in q_lab])
    right_known = (g_lab[best] == q_lab) & (best_s >= threshold)
    right_unknown = best_s < threshold
    return float(np.mean(np.where(mate_kept, right_known, right_unknown))) if len(s) else float("nan")


def _protocol_split(labels: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(face-found positions, gallery positions, query positions)`` under the first-image protocol.

    Raises:
        DatasetError: no identity has two images with a face (nothing to query).
    """
    idx = np.flatnonzero(found)
    gi_l, qi_l = first_image_protocol(labels[idx])
    gi, qi = idx[gi_l], idx[qi_l]
    if len(qi) == 0:
        raise DatasetError("no identity has two images with a face; nothing to query")
    return idx, gi, qi


def _table_rows(rows: Sequence[ViewScores], q_lab: np.ndarray, g_lab: np.ndarray, ci_resamples: int,
                seed: int) -> tuple[list[dict], np.ndarray]:
    """The table's rows with their intervals, and the served ensemble's similarity matrix (Q, G)."""
    out_rows = []
    ens_sim = rows[0].similarity
    for r in rows:
        d = {"name": r.name, "kind": r.kind, "query": r.query, "gallery": list(r.gallery)}
        d.update(row_metrics(r.similarity, q_lab, g_lab))
        _, lo, hi = cluster_bootstrap([top1_hits(r.similarity, q_lab, g_lab)], q_lab, resamples=ci_resamples, seed=seed)
        d["recall_at_1_ci95"] = [lo, hi]
        _, lo, hi = tar_at_far_cluster_ci(r.similarity, q_lab, g_lab, q_lab, 1e-3,
                                             resamples=max(1, ci_resamples // 4), seed=seed)
        d["tar_at_far_1e-3_ci95"] = [lo, hi]
        out_rows.append(d)
        if r.name == "CMCE ensemble":
            ens_sim = r.similarity
    return out_rows, ens_sim


@dataclass(frozen=True)
class _Rejecter:
    """Recall@1 after rejecting a share of the gallery, on one evaluation's queries.

    ``rng`` draws the random rejections; it is shared by every call, so the calls'
    order is the order of its draws.
    """

    q_lab: np.ndarray
    g_lab: np.ndarray
    ci_resamples: int
    seed: int
    rng: np.random.Generator
    random_repeats: int

    def stats(self, sim: np.ndarray, base_hits: np.ndarray, score: np.ndarray, rate: float) -> dict:
        """R@1 after rejecting ``rate`` by ``score``, and the error cut against no rejection, with CIs."""
        hits = top1_hits(sim, self.q_lab, self.g_lab, gallery_rejection_mask(score, rate))
        clusters = self.q_lab  # bootstrap over query identities
        r1, lo, hi = cluster_bootstrap([hits], clusters, resamples=self.ci_resamples, seed=self.seed)
        cut, clo, chi = cluster_bootstrap([base_hits, hits], clusters, relative_error_reduction,
                                          resamples=self.ci_resamples, seed=self.seed)
        return {"recall_at_1": r1, "recall_at_1_ci95": [lo, hi], "error_cut": cut, "error_cut_ci95": [clo, chi]}

    def random_r1(self, sim: np.ndarray, rate: float) -> float:
        """Mean R@1 over ``random_repeats`` random rejections of ``rate`` of the gallery."""
        n = len(self.g_lab)
        return float(np.mean([np.nanmean(top1_hits(sim, self.q_lab, self.g_lab,
                                                   gallery_rejection_mask(self.rng.random(n), rate)))
                              for _ in range(self.random_repeats)]))


def _served_rejection(rej: _Rejecter, quality: np.ndarray, ens_sim: np.ndarray, scores_by_kind: dict[str, np.ndarray],
                      base_r1: float, thr: float, rates: Sequence[float]) -> tuple[list[dict], dict[str, list[dict]]]:
    """``rejection`` (the shipped quality score, random, detection, open set) and ``rejection_by_quality``
    for the ensemble the bundle serves."""
    ens_hits = top1_hits(ens_sim, rej.q_lab, rej.g_lab)
    det_doubt = scores_by_kind["detection"]
    rejection, by_quality = [], {k: [] for k in scores_by_kind}
    for rate in rates:
        keep = gallery_rejection_mask(quality, rate)
        shipped = rej.stats(ens_sim, ens_hits, quality, rate)
        rand = rej.random_r1(ens_sim, rate)
        rejection.append(
            {
                "rate": rate,
                "recall_at_1": shipped["recall_at_1"],
                "recall_at_1_ci95": shipped["recall_at_1_ci95"],
                "random_recall_at_1": rand,
                "random_error_cut": relative_error_reduction(base_r1, rand),
                "detection_recall_at_1": rej.stats(ens_sim, ens_hits, det_doubt, rate)["recall_at_1"],
                "relative_error_cut": shipped["error_cut"],
                "relative_error_cut_ci95": shipped["error_cut_ci95"],
                "open_set_accuracy": _open_set_accuracy(ens_sim, rej.q_lab, rej.g_lab, keep, thr),
            }
        )
        for k, sc in scores_by_kind.items():
            by_quality[k].append({"rate": rate, **rej.stats(ens_sim, ens_hits, sc, rate)})
    return rejection, by_quality


def _gallery_ensemble_rejection(rej: _Rejecter, bundle: Bundle, gv, query_vectors: np.ndarray,
                                scores_by_kind: dict[str, np.ndarray], rates: Sequence[float]) -> dict:
    """``rejection_gallery_ensemble``: the paper's setting, the gallery models' own ensemble (no
    query-model member), whose errors are many enough to show what rejection does."""
    from cmce.method.ensemble import fuse_members

    go_vec = fuse_members([gv.views[m] for m in bundle.gallery_models])
    go_sim = query_vectors @ go_vec.T
    go_hits = top1_hits(go_sim, rej.q_lab, rej.g_lab)
    go_base, go_lo, go_hi = cluster_bootstrap([go_hits], rej.q_lab, resamples=rej.ci_resamples, seed=rej.seed)
    gallery_only = {"recall_at_1": go_base, "recall_at_1_ci95": [go_lo, go_hi], "rates": []}
    for rate in rates:
        rand = rej.random_r1(go_sim, rate)
        row = {"rate": rate, "random_recall_at_1": rand, "random_error_cut": relative_error_reduction(go_base, rand)}
        for k, sc in scores_by_kind.items():
            if k != "bundle":
                st = rej.stats(go_sim, go_hits, sc, rate)
                row[f"{k}_recall_at_1"] = st["recall_at_1"]
                row[f"{k}_recall_at_1_ci95"] = st["recall_at_1_ci95"]
                row[f"{k}_error_cut"] = st["error_cut"]
                row[f"{k}_error_cut_ci95"] = st["error_cut_ci95"]
        gallery_only["rates"].append(row)
    return gallery_only


def _counts(labels: np.ndarray, found: np.ndarray, idx: np.ndarray, gi: np.ndarray, qi: np.ndarray) -> dict:
    """``counts``: files, faces found, identities, gallery, queries and distractors."""
    n_files = len(labels)
    return {
        "files": int(n_files),
        "faces_found": int(found.sum()),
        "no_face_or_unreadable": int(n_files - found.sum()),
        "identities": len(np.unique(labels[idx])),
        "gallery": len(gi),
        "queries": len(qi),
        "distractors": int(len(gi) - len(np.unique(labels[qi]))),
    }


def evaluate_embedded(
    embedded: EmbeddedFiles,
    labels: Sequence[str],
    bundle: Bundle,
    *,
    rates: Sequence[float] = REJECTION_RATES,
    random_repeats: int = 20,
    seed: int = 0,
    ci_resamples: int = 1000,
) -> dict:
    """The paper's table for one dataset already embedded with ``bundle.models``.

    Every Recall@1, TAR and error cut comes with a 95% interval (``*_ci95``) from a
    bootstrap over query identities (``ci_resamples`` draws; TAR uses a quarter as
    many); error cuts are paired (the same identities resampled for both sides).

    Returns:
        JSON-ready dict: ``bundle``, ``counts``, ``rows``, ``answers`` (every query
        answered as the app answers, under each rule: ``evaluate_answers.answer_report``),
        ``rejection`` (the paper's kept-queries metric),
        ``rejection_by_quality`` (each quality score alone and combined),
        ``rejection_gallery_ensemble`` (the same for the gallery models' own ensemble,
        the paper's setting), ``open_set``.
    """
    labels = np.asarray(labels)
    found = embedded.found
    if found.sum() < 2:
        raise DatasetError("fewer than two faces found; nothing to evaluate")
    idx, gi, qi = _protocol_split(labels, found)
    g_lab, q_lab = labels[gi], labels[qi]
    prob = embedded.detection_probability
    rows, gv = build_views(bundle, embedded.embeddings, prob, gi, qi)
    out_rows, ens_sim = _table_rows(rows, q_lab, g_lab, ci_resamples, seed)
    base_r1 = next(d["recall_at_1"] for d in out_rows if d["name"] == "CMCE ensemble")
    rej = _Rejecter(q_lab, g_lab, ci_resamples, seed, np.random.default_rng(seed), random_repeats)
    scores_by_kind = quality_scores_by_kind(bundle, gv, prob[gi])
    thr = bundle.calibration.similarity_thresholds.get("ensemble", -np.inf)
    # the order of these two calls is the order of rej.rng's draws
    rejection, by_quality = _served_rejection(rej, gv.quality, ens_sim, scores_by_kind, base_r1, thr, rates)
    query_vectors = embedded.embeddings[bundle.query_model][qi]
    gallery_only = _gallery_ensemble_rejection(rej, bundle, gv, query_vectors, scores_by_kind, rates)
    answers = answer_report(bundle, gv, query_vectors, prob[qi], q_lab, g_lab, resamples=ci_resamples, seed=seed)
    return {
        "bundle": {"query": bundle.query_model, "gallery": list(bundle.gallery_models),
                   "query_member": bundle.query_member, "quality": bundle.calibration.quality.kind,
                   "source": bundle.source},
        "counts": _counts(labels, found, idx, gi, qi),
        "rows": out_rows,
        "answers": answers,
        "rejection_metric": "the paper's: Recall@1 of the kept queries (queries whose person was rejected are "
                            "dropped); the app answers every query, see 'answers'",
        "rejection": rejection,
        "rejection_by_quality": by_quality,
        "rejection_gallery_ensemble": gallery_only,
        "open_set": {
            "threshold": float(thr),
            "far": bundle.calibration.open_set_far,
            "accuracy_no_rejection": _open_set_accuracy(ens_sim, q_lab, g_lab, np.ones(len(gi), bool), thr),
        },
    }


def plot_risk_coverage(evaluation: Evaluation, path: str) -> None:
    """Risk-coverage plot of an evaluation: Recall@1 against the share of the gallery rejected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rej = evaluation.rejection
    rates = [0.0] + [r.rate for r in rej]
    base = evaluation.row("CMCE ensemble").recall_at_1
    shipped = evaluation.bundle.quality
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    # left: the ensemble the bundle serves, ranked by each quality score
    ax = axes[0]
    curves = {k: [r.recall_at_1 for r in v] for k, v in evaluation.rejection_by_quality.items() if k != "bundle"}
    curves["random"] = [r.random_recall_at_1 for r in rej]
    for kind, values in curves.items():
        label = f"{kind} (shipped)" if kind == shipped else kind
        ax.plot([100 * x for x in rates], [100 * base] + [100 * v for v in values], marker="o", label=label,
                lw=2.5 if kind == shipped else 1.2, ls="--" if kind == "random" else "-")
    ax.set_title("CMCE ensemble as served", fontsize=10)
    # right: the gallery models' own ensemble (the paper's setting)
    go = evaluation.rejection_gallery_ensemble
    ax = axes[1]
    if go:
        for kind in ("disagreement", "detection", "combined", "random"):
            if kind == "random" or all(kind in r.scores for r in go.rates):
                ax.plot([0.0] + [100 * r.rate for r in go.rates],
                        [100 * go.recall_at_1] + [100 * (r.random_recall_at_1 if kind == "random" else
                                                         r.scores[kind].recall_at_1) for r in go.rates],
                        marker="o", label=kind, ls="--" if kind == "random" else "-")
    ax.set_title("gallery models' own ensemble (the paper's setting)", fontsize=10)
    for ax in axes:
        ax.set_xlabel("gallery rejected (%)")
        ax.set_ylabel("Recall@1 of kept queries (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Risk-coverage: rejection by each quality score", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------- upgrade experiment

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
    _, gi, qi = _protocol_split(labels, embedded.found)
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
