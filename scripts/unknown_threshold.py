"""Does the "Unknown" threshold hold on every gallery kind? Raw scores against score normalisation (issue 22).

The app names the best match only when its similarity reaches the bundle's threshold
(calibrated at a pair FAR on clean validation galleries); below it the answer is
"Unknown". On degraded or cropped galleries the scores shift, so the same threshold may
let strangers through or turn away people who are there. This measures, on the bundle's
held-out identities, per gallery kind (``scripts/eval_gallery_kinds.KINDS``, detected as
``cmce index`` detects):

- **strangers named**: each query with its own person taken out of the gallery, the share
  whose best score still reaches the threshold (a stranger the app would name);
- **right / wrong / unknown** for the queries whose person is in the gallery.

Four scores, each thresholded so that on the *clean* gallery it names strangers as often
as the bundle's raw threshold does (two-fold over identities: the threshold is set on one
half of the identities and measured on the other):

- ``raw``: the cosine similarity, as shipped;
- ``znorm``: the query's score minus the mean of its scores against the gallery, over their
  spread (adaptive: from the query's ``cohort`` highest impostor-side scores);
- ``tnorm``: the same from the gallery entry's side, against the other gallery entries (the
  gallery's own impostor scores);
- ``asnorm``: the mean of both (adaptive symmetric normalisation, as speaker and face
  verification use it).

    PYTHONPATH=. python scripts/unknown_threshold.py ../shared/data/lfw-train \\
        --bundle assets/bundles/facenet-query --json docs/answers/unknown-facenet-query.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from answers_doc import unknown_table  # noqa: E402  (scripts/, beside this file)

from cmce.answer_metrics import cohort_normalised, stranger_best, unknown_mask
from cmce.experiments.degrade import DegradeSpec, degrade_gallery  # noqa: E402
from cmce.experiments.evaluate import gallery_positions  # noqa: E402
from cmce.experiments.splits import heldout_subset  # noqa: E402
from cmce.faces.detector import create_detector  # noqa: E402
from cmce.io.datasets import list_labelled_images  # noqa: E402
from cmce.method.bundle import load_bundle  # noqa: E402
from cmce.method.unknown import gallery_doubt  # noqa: E402
from cmce.metrics.intervals import cluster_bootstrap  # noqa: E402
from cmce.models.embed import EmbeddingCache, embed_files  # noqa: E402
from cmce.models.transform import first_image_protocol  # noqa: E402

KINDS = ("clean", "mix:0.6", "crop", "tiny", "blur", "lowres", "jpeg", "dark", "noise", "occlusion")
SCORES = ("raw", "znorm", "tnorm", "asnorm")
logger = logging.getLogger("unknown_threshold")


def _top_stats(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise mean and std of the ``k`` highest entries of ``s`` (NaN and -inf ignored)."""
    k = max(1, min(k, s.shape[1]))
    top = -np.sort(-np.where(np.isfinite(s), s, -np.inf), axis=1)[:, :k]
    top = np.where(np.isfinite(top), top, np.nan)
    return np.nanmean(top, axis=1), np.maximum(np.nanstd(top, axis=1), 1e-6)


def normalised(kind: str, sim: np.ndarray, gal: np.ndarray, q_exclude_top: bool, cohort: int) -> np.ndarray:
    """``sim`` (Q, G) under score ``kind``; ``gal`` (G, D) the gallery's unit vectors.

    The query's statistics come from its scores against the gallery with its own best
    match left out (that one may be its person); the entry's from its scores against the
    other entries (the gallery's own impostors: in a gallery one entry per person, in
    the app's galleries mostly so).
    """
    if kind == "raw":
        return sim
    out = []
    if kind in ("znorm", "asnorm"):
        s = sim.copy()
        if q_exclude_top:
            s[np.arange(len(s)), s.argmax(1)] = -np.inf
        mu, sd = _top_stats(s, cohort)
        out.append((sim - mu[:, None]) / sd[:, None])
    if kind in ("tnorm", "asnorm"):
        gg = gal @ gal.T
        np.fill_diagonal(gg, -np.inf)
        mu, sd = _top_stats(gg, cohort)
        out.append((sim - mu[None, :]) / sd[None, :])
    return np.mean(out, axis=0)


