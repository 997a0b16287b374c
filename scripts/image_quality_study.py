"""Do the image-quality inputs predict a wrong answer beyond what the answer rules already see? (issue 22)

On the path the app uses (``Gallery.add_images``, one search per query; the held-out
protocol of ``scripts/app_path_answers.py``), every query's top-1 answer of the CMCE
ensemble (no threshold, no rule) is right or wrong. Its inputs:

- ``query``: top-1 similarity, margin to the best other person, the query face's detector doubt
  (the answer rule ``query``);
- ``combined``: + the top-1 entry's quality score and members' disagreement (the rule ``combined``:
  the gallery's uncertainty);
- ``+entry image``: + the top-1 entry's face size (log eye distance in pixels), sharpness,
  exposure, distance of exposure from mid-grey, and whether a second-chance pass found it
  (``cmce.faces.image_quality``, stored in the shards);
- ``+query image``: + the same three measures of the query face.

Each is a logistic regression of "wrong" fitted out of fold (5 folds of query identities,
``quality.fit_logistic``), scored by the accuracy of the answered queries when the least
confident 5, 10 and 20% abstain, with 95% bootstrap intervals over query identities of the
paired differences (``metrics.intervals.cluster_bootstrap``).

    python scripts/image_quality_study.py ../shared/data/lfw-train --bundle assets/bundles/facenet-query \\
        --gallery-degrade mix:0.6 [--json out.json]
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

from app_path_answers import heldout_gallery_items  # noqa: E402

from cmce.answer_metrics import accuracy_at_abstention  # noqa: E402
from cmce.faces.image_quality import face_image_quality  # noqa: E402
from cmce.gallery.ingest import GalleryLimits  # noqa: E402
from cmce.gallery.memory import Gallery  # noqa: E402
from cmce.gallery.searchable import detect_query  # noqa: E402
from cmce.method.bundle import load_bundle  # noqa: E402
from cmce.method.engine import FaceEngine  # noqa: E402
from cmce.method.quality import detection_doubt, fit_logistic  # noqa: E402
from cmce.metrics.intervals import cluster_bootstrap  # noqa: E402

SETS = {
    "query": ("similarity", "margin", "query_doubt"),
    "combined": ("similarity", "margin", "query_doubt", "entry_quality", "entry_disagreement"),
    "+entry image": ("similarity", "margin", "query_doubt", "entry_quality", "entry_disagreement",
                     "entry_log_px", "entry_sharpness", "entry_exposure", "entry_exposure_off", "entry_second_chance"),
    "+query image": ("similarity", "margin", "query_doubt", "entry_quality", "entry_disagreement",
                     "entry_log_px", "entry_sharpness", "entry_exposure", "entry_exposure_off", "entry_second_chance",
                     "query_log_px", "query_sharpness", "query_exposure"),
}
RATES = (0.05, 0.10, 0.20)


def query_records(data_dir: str, bundle_dir: str, degrade: str | None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per answered query: the inputs of ``SETS``, whether the top-1 is wrong, its identity."""
    bundle = load_bundle(bundle_dir)
    items, ds, labels, qi = heldout_gallery_items(data_dir, bundle, degrade)
    engine = FaceEngine(bundle)
    gallery = Gallery(engine, GalleryLimits(max_files=len(items) + 1, max_entries=10 * len(items)))
    gallery.add_images(items)
    rows: list[dict[str, float]] = []
    wrong, ids = [], []
    for i in qi:
        photo = detect_query(engine, ds.paths[i], name=Path(ds.paths[i]).name)
        if not photo.faces:
            continue
        face = photo.faces[0]
        q = engine.embed_query_face(photo.image, face)
        view = gallery.search_vector(q, k=10, query_probability=face.probability, answer_rule="none",
                                     unknown_by="similarity")["ensemble"]
        if not view.matches:
            continue
        top = view.matches[0]
        other = [m.score for m in view.matches[1:] if m.label != top.label]
        entry = gallery.entries[top.position]
        eq, qq = entry.image_quality, face_image_quality(photo.image, face)
        rows.append({
            "similarity": top.score, "margin": top.score - (other[0] if other else -1.0),
            "query_doubt": float(detection_doubt(np.array([face.probability]))[0]) / 6.0,
            "entry_quality": top.quality, "entry_disagreement": top.uncertainty,
            "entry_log_px": float(np.log(eq.face_px)), "entry_sharpness": eq.sharpness,
            "entry_exposure": eq.exposure, "entry_exposure_off": abs(eq.exposure - 0.5),
            "entry_second_chance": float(entry.face.detection_pass != "first"),
            "query_log_px": float(np.log(qq.face_px)), "query_sharpness": qq.sharpness, "query_exposure": qq.exposure,
        })
        wrong.append(top.label != labels[i])
        ids.append(labels[i])
    feats = {k: np.array([r[k] for r in rows], np.float64) for k in rows[0]}
    return feats, np.array(wrong), np.array(ids)


