"""The similarity graph of a gallery's faces and the clusterings compared on it.

``knn_graph`` asks a search index (:mod:`cmce.search`: the exact :class:`VectorIndex`, or the
compact :class:`CompactIndex` for large galleries) for each face's ``k`` nearest faces and
keeps the pairs at or above a similarity threshold, as a symmetric sparse matrix of
similarities (no self-loops). Every clustering here takes that matrix and returns one
label per face:

* ``components``: connected components (single linkage at the threshold);
* ``chinese_whispers``: weighted label propagation (Biemann 2006; dlib's
  ``chinese_whispers_clustering`` is the unweighted, one-node-at-a-time original). Here a
  random half of the nodes takes, at each step, the label with the largest summed edge
  weight among its neighbours, which vectorises the update (a fully synchronous update
  can oscillate; random halves cannot lock into a 2-cycle);
* ``louvain`` (networkx) and ``leiden`` (leidenalg, when installed): modularity communities
  of the thresholded graph;
* ``hdbscan`` (scikit-learn) works on the vectors themselves (Euclidean distance of unit
  vectors, monotone in cosine) and picks clusters by stability, without the threshold
  (scikit-learn 1.9.1 fails with ``cluster_selection_epsilon``); noise points become one-face clusters.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from cmce.errors import PeopleError
from cmce.search.base import VectorSearch
from cmce.search.compact import CompactIndex

logger = logging.getLogger(__name__)

__all__ = ["CLUSTERINGS", "chinese_whispers", "cluster", "components", "knn_graph", "search_index"]

CLUSTERINGS = ("chinese_whispers", "components", "louvain", "leiden", "hdbscan")
"""The clusterings :func:`cluster` knows."""

GRAPH_MIN_PROBES = 8
GRAPH_PROBE_DIVISOR = 64
"""A compact index is probed in max(8, nlist / 64) lists per face when the graph is built."""

EXACT_BELOW = 50_000
"""``index="auto"`` searches exactly below this many faces, with the compact index from there."""


def search_index(vectors: np.ndarray, kind: str = "auto", folder: str | Path | None = None) -> VectorSearch:
    """An index over ``vectors`` to find each face's neighbours: ``exact``, ``compact`` or ``auto``.

    The compact index needs its float16 vector file on disk: in ``folder``, or a temporary
    folder that lives as long as the process (the index memory-maps it).
    """
    from cmce.search.index import VectorIndex
    from cmce.search.vector_file import VectorFileWriter

    if kind not in ("auto", "exact", "compact"):
        raise PeopleError(f"index must be 'auto', 'exact' or 'compact'; got {kind!r}")
    if kind == "exact" or (kind == "auto" and len(vectors) < EXACT_BELOW):
        index = VectorIndex(vectors.shape[1], kind="flat")
        index.add(vectors)
        return index
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="cmce-people-"))
    path = folder / "vectors.npy"
    with VectorFileWriter(path, count=len(vectors), dim=vectors.shape[1]) as out:
        for start in range(0, len(vectors), 65_536):
            out.write(vectors[start:start + 65_536])
    return CompactIndex.build(path, build_threads=1)


def knn_graph(vectors: np.ndarray, *, k: int, threshold: float, index: VectorSearch | None = None,
              index_kind: str = "auto", chunk: int = 4_096) -> sp.csr_matrix:
    """Each face's ``k`` nearest faces at similarity >= ``threshold``, symmetrised.

    Args:
        vectors: (N, D) unit rows (the gallery's served vectors).
        k: neighbours asked per face (itself excluded).
        threshold: the lowest cosine similarity kept as an edge.
        index: the gallery's own index over exactly these rows (None: one is built, see
            :func:`search_index`).
        index_kind: the index built when ``index`` is None.
        chunk: faces searched per call.

    Returns:
        (N, N) CSR matrix of similarities, symmetric (an edge found from either side is
        kept, with the larger of the two scores), zero diagonal.
    """
    n = len(vectors)
    if index is None:
        index = search_index(vectors, index_kind)
    if len(index) != n:
        raise PeopleError(f"the index holds {len(index)} positions but {n} vectors were given")
    kk = min(k + 1, n)
    extra = {}
    if isinstance(index, CompactIndex):
        # a face's own people sit in the same few lists: a graph needs far fewer probes and candidates
        # than a single search of an unknown face (the index's defaults: 30% of the lists, 2,048)
        extra = {"nprobe": max(GRAPH_MIN_PROBES, index.nlist // GRAPH_PROBE_DIVISOR), "rerank": 2 * kk}
    rows, cols, vals = [], [], []
    for start in range(0, n, chunk):
        res = index.search(vectors[start:start + chunk], k=kk, **extra)
        pos, sc = res.positions, res.scores
        r = np.repeat(np.arange(start, start + len(pos)), kk).reshape(pos.shape)
        keep = (pos >= 0) & (pos != r) & (sc >= threshold)
        rows.append(r[keep])
        cols.append(pos[keep])
        vals.append(sc[keep])
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals).astype(np.float32)
    g = sp.coo_matrix((v, (r, c)), shape=(n, n)).tocsr()
    g.sum_duplicates()
    return g.maximum(g.T).tocsr()


def components(graph: sp.csr_matrix, **_: object) -> np.ndarray:
    """Connected components of the graph: one label per node."""
    return connected_components(graph, directed=False)[1].astype(np.int64)


def chinese_whispers(graph: sp.csr_matrix, *, iterations: int = 30, seed: int = 0, **_: object) -> np.ndarray:
    """Weighted Chinese whispers (see the module's docstring): one label per node.

    Stops early once an iteration changes no label among the nodes it updated.
    """
    g = graph.tocsr()
    n = g.shape[0]
    labels = np.arange(n, dtype=np.int64)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(g.indptr))
    cols, w = g.indices.astype(np.int64), g.data.astype(np.float64)
    rng = np.random.default_rng(seed)
    quiet = 0
    for _ in range(iterations):
        update = rng.random(n) < 0.5
        sel = update[rows]
        r, lab, ww = rows[sel], labels[cols[sel]], w[sel]
        if not len(r):
            break
        keys, inv = np.unique(r * n + lab, return_inverse=True)
        weight = np.bincount(inv, weights=ww)
        kr, kl = keys // n, keys % n
        order = np.lexsort((kl, -weight, kr))  # per node: heaviest label first, ties to the lowest label
        first = order[np.r_[True, kr[order][1:] != kr[order][:-1]]]
        changed = int(np.count_nonzero(labels[kr[first]] != kl[first]))
        labels[kr[first]] = kl[first]
        quiet = quiet + 1 if changed == 0 else 0
        if quiet >= 3:
            break
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def _louvain(graph: sp.csr_matrix, *, seed: int = 0, **_: object) -> np.ndarray:
    try:
        import networkx as nx
    except ImportError as exc:
        raise PeopleError("the 'louvain' clustering needs networkx (pip install -r requirements-dev.txt)") from exc

    g = nx.from_scipy_sparse_array(graph, edge_attribute="weight")
    labels = np.empty(graph.shape[0], np.int64)
    for i, members in enumerate(nx.community.louvain_communities(g, weight="weight", seed=seed)):
        labels[list(members)] = i
    return labels


def _leiden(graph: sp.csr_matrix, *, seed: int = 0, **_: object) -> np.ndarray:
    try:
        import igraph as ig
        import leidenalg
    except ImportError as exc:
        raise PeopleError("the 'leiden' clustering needs the igraph and leidenalg packages (pip install -r requirements-dev.txt)") from exc
    up = sp.triu(graph, k=1).tocoo()
    g = ig.Graph(n=graph.shape[0], edges=list(zip(up.row.tolist(), up.col.tolist())))
    part = leidenalg.find_partition(g, leidenalg.ModularityVertexPartition, weights=up.data.tolist(), seed=seed)
    return np.asarray(part.membership, np.int64)


def _hdbscan(graph: sp.csr_matrix, *, vectors: np.ndarray, threshold: float, **_: object) -> np.ndarray:
    try:
        from sklearn.cluster import HDBSCAN
    except ImportError as exc:
        raise PeopleError("the 'hdbscan' clustering needs scikit-learn (pip install -r requirements-dev.txt)") from exc
    # scikit-learn 1.9.1 fails inside cluster_selection_epsilon (a TypeError in epsilon_search), so the
    # threshold is not passed: HDBSCAN picks its clusters by stability alone
    lab = HDBSCAN(min_cluster_size=2, min_samples=1, copy=True).fit_predict(np.asarray(vectors, np.float64))
    noise = lab < 0
    lab = lab.astype(np.int64)
    lab[noise] = lab.max() + 1 + np.arange(int(noise.sum()))
    return lab


_METHODS = {"chinese_whispers": chinese_whispers, "components": components, "louvain": _louvain,
            "leiden": _leiden, "hdbscan": _hdbscan}


def cluster(method: str, graph: sp.csr_matrix, *, vectors: np.ndarray, threshold: float, seed: int = 0) -> np.ndarray:
    """One label per node by ``method`` (one of :data:`CLUSTERINGS`)."""
    if method not in _METHODS:
        raise PeopleError(f"method must be one of {', '.join(CLUSTERINGS)}; got {method!r}")
    if graph.shape[0] == 0:
        return np.zeros(0, np.int64)
    return _METHODS[method](graph, vectors=vectors, threshold=threshold, seed=seed)