def outcomes(score: np.ndarray, q_lab: np.ndarray, g_lab: np.ndarray, thr: float) -> dict[str, np.ndarray]:
    """Per query: right / wrong / unknown with its person in the gallery, and named as a stranger."""
    best = score.argmax(1)
    best_s = score[np.arange(len(score)), best]
    answered = best_s >= thr
    right = answered & (g_lab[best] == q_lab)
    return {"right": right, "wrong": answered & ~right, "unknown": ~answered,
            "stranger_named": stranger_best(score, q_lab, g_lab) >= thr}


def stranger_threshold(score: np.ndarray, q_lab: np.ndarray, g_lab: np.ndarray, rate: float) -> float:
    """The threshold at which ``rate`` of these queries, as strangers, would be named."""
    return float(np.quantile(stranger_best(score, q_lab, g_lab), 1.0 - rate))


def embedded_kind(ds, bundle, kind: str, cache, detector, seed: int):
    embedded = embed_files(list(ds.paths), list(bundle.models), detector=detector, cache=cache, progress=False)
    if kind != "clean":
        embedded, _, _ = degrade_gallery(embedded, gallery_positions(embedded, ds.labels), DegradeSpec.parse(kind),
                                         seed=seed, models=list(bundle.models), cache=cache, progress=False,
                                         detector=detector)
    return embedded


