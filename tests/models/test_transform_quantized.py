"""int8 transformers (bulk re-projection) stay within ~1e-3 cosine of float32."""

from __future__ import annotations

import numpy as np
import pytest

from cmce.method.bundle import default_bundle_path, load_bundle
from cmce.models.transform import quantize_transformer, transform_embeddings

pytestmark = pytest.mark.skipif(not (default_bundle_path() / "config.json").is_file(), reason="default bundle not built")


def test_int8_transformers_match_float32() -> None:
    bundle = load_bundle()
    rng = np.random.default_rng(0)
    for m, module in bundle.transformers.items():
        x = rng.standard_normal((2000, module.config.in_dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        exact = transform_embeddings(module, x)
        fast = transform_embeddings(quantize_transformer(module), x)
        np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
        distance = 1.0 - (exact * fast).sum(axis=1)
        assert np.percentile(distance, 99.9) < 3e-3, (m, np.percentile(distance, [50, 99.9]))
        # the original module is untouched (a copy is quantized)
        np.testing.assert_array_equal(transform_embeddings(module, x), exact)
