"""CompactIndex: approximate IVF-PQ search re-ranked exactly from a float16 vector file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cmce.errors import CmceError, GalleryError
from cmce.search import compact
from cmce.search.base import VectorSearch
from cmce.search.compact import COMPACT_FROM, CompactIndex, choose_index_kind
from cmce.search.compact_config import CompactConfig, compact_nlist
from cmce.search.vector_file import VectorFileWriter, open_vector_file

DIM = 128
N = 10_000


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(n: int, rng: np.random.Generator, identities: int = 1_000) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``identities`` random centroids (a few photos per identity)."""
    centroids = rng.standard_normal((identities, DIM))
    label = rng.integers(0, identities, size=n)
    return _unit(centroids[label] + 0.4 * rng.standard_normal((n, DIM))), centroids


def _exact(vectors: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None = None):
    """Brute-force top-k over the float16 rows, scores as float32 of float16."""
    scores = q @ np.asarray(vectors, dtype=np.float32).T
    if mask is not None:
        scores[:, ~mask] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t[t >= 0])) / (t >= 0).sum() for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    rng = np.random.default_rng(0)
    x, centroids = _clustered(N, rng)
    folder = tmp_path_factory.mktemp("compact")
    path = folder / "vectors.npy"
    with VectorFileWriter(path, count=N, dim=DIM) as out:
        for chunk in np.array_split(x, 7):
            out.write(chunk)
    index = CompactIndex.build(path, build_threads=1)
    label = rng.integers(0, len(centroids), size=40)
    queries = _unit(centroids[label] + 0.4 * rng.standard_normal((40, DIM)))
    return index, path, queries


def test_vector_file_round_trip(built):
    index, path, _ = built
    stored = open_vector_file(path, DIM)
    assert stored.shape == (N, DIM) and stored.dtype == np.float16
    norms = np.linalg.norm(np.asarray(stored, np.float32), axis=1)
    assert np.abs(norms - 1).max() < 1e-3
    assert len(index) == N and index.dim == DIM
    assert index.nlist == compact_nlist(N)
    assert isinstance(index, VectorSearch) and 0 < index.memory_bytes() < N * DIM  # well under 1 B/dim


def test_recall_and_exact_scores(built):
    index, path, q = built
    result = index.search(q, k=10)
    vectors = open_vector_file(path)
    truth_scores, truth = _exact(vectors, q, 10)
    assert _recall(result.positions, truth) >= 0.95
    # every returned score is the exact float32 score of the stored float16 row
    rows = np.asarray(vectors, np.float32)[result.positions]
    np.testing.assert_allclose(result.scores, np.einsum("qkd,qd->qk", rows, q), rtol=0, atol=1e-5)
    assert (np.diff(result.scores, axis=1) <= 0).all()
    # the top hit is found for (almost) every query, with the exact score
    same = result.positions[:, 0] == truth[:, 0]
    assert same.mean() >= 0.95
    np.testing.assert_allclose(result.scores[same, 0], truth_scores[same, 0], atol=1e-5)


def test_mask_excludes_and_keeps_recall(built, monkeypatch):
    index, path, q = built
    monkeypatch.setattr(compact, "COMPACT_EXACT_BELOW", 0)  # 10k entries: no exact shortcut
    mask = np.random.default_rng(1).random(N) >= 0.1
    result = index.search(q, k=10, mask=mask)
    assert (result.positions >= 0).all()
    assert mask[result.positions].all()
    _, truth = _exact(open_vector_file(path), q, 10, mask)
    assert _recall(result.positions, truth) >= 0.95


def test_sparse_mask_is_exact_and_fills_min_k_selected(built):
    index, path, q = built
    mask = np.zeros(N, bool)
    mask[[3, 500, 4_000, 9_999]] = True
    result = index.search(q, k=10, mask=mask)
    assert ((result.positions >= 0).sum(axis=1) == 4).all()
    assert mask[result.positions[:, :4]].all()
    assert (result.positions[:, 4:] == -1).all() and np.isneginf(result.scores[:, 4:]).all()
    mask[np.random.default_rng(2).choice(N, 300, replace=False)] = True
    truth_scores, truth = _exact(open_vector_file(path), q, 10, mask)
    result = index.search(q, k=10, mask=mask)
    np.testing.assert_array_equal(result.positions, truth)
    np.testing.assert_allclose(result.scores, truth_scores, atol=1e-6)


def test_sparse_mask_through_the_approximate_path(built, monkeypatch):
    """A selector that leaves the probed lists under-filled falls back to probing every list."""
    index, _, q = built
    monkeypatch.setattr(compact, "COMPACT_EXACT_BELOW", 0)
    mask = np.zeros(N, bool)
    mask[np.random.default_rng(3).choice(N, 6, replace=False)] = True
    result = index.search(q, k=10, mask=mask, nprobe=1)
    assert ((result.positions >= 0).sum(axis=1) == 6).all()
    assert mask[result.positions[:, :6]].all()


