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

import numpy as np

from cmce.errors import DatasetError
from cmce.experiments.evaluate_answers import answer_report
from cmce.method.bundle_model import Bundle
from cmce.metrics.intervals import (
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
    "REJECTION_RATES", "ViewScores", "adapter_row_name", "evaluate_embedded", "gallery_positions", "protocol_split",
    "plot_risk_coverage", "row_metrics",
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


def protocol_split(labels: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    idx, gi, qi = protocol_split(labels, found)
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
