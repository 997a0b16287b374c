"""The scoreboard says "Unknown" exactly where a search of the gallery does (issue 25).

On a gallery of more than 50 people the app's search decides "Unknown" on the
cohort-normalised score (with the coverage guard) and the bundle's answer rule, not on the
raw similarity threshold. Each leave-one-out decision of ``gallery_scoreboard`` is compared
with what ``Gallery.search_vector`` answers on the gallery without that entry.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cmce.gallery.memory import Gallery
from cmce.method.bundle import load_bundle
from cmce.method.engine import FaceEngine
from cmce.method.scoreboard import gallery_scoreboard
from cmce.storage.records import GalleryRecords, backbone_record


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine(load_bundle())


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _records(engine: FaceEngine, people: int = 64, strangers: int = 16, seed: int = 0) -> GalleryRecords:
    """Two entries of each of ``people`` people and ``strangers`` unlabelled ones; every backbone's
    embedding is the person's centre plus noise of its own (some people noisier than others)."""
    rng = np.random.default_rng(seed)
    who = [p for p in range(people) for _ in range(2)] + list(range(people, people + strangers))
    n = len(who)
    noise = rng.uniform(0.3, 1.6, people + strangers)[who]
    models = [engine.bundle.query_model, *engine.bundle.gallery_models]
    records = {m: backbone_record(m) for m in models}
    embeddings = {}
    for m in models:
        centres = rng.normal(size=(people + strangers, records[m].dim))
        x = centres[who] + noise[:, None] * rng.normal(size=(n, records[m].dim))
        embeddings[records[m].key] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    hashes = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() for i in range(n)]
    labels = [f"person_{p:03d}" if p < people else None for p in who]
    return GalleryRecords(
        entry_id=_objects([f"{h}:0" for h in hashes]), content_hash=_objects(hashes),
        source=_objects([f"photo_{i}.jpg" for i in range(n)]), uri=_objects([None] * n), label=_objects(labels),
        box=np.tile(np.array([10, 10, 90, 110], np.float32), (n, 1)),
        landmarks=np.zeros((n, 5, 2), np.float32), probability=rng.uniform(0.9, 1.0, n).astype(np.float32),
        image_size=np.tile(np.array([120, 140], np.int32), (n, 1)), thumbnail=_objects([None] * n),
        backbones={r.key: r for r in records.values()}, embeddings=embeddings,
        present={r.key: np.ones(n, bool) for r in records.values()})


@pytest.mark.parametrize("unknown_by", ["normalised", "similarity"])
def test_every_scoreboard_decision_is_what_a_search_answers(engine, unknown_by):
    records = _records(engine)
    gallery = Gallery.from_records(records, engine)
    people = len({e.label for e in gallery.entries if e.label})
    assert people > engine.bundle.calibration.cohort_norm.cohort  # the normalised threshold applies
    board = gallery_scoreboard(gallery, unknown_by=unknown_by)
    assert board.queries == 2 * people
    queries = gallery.vectors.views["query"]
    rng = np.random.default_rng(1)
    picked = rng.choice(len(board.rows), size=16, replace=False)  # 16 per-query galleries keep the test fast
    unknowns = 0
    for r in picked:
        i = int(board.rows[r])
        without = Gallery.from_records(records.take(np.flatnonzero(np.arange(len(records)) != i)), engine)
        answers = without.search_vector(queries[i], k=5, query_probability=float(records.probability[i]),
                                        unknown_by=unknown_by)
        for view, (hit, unknown) in board.decisions.items():
            said = answers[view]
            assert bool(unknown[r]) == said.unknown, (view, i, said.answer.reason)
            best = said.matches[0].label if said.matches else None
            assert bool(hit[r]) == (best == records.label[i]), (view, i)
            unknowns += said.unknown
    assert unknowns > 0  # the comparison met both answers


def test_the_normalised_rule_changes_decisions_the_raw_threshold_would_make(engine):
    gallery = Gallery.from_records(_records(engine, seed=2), engine)
    normalised = gallery_scoreboard(gallery)
    raw = gallery_scoreboard(gallery, unknown_by="similarity")
    assert any((normalised.decisions[v][1] != raw.decisions[v][1]).any() for v in normalised.decisions)
