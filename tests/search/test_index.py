"""Tests for cmce.search.index: VectorIndex vs brute-force numpy top-k, masks, removal, files."""

from __future__ import annotations

import dataclasses
import threading

import faiss
import numpy as np
import pytest

from cmce.errors import CmceError, GalleryError
from cmce.search.base import SearchHit, SearchResult, VectorSearch
from cmce.search.index import VectorIndex

N, D, Q, K = 5_000, 64, 40, 10


def _unit(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_force(queries: np.ndarray, gallery: np.ndarray, k: int, selected=None):
    """Reference top-k: (Q, k) positions and scores, -1 / -inf past the selected count."""
    sims = queries.astype(np.float64) @ gallery.astype(np.float64).T
    if selected is not None:
        sims[:, ~selected] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(sims, order, axis=1)
    order[~np.isfinite(scores)] = -1
    return order, scores


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(set(f[f >= 0]) & set(t[t >= 0])) for f, t in zip(found, truth)]
    return sum(hits) / max(1, int((truth >= 0).sum()))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return _unit(rng, N), _unit(rng, Q)


@pytest.fixture(scope="module")
def indexes(data):
    """One flat and one HNSW index over the same 5k vectors (never mutated)."""
    gallery, _ = data
    built = {}
    for kind in ("flat", "hnsw"):
        index = VectorIndex(D, kind=kind)
        index.add(gallery)
        built[kind] = index
    return built


def test_vector_index_is_a_vector_search(indexes):
    """The one interface: dim, len, search, memory_bytes, save/load (and nothing archive-specific)."""
    for index in indexes.values():
        assert isinstance(index, VectorSearch)
        assert (index.dim, len(index)) == (D, N)
        assert index.memory_bytes() == index.vectors.nbytes == N * D * 4  # what an archive reports


# --------------------------------------------------------------------------- #
# exact search
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("num_queries", [1, 5, 200])  # 200: past the BLAS switch
def test_flat_equals_brute_force(data, indexes, num_queries):
    gallery, _ = data
    queries = _unit(np.random.default_rng(num_queries), num_queries)
    before = faiss.cvar.distance_compute_blas_threshold, faiss.omp_get_max_threads()
    result = indexes["flat"].search(queries, k=K)
    assert (faiss.cvar.distance_compute_blas_threshold, faiss.omp_get_max_threads()) == before
    positions, scores = _brute_force(queries, gallery, K)
    np.testing.assert_array_equal(result.positions, positions)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)
    assert result.positions.dtype == np.int64 and result.scores.dtype == np.float32


def test_all_threads_gives_same_results(data):
    gallery, queries = data
    index = VectorIndex(D, kind="flat", search_threads=None)
    index.add(gallery)
    for batch in (queries[:1], queries):
        np.testing.assert_array_equal(
            index.search(batch, k=K).positions, _brute_force(batch, gallery, K)[0]
        )


def test_hnsw_recall_at_10(data, indexes):
    gallery, _ = data
    queries = _unit(np.random.default_rng(1), 200)
    truth, _ = _brute_force(queries, gallery, K)
    result = indexes["hnsw"].search(queries, k=K)
    assert indexes["hnsw"].backend == "hnsw"
    assert _recall(result.positions, truth) >= 0.99


# --------------------------------------------------------------------------- #
# masks and removal
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
@pytest.mark.parametrize("fraction", [0.9, 0.3, 0.0004])  # HNSW graph / exact / 2 entries
def test_mask_excludes_entries(data, indexes, kind, fraction):
    gallery, queries = data
    mask = np.random.default_rng(7).random(N) < fraction
    result = indexes[kind].search(queries, k=K, mask=mask)
    found = result.positions[result.positions >= 0]
    assert mask[found].all(), "a masked-out entry was returned"
    truth, scores = _brute_force(queries, gallery, K, selected=mask)
    assert ((result.positions >= 0) == (truth >= 0)).all()  # -1 exactly past the selected
    if kind == "flat" or fraction < 0.5:  # exact paths
        np.testing.assert_array_equal(result.positions, truth)
        np.testing.assert_allclose(result.scores, scores, atol=1e-5)
    else:
        assert _recall(result.positions, truth) >= 0.99


