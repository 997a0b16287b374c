"""The scale benchmark's synthetic faces fit each bundle's real same-person cosine (issue 26)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from cmce.metrics.clustering import same_person_cosine

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_people", ROOT / "benchmarks" / "bench_people.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("bundle", ["sface-query", "facenet-query"])
def test_the_synthetic_spread_is_fitted_to_the_bundle_s_real_same_person_cosine(bench, bundle):
    """Another seed than the fit's: the fitted faces' same-person cosine is the measured real one (0.005)."""
    cal, dim, _ = bench.served_config(str(ROOT / "assets" / "bundles" / bundle))  # a folder, as a name
    assert bench.served_config(bundle)[1] == dim
    target = bench.target_cosine(bundle)
    assert target == json.loads(bench.COSINES.read_text())[bundle]["same_person_cosine"]
    spread = bench.fit_spread(target, dim, cal["query_weight"])
    got = bench.synthetic_same_person_cosine(spread, dim, cal["query_weight"], seed=5)
    assert abs(got - target) < 0.005
    assert bench.synthetic_same_person_cosine(spread * 1.5, dim, cal["query_weight"], seed=5) < target - 0.05


def test_same_person_cosine_pairs_each_face_with_the_next_of_its_class():
    v = np.eye(4, dtype=np.float32)
    v[2] = [0.8, 0.6, 0, 0]  # faces 0 and 2 of class a at 0.8, faces 1 and 3 of class b at 0
    assert same_person_cosine(v, ["a", "b", "a", "b"]) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="two faces"):
        same_person_cosine(v, ["a", "b", "c", "d"])