def measure(data_dir: str, bundle_path: str, kinds=KINDS, cohort: int = 50, resamples: int = 1000,
            targets: tuple = ("bundle",)) -> dict:
    bundle = load_bundle(bundle_path)
    ds = heldout_subset(list_labelled_images(data_dir), bundle)
    cache, detector = EmbeddingCache(), create_detector("index")
    raw_thr = float(bundle.calibration.similarity_thresholds["ensemble"])
    halves = None
    per_kind = {}
    thresholds: dict[str, list[float]] = {}
    for kind in kinds:
        embedded = embedded_kind(ds, bundle, kind, cache, detector, seed=0)
        labels = np.asarray(ds.labels)
        idx = np.flatnonzero(embedded.found)
        gi_l, qi_l = first_image_protocol(labels[idx])
        gi, qi = idx[gi_l], idx[qi_l]
        gv = bundle.gallery_vectors({m: v[gi] for m, v in embedded.embeddings.items()},
                                    embedded.detection_probability[gi])
        qv = embedded.embeddings[bundle.query_model][qi]
        g_lab, q_lab = labels[gi], labels[qi]
        if halves is None:  # identities split once, on the clean gallery, in two folds
            ids = np.unique(g_lab)
            rng = np.random.default_rng(0)
            halves = set(rng.permutation(ids)[: len(ids) // 2].tolist())
        half_g = np.array([lab in halves for lab in g_lab])
        half_q = np.array([lab in halves for lab in q_lab])
        res = {}
        for target in targets:
            for score_kind in SCORES:
                key = score_kind if target == "bundle" else f"{score_kind}@{target}"
                # each half's gallery is searched on its own (a gallery of about 400 people)
                rows = {k: np.zeros(len(qi), bool) for k in ("right", "wrong", "unknown", "stranger_named")}
                for side in (True, False):
                    gm, qm = half_g == side, half_q == side
                    s = normalised(score_kind, qv[qm] @ gv.ensemble[gm].T, gv.ensemble[gm], True, cohort)
                    if kind == "clean":
                        # set on the other half's clean gallery: to name strangers as often as the raw
                        # threshold does ("bundle"), or at the target share
                        go, qo = half_g != side, half_q != side
                        raw_o = qv[qo] @ gv.ensemble[go].T
                        rate = (float(outcomes(raw_o, q_lab[qo], g_lab[go], raw_thr)["stranger_named"].mean())
                                if target == "bundle" else float(target))
                        so = normalised(score_kind, raw_o, gv.ensemble[go], True, cohort)
                        thr = (raw_thr if score_kind == "raw" and target == "bundle"
                               else stranger_threshold(so, q_lab[qo], g_lab[go], rate))
                        thresholds.setdefault(key, []).append(thr)
                    thr = thresholds[key][0 if side else 1]
                    o = outcomes(s, q_lab[qm], g_lab[gm], thr)
                    for k in rows:
                        rows[k][qm] = o[k]
                figures = {}
                for k, v in rows.items():
                    m, lo, hi = cluster_bootstrap([v.astype(float)], q_lab, resamples=resamples, seed=0)
                    figures[k] = {"count": int(v.sum()), "share": float(m), "ci95": [float(lo), float(hi)]}
                res[key] = figures
        per_kind[kind] = {"queries": int(len(qi)), "gallery": int(len(gi)), "scores": res}
        logger.info("%s: %s", kind, {s: (res[s]["right"]["count"], res[s]["wrong"]["count"], res[s]["unknown"]["count"],
                                         round(res[s]["stranger_named"]["share"], 3)) for s in res})
    return {"bundle": Path(bundle_path).name, "raw_threshold": raw_thr, "cohort": cohort, "targets": list(targets),
            "thresholds": thresholds, "kinds": per_kind}


def by_gallery_size(data_dir: str, bundle_path: str, sizes=(60, 100, 200, 400, 800), repeats: int = 5) -> dict:
    """Strangers named and right answers against gallery size, clean gallery, with the bundle's
    own thresholds: the raw similarity threshold and its normalised one (``CohortNorm``, with
    its coverage guard on each drawn gallery's mean quality score, as the app applies it)."""
    bundle = load_bundle(bundle_path)
    norm = bundle.calibration.cohort_norm
    ds = heldout_subset(list_labelled_images(data_dir), bundle)
    embedded = embedded_kind(ds, bundle, "clean", EmbeddingCache(), create_detector("index"), seed=0)
    labels = np.asarray(ds.labels)
    idx = np.flatnonzero(embedded.found)
    gi_l, qi_l = first_image_protocol(labels[idx])
    gi, qi = idx[gi_l], idx[qi_l]
    gv = bundle.gallery_vectors({m: v[gi] for m, v in embedded.embeddings.items()}, embedded.detection_probability[gi])
    qv = embedded.embeddings[bundle.query_model][qi]
    g_lab, q_lab = labels[gi], labels[qi]
    raw_thr = float(bundle.calibration.similarity_thresholds["ensemble"])
    rng = np.random.default_rng(0)
    out = {}
    for size in sizes:
        size = min(size, len(gi))
        rows = {"raw": [], "default": [], "raw_right": [], "default_right": []}
        for _ in range(repeats):
            keep = np.sort(rng.choice(len(gi), size, replace=False))
            qm = np.isin(q_lab, g_lab[keep])
            sim = qv[qm] @ gv.ensemble[keep].T
            ql, gl = q_lab[qm], g_lab[keep]
            best_raw = stranger_best(sim, ql, gl)
            rows["raw"].append(float(np.mean(best_raw >= raw_thr)))
            right_pos = sim.argmax(1)
            right = gl[right_pos] == ql
            rows["raw_right"].append(float(np.mean(right & (sim.max(1) >= raw_thr))))
            if norm is not None:
                zs = stranger_best(sim, ql, gl, norm.cohort)
                z_thr = norm.threshold("ensemble", size, gallery_doubt(gv.quality[keep]))  # the app's, guard included
                rows["default"].append(float(np.mean(~unknown_mask(best_raw, zs, raw_thr, z_thr))))
                z = cohort_normalised(sim, list(gl), norm.cohort)
                named = ~unknown_mask(sim.max(1), z, raw_thr, z_thr)
                rows["default_right"].append(float(np.mean(right & named)))
        out[str(size)] = {k: float(np.mean(v)) for k, v in rows.items() if v}
        logger.info("gallery of %d people: %s", size, out[str(size)])
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--bundle", required=True)
    p.add_argument("--kinds", nargs="+", default=list(KINDS))
    p.add_argument("--cohort", type=int, default=50)
    p.add_argument("--targets", nargs="+", default=["bundle", "0.05"],
                   help="'bundle' (name strangers as often as the shipped raw threshold on clean) or shares")
    p.add_argument("--sizes", action="store_true",
                   help="also: strangers named and right answers against gallery size, with the bundle's own thresholds")
    p.add_argument("--json")
    p.add_argument("--sizes-only", action="store_true",
                   help="recompute only the gallery-size figures, into the existing --json study")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if a.sizes_only:
        out = json.loads(Path(a.json).read_text())
        out["by_gallery_size"] = by_gallery_size(a.data_dir, a.bundle)
        Path(a.json).write_text(json.dumps(out, indent=1))
        raise SystemExit(0)
    out = measure(a.data_dir, a.bundle, a.kinds, a.cohort, targets=tuple(a.targets))
    if a.sizes:
        out["by_gallery_size"] = by_gallery_size(a.data_dir, a.bundle)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    print("\n\n".join("\n".join(unknown_table(out, t)) for t in a.targets))