def test_mask_all_false_gives_no_hits(indexes, data):
    _, queries = data
    result = indexes["flat"].search(queries[:3], k=4, mask=np.zeros(N, dtype=bool))
    assert (result.positions == -1).all() and np.isneginf(result.scores).all()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_remove(kind):
    rng = np.random.default_rng(3)
    gallery, queries = _unit(rng, 2_000), _unit(rng, 20)
    index = VectorIndex(D, kind=kind)
    index.add(gallery)
    top1 = index.search(queries, k=1).positions[:, 0]
    index.remove(top1)
    index.remove(top1[:3])  # twice: allowed, no effect
    assert len(index) == 2_000 and index.num_active == 2_000 - len(set(top1))
    assert not index.active[top1].any()
    result = index.search(queries, k=K)
    assert not np.isin(result.positions, top1).any()
    selected = np.ones(2_000, dtype=bool)
    selected[top1] = False
    truth, _ = _brute_force(queries, gallery, K, selected=selected)
    assert _recall(result.positions, truth) >= 0.99
    with pytest.raises(GalleryError, match="valid positions are 0..1999"):
        index.remove([2_000])
    with pytest.raises(GalleryError, match="ints"):
        index.remove([1.5])


def test_remove_everything_and_masks_combine():
    rng = np.random.default_rng(4)
    gallery = _unit(rng, 50)
    index = VectorIndex(D, kind="flat")
    index.add(gallery)
    index.remove(range(0, 50, 2))
    mask = np.zeros(50, dtype=bool)
    mask[:10] = True  # selects 0..9, of which only the odd ones are active
    result = index.search(gallery[:3], k=K, mask=mask)
    assert set(result.positions[0][result.positions[0] >= 0]) == {1, 3, 5, 7, 9}
    index.remove(range(50))
    assert (index.search(gallery[:3], k=2).positions == -1).all()


def test_k_larger_than_n_pads_with_minus_one():
    rng = np.random.default_rng(5)
    gallery = _unit(rng, 7)
    for kind in ("flat", "hnsw"):
        index = VectorIndex(D, kind=kind)
        assert (index.search(gallery[:2], k=3).positions == -1).all()  # empty index
        index.add(gallery)
        result = index.search(gallery[:2], k=10)
        assert result.positions.shape == (2, 10)
        assert (result.positions[:, 7:] == -1).all() and (result.positions[:, :7] >= 0).all()
        assert np.isneginf(result.scores[:, 7:]).all()
        assert result.positions[0, 0] == 0 and result.scores[0, 0] == pytest.approx(1.0, abs=1e-5)
        assert [hit.position for hit in result.hits(1)][:1] == [1] and len(result.hits(1)) == 7


def test_auto_switches_to_hnsw_and_keeps_positions():
    rng = np.random.default_rng(6)
    gallery, queries = _unit(rng, 1_500), _unit(rng, 20)
    index = VectorIndex(D, exact_threshold=1_000)
    np.testing.assert_array_equal(index.add(gallery[:800]), np.arange(800))
    assert index.backend == "flat"
    np.testing.assert_array_equal(index.add(gallery[800:]), np.arange(800, 1_500))
    assert index.backend == "hnsw"
    truth, _ = _brute_force(queries, gallery, K)
    assert _recall(index.search(queries, k=K).positions, truth) >= 0.99
    np.testing.assert_array_equal(index.vectors, gallery)