def test_mask_excluding_every_near_entry_still_fills_k(built, caplog, monkeypatch):
    """A mask kept after the scan that removes all fetched candidates falls back to a masked search."""
    index, path, q = built
    monkeypatch.setattr(compact, "COMPACT_EXACT_BELOW", 0)  # 10k entries: no exact shortcut
    caplog.set_level("DEBUG", logger="cmce.search.compact")
    vectors = open_vector_file(path)
    scores = q[:1] @ np.asarray(vectors, np.float32).T
    mask = np.ones(N, bool)
    mask[np.argsort(-scores[0])[: N // 2]] = False  # the half of the entries nearest to the query
    assert mask.sum() >= compact.COMPACT_POSTFILTER_FRACTION * N  # the post-filter path
    # the one probed list (about 40 entries) keeps fewer than k selected entries
    result = index.search(q[:1], k=50, mask=mask, nprobe=1)
    assert "under-filled" in caplog.text
    assert (result.positions >= 0).all() and mask[result.positions].all()
    _, truth = _exact(vectors, q[:1], 50, mask)
    assert _recall(result.positions, truth) >= 0.9


def test_threshold_drops_hits_below(built):
    index, path, q = built
    plain = index.search(q, k=10)
    threshold = float(np.median(plain.scores[:, 4]))
    result = index.search(q, k=10, threshold=threshold)
    kept = result.positions >= 0
    assert (result.scores[kept] >= threshold).all()
    assert 0 < kept.sum() < kept.size
    expected = np.where(plain.scores >= threshold, plain.positions, -1)
    np.testing.assert_array_equal(result.positions, expected)
    with pytest.raises(CmceError, match="threshold"):
        index.search(q, k=10, threshold=float("nan"))


def test_empty_and_padding(built):
    index, _, q = built
    assert index.search(q[:0], k=5).positions.shape == (0, 5)
    none = index.search(q[:2], k=3, mask=np.zeros(N, bool))
    assert (none.positions == -1).all()


def test_save_load_round_trip(built, tmp_path):
    index, path, q = built
    folder = index.save(tmp_path / "index")
    loaded = CompactIndex.load(folder)
    assert len(loaded) == N and loaded.nlist == index.nlist and loaded.build_stats is None
    a, b = index.search(q, k=10), loaded.search(q, k=10)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_load_checks_the_vector_file(built, tmp_path):
    index, path, _ = built
    vectors = tmp_path / "vectors.npy"
    shutil.copy(path, vectors)
    moved = CompactIndex(index._index, vectors, index.config)
    folder = moved.save(tmp_path / "index")
    # the folder and the vector file move together: the path is relative
    shutil.move(tmp_path / "index", tmp_path / "moved" / "index")
    shutil.move(vectors, tmp_path / "moved" / "vectors.npy")
    folder = tmp_path / "moved" / "index"
    assert len(CompactIndex.load(folder)) == N
    vectors = tmp_path / "moved" / "vectors.npy"
    data = vectors.read_bytes()
    vectors.write_bytes(data[: len(data) - 4096])
    with pytest.raises(GalleryError, match="truncated or replaced"):
        CompactIndex.load(folder)
    vectors.write_bytes(data[:-2] + b"\x00\x00")
    with pytest.raises(GalleryError, match="fingerprint"):
        CompactIndex.load(folder)
    vectors.unlink()
    with pytest.raises(GalleryError, match="missing"):
        CompactIndex.load(folder)
    with pytest.raises(GalleryError, match="no compact index"):
        CompactIndex.load(tmp_path / "nowhere")


def test_search_errors(built):
    index, _, q = built
    with pytest.raises(CmceError, match="L2-normalised"):
        index.search(q * 2, k=10)
    with pytest.raises(CmceError, match="dimension"):
        index.search(q[:, :64], k=10)
    with pytest.raises(CmceError, match="k must be"):
        index.search(q, k=0)
    with pytest.raises(CmceError, match="mask"):
        index.search(q, k=10, mask=np.ones(N - 1, bool))
    with pytest.raises(CmceError, match="mask"):
        index.search(q, k=10, mask=np.ones(N, int))


def test_vector_file_errors(tmp_path):
    rng = np.random.default_rng(4)
    x = _unit(rng.standard_normal((100, 16)))
    with pytest.raises(GalleryError, match="L2-normalised"):
        with VectorFileWriter(tmp_path / "v.npy", count=100, dim=16) as out:
            out.write(x * 3)
    assert not (tmp_path / "v.npy").exists()
    assert not list(tmp_path.glob(".v.npy.*"))
    with pytest.raises(GalleryError, match="only 50 of 100"):
        with VectorFileWriter(tmp_path / "v.npy", count=100, dim=16) as out:
            out.write(x[:50])
    assert not (tmp_path / "v.npy").exists()
    with pytest.raises(GalleryError, match="no vector file"):
        CompactIndex.build(tmp_path / "missing.npy")
    np.save(tmp_path / "f32.npy", x)
    with pytest.raises(GalleryError, match="float16"):
        CompactIndex.build(tmp_path / "f32.npy")
    np.save(tmp_path / "bad.npy", (x * 2).astype(np.float16))
    with pytest.raises(GalleryError, match="L2-normalised"):
        CompactIndex.build(tmp_path / "bad.npy", CompactConfig(factory="IVF{nlist},PQ4", nlist=4))
    (tmp_path / "short.npy").write_bytes((tmp_path / "f32.npy").read_bytes()[:300])
    with pytest.raises(GalleryError, match="truncated or corrupt"):
        open_vector_file(tmp_path / "short.npy")


def test_choose_index_kind_and_nlist():
    assert choose_index_kind(0) == "exact"
    assert choose_index_kind(COMPACT_FROM - 1) == "exact"
    assert choose_index_kind(COMPACT_FROM) == "compact"
    assert compact_nlist(1_000_000) == 2048
    assert compact_nlist(10_000_000) == 8192
    assert compact_nlist(10) == 64
    with pytest.raises(GalleryError):
        choose_index_kind(-1)
    with pytest.raises(GalleryError, match="factory"):
        CompactConfig(factory="")


def _rerank_loop(index: CompactIndex, q: np.ndarray, candidates: np.ndarray, k: int):
    """The re-rank as it was before it was vectorised: one inner product per query in a Python loop."""
    valid = candidates >= 0
    flat = np.unique(candidates[valid])
    rows = np.asarray(index.vectors[flat], dtype=np.float32)
    where = np.searchsorted(flat, np.where(valid, candidates, flat[0] if flat.size else 0))
    exact = np.full(candidates.shape, -np.inf, dtype=np.float32)
    for i in range(len(q)):
        exact[i, valid[i]] = rows[where[i, valid[i]]] @ q[i]
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(exact, order, axis=1)
    ids = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
    ids[~np.isfinite(scores)] = -1
    return scores, ids


def _same_hits(got, want) -> None:
    """Same positions in the same order; scores equal up to float32 summation order (the loop used BLAS)."""
    np.testing.assert_array_equal(got[1], want[1])
    assert np.array_equal(np.isneginf(got[0]), np.isneginf(want[0]))
    finite = np.isfinite(want[0])
    np.testing.assert_allclose(got[0][finite], want[0][finite], rtol=0, atol=1e-6)


@pytest.mark.parametrize("table_share", [8, 0])
def test_vectorised_rerank_returns_what_the_loop_did(built, monkeypatch, table_share):
    """Random candidate lists with holes (-1), repeats across queries, an all-empty row, k over R;
    the rows found through a table over the positions (many candidates) or by sorting them (few)."""
    index, _, q = built
    monkeypatch.setattr(compact, "_RERANK_TABLE_SHARE", table_share)
    rng = np.random.default_rng(7)
    candidates = rng.integers(0, N, size=(len(q), 64))
    candidates[rng.random(candidates.shape) < 0.2] = -1
    candidates[3] = -1
    candidates[5, :] = candidates[6, :]
    for k in (1, 10, 64, 70):
        got = index._rerank(q, candidates.copy(), k)
        want = _rerank_loop(index, q, candidates.copy(), k)
        _same_hits(got, want)
        assert (got[1][3] == -1).all() and np.isneginf(got[0][3]).all()
    # distinct scores of a row are far further apart than the summation error: the order is not a coin toss
    for row in want[0]:
        distinct = np.unique(row[np.isfinite(row)])
        assert distinct.size < 2 or np.diff(distinct).min() > 2e-6
    nothing = np.full((2, 5), -1, dtype=np.int64)
    _same_hits(index._rerank(q[:2], nothing, 3), _rerank_loop(index, q[:2], nothing, 3))


@pytest.mark.parametrize("keep", [None, 0.9, 0.3, 0.003])
def test_searches_through_the_vectorised_rerank_match_the_loop(built, monkeypatch, keep):
    """Whole searches (no mask; a mask kept after the scan; a selector; an under-filled selector
    that probes every list), with and without a threshold, equal the loop's."""
    index, _, q = built
    monkeypatch.setattr(compact, "COMPACT_EXACT_BELOW", 0)  # every mask through the approximate path
    mask = None if keep is None else np.random.default_rng(11).random(N) < keep
    for threshold in (None, 0.3):
        kwargs = dict(k=20, mask=mask, threshold=threshold, nprobe=2, rerank=128)
        got = index.search(q, **kwargs)
        with monkeypatch.context() as m:
            m.setattr(CompactIndex, "_rerank", _rerank_loop)
            want = index.search(q, **kwargs)
        _same_hits((got.scores, got.positions), (want.scores, want.positions))
        if mask is not None:
            assert mask[got.positions[got.positions >= 0]].all()


def test_inner_products_by_index_worked_example() -> None:
    q = np.array([[1, 0]], np.float32)
    rows = np.array([[0.6, 0.8], [0, 1]], np.float32)
    got = compact._inner_products_by_index(q, rows, np.array([[1, -1, 0]]))
    np.testing.assert_allclose(got, [[0.0, -np.inf, 0.6]], rtol=0, atol=1e-7)
    assert np.isneginf(compact._inner_products_by_index(q, rows[:0], np.full((1, 2), -1))).all()
