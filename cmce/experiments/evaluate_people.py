"""``cmce evaluate DATA --people``: grouping held-out identities into people, labels hidden.

Every found face of the held-out identities is one face of an unlabelled library (clean, or
with a share of its photos degraded by ``--gallery-degrade``). The grouping never sees a label;
the labels only score it. The thresholds and the attach and detach passes come from the bundle's training
identities (``calibrate``: every identity the bundle was trained or validated on, clean, and a
mixed-quality library of 1,000 of them, served out-of-fold by the bundle's cross-validation
networks), never from the held-out ones; so does the clustering method (the best BCubed F on
the clean training photos).

Rows, all on the same faces:

* ``CMCE ensemble``: the served grouping: the mean of the served ensemble vectors' and the query
  model's cosines (:data:`QUERY_WEIGHT`), the chosen clustering at its threshold, its detach and attach
  passes;
* ``query model alone``: the query model's own embeddings, the same clustering, detach and attach
  passes at the query model's own calibrated threshold, detach and attach settings;
* ``face_recognition recipe``: dlib-resnet34 descriptors, ``dlib.chinese_whispers_clustering`` at
  Euclidean distance 0.5 (``face_recognition``'s ``--tolerance``-style cut). The library's dlib
  embeddings are unit vectors; dlib's own descriptors have norm about
  :data:`DLIB_DESCRIPTOR_NORM`, so they are scaled back to it before the distance is taken;
* ``Immich-like recipe``: scikit-learn DBSCAN on the query model, cosine distance 0.5,
  3 faces at least (Immich's defaults ``maxDistance`` 0.5, ``minFaces`` 3); its noise faces
  count as one-face people (and as unsure in the ``+ unsure set`` row);
* ``... + unsure set`` rows: the served grouping with its unsure set (faces over the bundle's
  calibrated rejection cut), the Immich-like noise held out.

Each row: BCubed P/R/F and pairwise F over every face (an unsure face counts as a one-face
person), people found against the true number, the share unsure, and for the rows with an
unsure set the BCubed precision and recall of the faces grouped (recall against each person's
full set of faces). Intervals: 95% bootstrap over identities; differences are paired.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from cmce.experiments.degrade import DegradeSpec, degrade_gallery
from cmce.experiments.splits import SplitConfig, dataset_splits, embedded_subset
from cmce.io.datasets import list_labelled_images
from cmce.method.bundle_model import Bundle
from cmce.metrics.clustering import bcubed, bcubed_items, pairwise_prf
from cmce.metrics.intervals import cluster_bootstrap
from cmce.models.embed import EmbeddedFiles, EmbeddingCache, embed_files
from cmce.experiments.people_folds import FoldBundles, fold_bundles
from cmce.people import GroupingConfig, group_faces
from cmce.people.calibration import calibrate_attach, calibrate_detach, calibrate_threshold, threshold_curve
from cmce.people.grouping import grouping_vectors

logger = logging.getLogger(__name__)

__all__ = ["DLIB_DESCRIPTOR_NORM", "METHODS_COMPARED", "UNSURE_SHARES", "calibrate", "evaluate_people",
           "people_gallery"]

DLIB_DESCRIPTOR_NORM = 1.41
"""Median L2 norm of dlib's own face descriptors (``compute_face_descriptor``, 5-point landmarks):
1.414 on 299 random photos of lfw-train with dlib 20.0.1 (5th-95th percentile 1.33-1.57)."""

METHODS_COMPARED = ("chinese_whispers", "components", "louvain", "leiden", "hdbscan")
UNSURE_SHARES = (0.0, 0.05, 0.10, 0.20)
CALIBRATION_MIX = "mix:0.6"
"""The degradation of the training library the threshold is also calibrated on (the bundles' --mixed-share)."""
CALIBRATION_IDENTITIES = 1000
"""Training identities in that mixed library (a seeded draw; degrading every training photo costs too long)."""
QUERY_WEIGHT = 0.5
"""The query model's cosine's weight in the served grouping's similarity: the plain mean of the
ensemble's and the query model's cosines (set, not calibrated: see docs/people.md)."""
CURVE_OFFSETS = tuple(round(-0.10 + 0.02 * i, 2) for i in range(11))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _spaces(bundle: Bundle, embedded: EmbeddedFiles, rows: np.ndarray, folds: FoldBundles | None = None,
            labels: np.ndarray | None = None) -> dict:
    """The vectors grouped: the served ensemble (and its quality score), the query model alone, dlib,
    and ``grouped``: the grouping vectors of the ensemble with the query model's cosine weighted
    :data:`QUERY_WEIGHT` (:func:`cmce.people.grouping.grouping_vectors`).

    With ``folds`` (and the faces' identities ``labels``), the ensemble and quality are the
    out-of-fold ones: each identity served by networks not trained on it.
    """
    emb = {m: v[rows] for m, v in embedded.embeddings.items()}
    if folds is not None:
        gv = folds.spaces(emb, embedded.detection_probability[rows], labels)
        ensemble, quality = gv["ensemble"], gv["quality"]
    else:
        gv = bundle.gallery_vectors(emb, embedded.detection_probability[rows])
        ensemble, quality = gv.ensemble, gv.quality
    out = {"ensemble": _unit(ensemble), "quality": np.asarray(quality, np.float64),
           "query": _unit(emb[bundle.query_model])}
    out["grouped"] = grouping_vectors(out["ensemble"], out["query"], QUERY_WEIGHT)
    if "dlib-resnet34" in emb:
        out["dlib"] = _unit(emb["dlib-resnet34"])
    return out


def _configs(calibration: dict) -> dict[str, GroupingConfig]:
    """The served ensemble's and the query model's grouping settings from a calibration (``calibrate``)."""
    out = {}
    for who in ("ensemble", "query"):
        c = calibration[who]
        out[who] = GroupingConfig(threshold=c["threshold"], method=calibration["method"],
                                  query_weight=c.get("query_weight", 0.0), attach_above=c.get("attach_above"),
                                  attach_margin=c.get("attach_margin", GroupingConfig.attach_margin),
                                  detach_below=c.get("detach_below"))
    return out


def calibrate(data_dir, bundle: Bundle, *, cache: EmbeddingCache | None, progress: bool,
              methods: Sequence[str] = METHODS_COMPARED, mixed: bool = True, seed: int = 0,
              out_of_fold: bool = True) -> dict:
    """Thresholds, the attach pass and the clustering, measured on the bundle's training identities.

    With ``out_of_fold`` (the default), the training identities' ensemble vectors and quality
    scores are out-of-fold ones (:mod:`cmce.experiments.people_folds`: each identity served by
    the bundle's cross-validation networks that were not trained on it), as a new face is. The
    clustering is the best BCubed F among ``methods`` on the clean training photos (grouping
    vectors of :func:`_spaces`). Its threshold (for the ensemble, and the query model's for the
    baseline row) is the one of the best mean BCubed F over two training libraries: the clean
    one, and (``mixed``) :data:`CALIBRATION_IDENTITIES` training identities with
    :data:`CALIBRATION_MIX` of their photos degraded, as the bundles' own rejection cut is
    calibrated on mixed-quality validation galleries. Then the attach pass, on the same two
    libraries at that threshold (:func:`cmce.people.calibration.calibrate_attach`), then the
    detach pass with that attach pass (:func:`cmce.people.calibration.calibrate_detach`).

    Returns:
        JSON-ready: ``identities``, ``faces``, ``out_of_fold``, per method its clean ensemble curve
        and best threshold (``methods``), the chosen ``method``, ``ensemble`` and ``query``
        (threshold, query weight, attach and detach passes with their grids, clean and mixed
        curves), ``mixed``
        (what the mixed library holds) and the ``unsure_cut``.
    """
    full = list_labelled_images(data_dir)
    split = dataset_splits(full.labels, SplitConfig(**bundle.info["training"]["split"]))
    keep = split["train"] | split["val"]
    paths = [p for p, k in zip(full.paths, keep) if k]
    labels = np.asarray(full.labels)[keep]
    folds = fold_bundles(data_dir, bundle, cache=cache, progress=progress) if out_of_fold else None
    embedded = embed_files(paths, list(bundle.models), cache=cache, progress=progress)
    rows = np.flatnonzero(embedded.found)
    truth = labels[rows]
    sp = _spaces(bundle, embedded, rows, folds, truth)
    by_method = {}
    for m in methods:
        try:
            by_method[m] = calibrate_threshold(sp["grouped"], truth, method=m)
        except ImportError as exc:  # an optional clustering package missing: said, not hidden
            logger.warning("clustering %s not measured: %s", m, exc)
    chosen = max(by_method, key=lambda m: by_method[m].best.f)
    curves = {"ensemble": {"clean": by_method[chosen].curve},
              "query": {"clean": threshold_curve(sp["query"], truth, method=chosen)}}
    libraries = {"ensemble": [(sp["grouped"], truth)], "query": [(sp["query"], truth)]}
    mixed_info = None
    if mixed:
        ids = np.unique(truth)
        pick = np.random.default_rng(seed).choice(ids, min(CALIBRATION_IDENTITIES, len(ids)), replace=False)
        sub = embedded_subset(embedded, np.isin(labels, pick) & embedded.found)
        sub_labels = labels[np.isin(labels, pick) & embedded.found]
        deg, report, _ = degrade_gallery(sub, np.arange(len(sub.paths)), DegradeSpec.parse(CALIBRATION_MIX),
                                         seed=seed, models=list(bundle.models), cache=cache, progress=progress)
        found = np.flatnonzero(deg.found)
        sp_mixed = _spaces(bundle, deg, found, folds, sub_labels[found])
        for who, key in (("ensemble", "grouped"), ("query", "query")):
            curves[who]["mixed"] = threshold_curve(sp_mixed[key], sub_labels[found], method=chosen)
            libraries[who].append((sp_mixed[key], sub_labels[found]))
        mixed_info = {"spec": CALIBRATION_MIX, "identities": int(len(pick)), "faces": int(len(found)),
                      "degraded": report.get("degraded")}
    out = {"identities": int(len(np.unique(truth))), "faces": int(len(rows)), "out_of_fold": out_of_fold,
           "methods": {m: c.to_dict() for m, c in by_method.items()}, "method": chosen, "mixed": mixed_info,
           "unsure_cut": {"quality": bundle.calibration.quality.kind,
                          "doubt_above": float(bundle.calibration.rejection_threshold),
                          "rejection_rate": float(bundle.calibration.rejection_rate)}}
    for who, cs in curves.items():
        mean_f = {p.threshold: np.mean([next(q.f for q in c if q.threshold == p.threshold) for c in cs.values()])
                  for p in cs["clean"]}
        best = max(mean_f, key=lambda t: (round(float(mean_f[t]), 9), t))
        weight = QUERY_WEIGHT if who == "ensemble" else 0.0
        attach = calibrate_attach(libraries[who], GroupingConfig(threshold=best, method=chosen))
        detach = calibrate_detach(libraries[who], GroupingConfig(threshold=best, method=chosen,
                                                                 attach_above=attach["attach_above"],
                                                                 attach_margin=attach["attach_margin"]))
        out[who] = {"method": chosen, "threshold": best, "mean_f": float(mean_f[best]), "query_weight": weight,
                    "attach_above": attach["attach_above"], "attach_margin": attach["attach_margin"],
                    "attach_mean_f": attach["mean_f"], "attach_grid": attach["grid"],
                    "detach_below": detach["detach_below"], "detach_mean_f": detach["mean_f"],
                    "detach_grid": detach["grid"],
                    "curve": [p.to_dict() for p in cs["clean"]],
                    **({"curve_mixed": [p.to_dict() for p in cs["mixed"]]} if "mixed" in cs else {})}
    return out


def people_gallery(photos, spec: DegradeSpec | None, *, seed: int = 0) -> tuple[EmbeddedFiles, dict | None]:
    """The library grouped: every found face of the held-out photos, a share of them degraded by ``spec``."""
    if spec is None:
        return photos.clean, None
    embedded, report, _ = degrade_gallery(photos.clean, np.flatnonzero(photos.clean.found), spec, seed=seed,
                                          models=list(photos.models), cache=photos.cache, progress=photos.progress,
                                          detector=photos.detector)
    return embedded, report


def _face_recognition(dlib_unit: np.ndarray) -> np.ndarray:
    import dlib

    desc = [dlib.vector((row * DLIB_DESCRIPTOR_NORM).astype(np.float64).tolist()) for row in dlib_unit]
    return np.asarray(dlib.chinese_whispers_clustering(desc, 0.5), np.int64)


def _immich(query_unit: np.ndarray) -> np.ndarray:
    from sklearn.cluster import DBSCAN

    return DBSCAN(eps=0.5, min_samples=3, metric="cosine").fit_predict(query_unit).astype(np.int64)


def _singletons(labels: np.ndarray) -> np.ndarray:
    """Unsure faces (-1) as one-face people, for the all-faces metrics."""
    out = labels.copy()
    neg = out < 0
    out[neg] = out.max(initial=-1) + 1 + np.arange(int(neg.sum()))
    return out


def _row(name: str, labels: np.ndarray, truth: np.ndarray, *, resamples: int, seed: int) -> dict:
    """Metrics of one grouping (``-1``: unsure) of faces labelled ``truth``, with intervals over identities."""
    full = _singletons(labels)
    p, r = bcubed_items(full, truth)
    f_of = lambda pm, rm: 2 * pm * rm / (pm + rm) if pm + rm else 0.0  # noqa: E731
    fv, flo, fhi = cluster_bootstrap([p, r], truth, f_of, resamples=resamples, seed=seed)
    _, plo, phi = cluster_bootstrap([p], truth, resamples=resamples, seed=seed)
    _, rlo, rhi = cluster_bootstrap([r], truth, resamples=resamples, seed=seed)
    unsure = labels < 0
    out = {"name": name, "bcubed_precision": float(p.mean()), "bcubed_precision_ci95": [plo, phi],
           "bcubed_recall": float(r.mean()), "bcubed_recall_ci95": [rlo, rhi],
           "bcubed_f": fv, "bcubed_f_ci95": [flo, fhi], "pairwise_f": pairwise_prf(full, truth)[2],
           "people_found": int(len(np.unique(labels[~unsure]))),
           "people_true": int(len(np.unique(truth))), "faces": int(len(truth)),
           "share_unsure": float(unsure.mean())}
    if unsure.any():
        out["grouped_precision"] = float(p[~unsure].mean())
        out["grouped_recall"] = float(r[~unsure].mean())
    out["_items"] = (p, r)
    return out


def _paired(a: dict, b: dict, truth: np.ndarray, *, resamples: int, seed: int) -> dict:
    """BCubed F of row ``a`` minus row ``b``, paired over the same resampled identities."""
    (pa, ra), (pb, rb) = a["_items"], b["_items"]

    def diff(p1, r1, p2, r2):
        return 2 * p1 * r1 / (p1 + r1) - 2 * p2 * r2 / (p2 + r2)

    d, lo, hi = cluster_bootstrap([pa, ra, pb, rb], truth, diff, resamples=resamples, seed=seed)
    return {"row": a["name"], "minus": b["name"], "bcubed_f_difference": d, "ci95": [lo, hi]}


def _unsure_sweep(vectors: np.ndarray, query: np.ndarray | None, uncertainty: np.ndarray | None, truth: np.ndarray,
                  cfg: GroupingConfig) -> list:
    """Precision and recall of the faces grouped against the share held out (most doubted first)."""
    out = []
    for share in UNSURE_SHARES:
        g = group_faces(vectors, query_vectors=query, uncertainty=uncertainty, config=replace(cfg, unsure_share=share))
        lab = g.labels
        p, r = bcubed_items(_singletons(lab), truth)
        kept = lab >= 0
        out.append({"share": share, "held_out": float((~kept).mean()), "grouped_precision": float(p[kept].mean()),
                    "grouped_recall": float(r[kept].mean()), "people_found": int(len(g.people))})
    return out


def _curve(vectors: np.ndarray, query: np.ndarray | None, truth: np.ndarray, cfg: GroupingConfig) -> list:
    """BCubed F of the held-out grouping (the whole of it, detach and attach passes included) around the calibrated
    threshold (shown, never used to choose)."""
    out = []
    for t in (round(cfg.threshold + o, 2) for o in CURVE_OFFSETS):
        lab = group_faces(vectors, query_vectors=query, config=replace(cfg, threshold=t)).labels
        p, r, f = bcubed(lab, truth)
        out.append({"threshold": t, "bcubed_precision": p, "bcubed_recall": r, "bcubed_f": f,
                    "pairwise_f": pairwise_prf(lab, truth)[2], "people": int(len(np.unique(lab)))})
    return out


def evaluate_people(embedded: EmbeddedFiles, labels: Sequence[str], bundle: Bundle, calibration: dict, *,
                    degrade_report: dict | None = None, ci_resamples: int = 1000, seed: int = 0) -> dict:
    """One library's grouping figures (the module's docstring says what each row is).

    Returns:
        JSON-ready: ``gallery``, ``rows``, ``differences`` (paired BCubed F differences),
        ``unsure_sweep`` (ensemble and query model), ``curve`` (held-out F around the threshold).
    """
    rows_idx = np.flatnonzero(embedded.found)
    truth = np.asarray(labels)[rows_idx]
    sp = _spaces(bundle, embedded, rows_idx)
    cfgs = _configs(calibration)
    ens, qry = cfgs["ensemble"], cfgs["query"]
    doubt = calibration["unsure_cut"]["doubt_above"]
    kw = dict(resamples=ci_resamples, seed=seed)
    rows = [
        _row("CMCE ensemble", group_faces(sp["ensemble"], query_vectors=sp["query"], config=ens).labels, truth, **kw),
        _row("query model alone", group_faces(sp["query"], config=qry).labels, truth, **kw),
    ]
    if "dlib" in sp:
        rows.append(_row("face_recognition recipe (dlib-resnet34, chinese whispers 0.5)",
                         _face_recognition(sp["dlib"]), truth, **kw))
    immich = _immich(sp["query"])
    rows.append(_row("Immich-like recipe (query model, DBSCAN 0.5, 3 faces)", _singletons(immich), truth, **kw))
    unsure_cfg = replace(ens, doubt_above=doubt)
    rows.append(_row("CMCE ensemble + unsure set", group_faces(sp["ensemble"], query_vectors=sp["query"],
                                                                uncertainty=sp["quality"], config=unsure_cfg).labels,
                     truth, **kw))
    rows.append(_row("Immich-like recipe + unsure set (noise held out)", immich, truth, **kw))
    diffs = [_paired(rows[0], r, truth, **kw) for r in rows[1:4]]
    for r in rows:
        r.pop("_items")
    return {
        "gallery": "clean" if degrade_report is None else degrade_report["spec"],
        "gallery_degrade": degrade_report,
        "rows": rows,
        "differences": diffs,
        "unsure_sweep": {"ensemble": _unsure_sweep(sp["ensemble"], sp["query"], sp["quality"], truth, ens),
                         "query model alone": _unsure_sweep(sp["query"], None, None, truth, qry)},
        "curve": {"ensemble": _curve(sp["ensemble"], sp["query"], truth, ens),
                  "query model alone": _curve(sp["query"], None, truth, qry)},
    }