# --------------------------------------------------------------------------- #
# persistence
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_save_load_round_trip(tmp_path, kind):
    rng = np.random.default_rng(8)
    gallery, queries = _unit(rng, 3_000), _unit(rng, 30)
    index = VectorIndex(D, kind=kind, ef_search=64)
    index.add(gallery)
    index.remove([5, 17, 2_999])
    mask = rng.random(3_000) < 0.8
    path = tmp_path / "sub" / "gallery.npz"
    index.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["gallery.npz"]  # no temp left
    with np.load(path, allow_pickle=False) as stored:
        assert ("hnsw_graph" in stored.files) == (kind == "hnsw")
    loaded = VectorIndex.load(path)
    assert (loaded.backend, loaded.ef_search, len(loaded)) == (index.backend, 64, 3_000)
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    np.testing.assert_array_equal(loaded.active, index.active)
    for m in (None, mask):
        a, b = index.search(queries, k=K, mask=m), loaded.search(queries, k=K, mask=m)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(loaded.add(gallery[:2]), [3_000, 3_001])  # still usable


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(GalleryError, match="no index file"):
        VectorIndex.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(GalleryError, match="not a readable"):
        VectorIndex.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", vectors=np.zeros((2, 3), np.float32))
    with pytest.raises(GalleryError, match="not a cmce VectorIndex"):
        VectorIndex.load(tmp_path / "other.npz")


# --------------------------------------------------------------------------- #
# validation and results
# --------------------------------------------------------------------------- #


def test_non_unit_vectors_raise():
    rng = np.random.default_rng(9)
    index = VectorIndex(D)
    with pytest.raises(GalleryError, match="L2-normalise"):
        index.add(_unit(rng, 4) * 1.01)
    bad = _unit(rng, 4)
    bad[2, 0] = np.nan
    with pytest.raises(GalleryError, match="finite: row 2"):
        index.add(bad)
    assert len(index) == 0
    index.add(_unit(rng, 4))
    with pytest.raises(CmceError, match="L2-normalise"):
        index.search(np.zeros((1, D), np.float32))


def test_dimension_mismatch_raises_clearly():
    rng = np.random.default_rng(10)
    index = VectorIndex(D)
    with pytest.raises(GalleryError, match=f"dimension 63 but this index holds {D}-d"):
        index.add(_unit(rng, 3, 63))
    with pytest.raises(GalleryError, match="2-D array"):
        index.add(_unit(rng, 1)[0])
    index.add(_unit(rng, 3))
    with pytest.raises(CmceError, match=f"queries have dimension 65 but this index holds {D}-d"):
        index.search(_unit(rng, 1, 65))


def test_bad_arguments_raise():
    rng = np.random.default_rng(11)
    index = VectorIndex(D)
    index.add(_unit(rng, 5))
    with pytest.raises(CmceError, match="mask must be a bool array of shape \\(5,\\)"):
        index.search(_unit(rng, 1), mask=np.ones(4, dtype=bool))
    with pytest.raises(CmceError, match="k must be an int >= 1"):
        index.search(_unit(rng, 1), k=0)
    with pytest.raises(GalleryError, match="kind must be one of"):
        VectorIndex(D, kind="ivf")


