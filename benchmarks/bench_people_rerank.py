"""The k-NN graph of bench_people's 100k synthetic faces through the old per-query re-rank loop and
the vectorised re-rank of ``CompactIndex``, in one process, alternating (3 runs each); wall and CPU
seconds, then the two graphs compared (docs/people.md, "Scale").

The loop is ``_rerank_loop`` of tests/search/test_compact_index.py (the re-rank as it was).

Usage:
    PYTHONPATH=. python benchmarks/bench_people_rerank.py
"""
import sys, time, json
import numpy as np
sys.path[:0] = ['benchmarks', '.', 'tests/search']
import bench_people
from cmce.people.graph import search_index, knn_graph
from cmce.search.compact import CompactIndex
from test_compact_index import _rerank_loop
x, _, _ = bench_people.synthetic_faces(100_000)
idx = search_index(x, 'compact')
new = CompactIndex._rerank
res = {'loop': [], 'vectorised': []}
graphs = {}
for r in range(3):
    for name, fn in (('loop', _rerank_loop), ('vectorised', new)):
        CompactIndex._rerank = fn
        t, c = time.perf_counter(), time.process_time()
        g = knn_graph(x, k=30, threshold=0.4, index=idx)
        res[name].append((time.perf_counter() - t, time.process_time() - c))
        graphs[name] = g
        print(name, r, res[name][-1], open('/proc/loadavg').read().split()[:3], flush=True)
a, b = graphs['loop'], graphs['vectorised']
diff = abs(a - b)
print(json.dumps({k: {'wall_median': float(np.median([v[0] for v in vs])), 'cpu_median': float(np.median([v[1] for v in vs]))}
                  for k, vs in res.items()}))
print('edges', a.nnz, b.nnz, 'same pattern', (a != 0).astype(int).__ne__((b != 0).astype(int)).nnz == 0,
      'max |diff|', diff.max() if diff.nnz else 0.0)