def out_of_fold_wrong_chance(x: np.ndarray, wrong: np.ndarray, ids: np.ndarray, folds: int = 5,
                             seed: int = 0) -> np.ndarray:
    """(Q,) each query's predicted chance of a wrong top-1, fitted without its identity's fold."""
    people = np.unique(ids)
    fold_of = dict(zip(people, np.random.default_rng(seed).permutation(len(people)) % folds))
    fold = np.array([fold_of[p] for p in ids])
    out = np.empty(len(wrong))
    for k in range(folds):
        test, train = fold == k, fold != k
        mean = np.nanmean(x[train], axis=0)
        xs = np.where(np.isnan(x), mean, x)
        scale = np.where(xs[train].std(axis=0) > 1e-9, xs[train].std(axis=0), 1.0)
        z = (xs - mean) / scale
        coef, b = fit_logistic(z[train], wrong[train].astype(float), np.ones(int(train.sum())))
        out[test] = 1.0 / (1.0 + np.exp(-(z[test] @ coef + b)))
    return out


def study(feats: dict[str, np.ndarray], wrong: np.ndarray, ids: np.ndarray) -> dict:
    """Accuracy of answered queries per input set and abstention rate, and the paired gains."""
    conf = {name: 1.0 - out_of_fold_wrong_chance(np.stack([feats[f] for f in cols], 1), wrong, ids)
            for name, cols in SETS.items()}
    out: dict = {"queries": int(len(wrong)), "wrong": int(wrong.sum()), "rates": list(RATES), "accuracy": {},
                 "gains": []}
    for name, c in conf.items():
        out["accuracy"][name] = [float(np.nanmean(accuracy_at_abstention(c, wrong, r))) for r in RATES]
    for base, richer in (("query", "combined"), ("combined", "+entry image"), ("combined", "+query image"),
                         ("query", "+query image")):
        for r in RATES:
            a = accuracy_at_abstention(conf[base], wrong, r)
            b = accuracy_at_abstention(conf[richer], wrong, r)
            d, lo, hi = cluster_bootstrap([a, b], ids, lambda x, y: y - x, resamples=1000, seed=0)
            out["gains"].append({"from": base, "to": richer, "rate": r, "gain": d, "ci95": [lo, hi]})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--bundle", required=True)
    p.add_argument("--gallery-degrade", default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    feats, wrong, ids = query_records(a.data_dir, a.bundle, a.gallery_degrade)
    res = {"bundle": Path(a.bundle).name, "gallery": a.gallery_degrade or "clean", **study(feats, wrong, ids)}
    print(f"{res['bundle']}, gallery {res['gallery']}: {res['queries']} queries, {res['wrong']} wrong top-1")
    print("accuracy of answered at " + ", ".join(f"{100 * r:.0f}%" for r in RATES) + " abstention:")
    for name, acc in res["accuracy"].items():
        print(f"  {name:14s} " + "  ".join(f"{100 * v:.2f}" for v in acc))
    for g in res["gains"]:
        print(f"  {g['to']} - {g['from']} at {100 * g['rate']:.0f}%: {100 * g['gain']:+.2f} "
              f"({100 * g['ci95'][0]:+.2f} to {100 * g['ci95'][1]:+.2f})")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