def test_search_result_is_immutable_and_validated():
    result = SearchResult(np.array([[0.9, 0.1]]), np.array([[3, -1]]))
    assert np.isneginf(result.scores[0, 1])
    with pytest.raises(ValueError):
        result.scores[0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.positions = np.zeros((1, 2), np.int64)
    with pytest.raises(CmceError, match="end of a row"):
        SearchResult(np.array([[0.9, 0.1]]), np.array([[-1, 3]]))
    with pytest.raises(CmceError, match="non-increasing"):
        SearchResult(np.array([[0.1, 0.9]]), np.array([[1, 3]]))
    assert result.hits(0) == [SearchHit(3, float(np.float32(0.9)))]
    with pytest.raises(CmceError):
        SearchHit(-1, 0.5)


def test_concurrent_searches_and_adds():
    rng = np.random.default_rng(12)
    batches, queries = [_unit(rng, 200) for _ in range(10)], _unit(rng, 5)
    index = VectorIndex(D, kind="flat")
    index.add(batches[0])
    errors = []

    def searcher():
        try:
            for _ in range(20):
                result = index.search(queries, k=5)
                assert (result.positions >= 0).all()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for batch in batches[1:]:
        index.add(batch)
    for t in threads:
        t.join()
    assert not errors and len(index) == 2_000


# --------------------------------------------------------------------------- #
# float16 scan of large galleries (certified exact)
# --------------------------------------------------------------------------- #


@pytest.fixture()
def small_shards(monkeypatch):
    """Float16 shards of 1,500 rows, so 5k vectors make 4 shards scanned in parallel."""
    from cmce.search import scan

    monkeypatch.setattr(scan, "SCAN_SHARD_ROWS", 1_500)


@pytest.mark.parametrize("num_queries", [1, 5, 200])
def test_float16_scan_equals_brute_force(data, small_shards, num_queries):
    gallery, _ = data
    index = VectorIndex(D, kind="flat", scan_from=1_000)
    for chunk in np.array_split(gallery, 7):  # adds that cross shard boundaries
        index.add(chunk)
    assert index._scan is not None and index._scan.count == N and index.scan_shards == 4
    queries = _unit(np.random.default_rng(10 + num_queries), num_queries)
    result = index.search(queries, k=K)
    positions, scores = _brute_force(queries, gallery, K)
    np.testing.assert_array_equal(result.positions, positions)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)
    assert result.positions.dtype == np.int64 and result.scores.dtype == np.float32


@pytest.mark.parametrize("fraction", [0.9, 0.3, 0.0004])
def test_float16_scan_masks_and_removals(data, small_shards, fraction):
    gallery, queries = data
    index = VectorIndex(D, kind="flat", scan_from=0)
    index.add(gallery)
    removed = np.arange(0, N, 11)
    index.remove(removed)
    mask = np.random.default_rng(8).random(N) < fraction
    selected = mask.copy()
    selected[removed] = False
    result = index.search(queries, k=K, mask=mask)
    truth, scores = _brute_force(queries, gallery, K, selected=selected)
    np.testing.assert_array_equal(result.positions, truth)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)


def test_float16_scan_falls_back_when_it_cannot_certify(small_shards):
    """Many exact duplicates tie across the candidate boundary: float32 answers, still exact."""
    rng = np.random.default_rng(4)
    gallery = _unit(rng, 3_000)
    gallery[:200] = gallery[0]  # 200 copies of one vector
    index = VectorIndex(D, kind="flat", scan_from=0)
    index.add(gallery)
    query = gallery[:1]
    result = index.search(query, k=K)
    assert set(result.positions[0]) <= set(range(200))
    np.testing.assert_allclose(result.scores[0], 1.0, atol=1e-5)


def test_float16_scan_survives_save_and_load(tmp_path, data, small_shards):
    gallery, queries = data
    index = VectorIndex(D, scan_from=2_000)
    index.add(gallery)
    index.save(tmp_path / "index.npz")
    loaded = VectorIndex.load(tmp_path / "index.npz", scan_from=2_000)
    assert loaded._scan is not None and loaded._scan.count == N
    np.testing.assert_array_equal(
        loaded.search(queries[:3], k=K).positions, _brute_force(queries[:3], gallery, K)[0]
    )
    assert VectorIndex.load(tmp_path / "index.npz", scan_from=None)._scan is None


def test_float16_scan_postfilter_survives_a_mask_that_hides_the_nearest(data, small_shards):
    """A dense mask that drops exactly the best rows: too few candidates survive the
    post-filter, so the search falls back and is still exact."""
    gallery, queries = data
    index = VectorIndex(D, kind="flat", scan_from=0)
    index.add(gallery)
    query = queries[:1]
    nearest = np.argsort(-(gallery @ query[0]))[:1_000]
    mask = np.ones(N, dtype=bool)
    mask[nearest] = False  # 80% selected: post-filter mode
    result = index.search(query, k=K, mask=mask)
    truth, scores = _brute_force(query, gallery, K, selected=mask)
    np.testing.assert_array_equal(result.positions, truth)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)
