"""A user's own gallery: the scoreboard's cost, the download -> restore round trip, the verdict's cost.

Builds real galleries of lfw-train faces without running a model: the subject face and the
raw embeddings of each photo come from the embedding cache (``cmce.models.embed``), the
thumbnails are cut from the photos, and ``Gallery.from_records`` re-projects them into the
default bundle's space (what a restored gallery does). Photos are taken person by person
(sorted), keeping people with two or more photos, so that the scoreboard has queries.

Then, with the default bundle:
  * ``gallery_scoreboard`` (every column's leave-one-out Recall@1 and Unknown rate) on
    ``--scoreboard-faces`` faces: median wall time over ``--repeats`` calls;
  * ``export_gallery`` and ``import_gallery`` of the first ``--restore-faces`` faces: median
    times, the archive's size, and checks that the restored gallery holds the same
    vectors and answers ``--queries`` searches identically, with the engine's detector
    and backbones replaced by functions that fail (so no photo can be read, no model run);
  * one search (``Gallery.search_vector``, every view) against what the app's search handler
    adds for the verdict (``searchable_labels`` of the gallery, then ``query_verdict``).

Usage (from the repo root; the machine may be shared: medians, and ratios in one run):
    PYTHONPATH=. python benchmarks/bench_keep.py ../shared/data/lfw-train --json docs/bench-keep.json
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import machine, median_ms  # noqa: E402

logger = logging.getLogger("bench_keep")


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def lfw_records(data_dir: str, faces: int, models: list[str]):
    """GalleryRecords of the first ``faces`` subject faces of people with 2+ photos (cached embeddings)."""
    from cmce.io.datasets import list_labelled_images
    from cmce.models.embed import EmbeddingCache, embed_files
    from cmce.storage.records import GalleryRecords, backbone_record

    ds = list_labelled_images(data_dir)
    labels = np.asarray(ds.labels)
    counts = {lab: int((labels == lab).sum()) for lab in set(ds.labels)}
    paths = [p for p, lab in zip(ds.paths, ds.labels) if counts[lab] >= 2][: int(faces * 1.05) + 10]
    emb = embed_files(paths, models, cache=EmbeddingCache())
    found = [i for i, f in enumerate(emb.faces) if f is not None][:faces]
    thumbs, hashes = [], []
    for i in found:
        data = Path(paths[i]).read_bytes()
        hashes.append(hashlib.sha256(data).hexdigest())
        with Image.open(io.BytesIO(data)) as img:
            x1, y1, x2, y2 = emb.faces[i].box
            crop = img.convert("RGB").crop((int(x1), int(y1), int(x2), int(y2)))
            crop.thumbnail((96, 96))
            buf = io.BytesIO()
            crop.save(buf, format="JPEG", quality=85)
            thumbs.append(buf.getvalue())
    fs = [emb.faces[i] for i in found]
    n = len(found)
    records = {m: backbone_record(m) for m in models}
    return GalleryRecords(
        entry_id=_objects([f"{h}:0" for h in hashes]), content_hash=_objects(hashes),
        source=_objects([Path(paths[i]).name for i in found]), uri=_objects([None] * n),
        label=_objects([str(Path(paths[i]).parent.name) for i in found]),
        box=np.array([f.box for f in fs], np.float32).reshape(n, 4),
        landmarks=np.array([f.landmarks for f in fs], np.float32).reshape(n, 5, 2),
        probability=np.array([f.probability for f in fs], np.float32),
        image_size=np.array([f.image_size for f in fs], np.int32).reshape(n, 2),
        thumbnail=_objects(thumbs),
        backbones={r.key: r for r in records.values()},
        embeddings={records[m].key: np.asarray(emb.embeddings[m][found], np.float32) for m in models},
        present={records[m].key: np.ones(n, bool) for m in models},
    )


def _fail(*args, **kwargs):
    raise RuntimeError("a photo was read or a backbone ran while restoring")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir")
    ap.add_argument("--scoreboard-faces", type=int, default=2000)
    ap.add_argument("--restore-faces", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from cmce.gallery.memory import Gallery
    from cmce.gallery.portable import export_gallery, import_gallery
    from cmce.gallery.verdict import query_verdict, searchable_labels
    from cmce.gallery.results import QueryResult
    from cmce.method.bundle import default_bundle_path, load_bundle
    from cmce.method.engine import FaceEngine
    from cmce.method.scoreboard import gallery_scoreboard

    bundle = load_bundle()
    engine = FaceEngine(bundle)
    models = [bundle.query_model, *bundle.gallery_models]
    records = lfw_records(args.data_dir, max(args.scoreboard_faces, args.restore_faces), models)

    big = Gallery.from_records(records.take(np.arange(min(args.scoreboard_faces, len(records)))), engine)
    board = gallery_scoreboard(big)
    board_ms = median_ms(lambda: gallery_scoreboard(big), args.repeats, warmup=1)
    print(f"scoreboard of {len(big)} faces ({board.queries} queries, {board.people} people): "
          f"median {board_ms:.1f} ms over {args.repeats}")
    for c in board.columns:
        print(f"  {c.view:>16}: Recall@1 {100 * c.recall_at_1:.1f}%, Unknown {100 * c.unknown_rate:.1f}%, "
              f"right where the ensemble was not {c.right_where_ensemble_missed}, "
              f"ensemble right where it was not {c.missed_where_ensemble_right}")

    small = Gallery.from_records(records.take(np.arange(min(args.restore_faces, len(records)))), engine)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(small), size=min(args.queries, len(small)), replace=False)
    queries = small.vectors.views["query"][small.positions][rows]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_ms = median_ms(lambda: export_gallery(small, tmp / "g.zip"), args.repeats)
        archive = export_gallery(small, tmp / "g.zip")
        for method in ("detect", "embed_gallery_faces", "embed_gallery_batch", "embed_query_face"):
            setattr(engine, method, _fail)
        restore_ms = median_ms(lambda: import_gallery(archive, engine, tmp), args.repeats, warmup=1)
        back = import_gallery(archive, engine, tmp).gallery
        size = archive.stat().st_size
    same_vectors = bool(np.array_equal(back.vectors.ensemble, small.vectors.ensemble))
    identical = all(
        [(m.position, m.label, m.score) for m in a.matches] == [(m.position, m.label, m.score) for m in b.matches]
        and a.unknown == b.unknown
        for q in queries for a, b in zip(small.search_vector(q, k=5).values(), back.search_vector(q, k=5).values()))
    print(f"restore of {len(small)} faces: export median {export_ms:.0f} ms, restore median {restore_ms:.0f} ms "
          f"over {args.repeats}; archive {size / 2**20:.2f} MiB; identical vectors {same_vectors}, identical "
          f"answers to {len(queries)} searches {identical}; no photo read, no model run")

    q = queries[0]
    views = small.search_vector(q, k=5)
    result = QueryResult((), 0, views, bundle.calibration.open_set_far)
    search_ms = median_ms(lambda: small.search_vector(q, k=5), args.repeats * 10, warmup=2)
    verdict_ms = median_ms(  # as the app's search handler does it: the searchable labels, then the verdict
        lambda: query_verdict(result, bundle.query_model, small.entries[0].label, searchable_labels(small)),
        args.repeats * 10, warmup=2)
    print(f"one search (every view, {len(small)} faces) median {search_ms:.2f} ms; its verdict {verdict_ms:.3f} ms "
          f"({100 * verdict_ms / search_ms:.1f}% of the search)")
    print(machine())
    if args.json:
        doc = {"bundle": default_bundle_path().name, "query_model": bundle.query_model, "machine": machine(),
               "repeats": args.repeats,
               "scoreboard": {"faces": len(big), **board.as_dict(), "median_ms": round(board_ms, 2)},
               "restore": {"faces": len(small), "export_median_ms": round(export_ms, 1),
                           "restore_median_ms": round(restore_ms, 1), "archive_bytes": size,
                           "identical_vectors": same_vectors, "identical_answers": identical,
                           "searches_compared": len(queries), "photos_read": 0},
               "verdict": {"search_median_ms": round(search_ms, 3), "verdict_median_ms": round(verdict_ms, 4)}}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
