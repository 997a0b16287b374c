"""Degradations for mixed-quality galleries, identity-bootstrap intervals, robust fusion."""

from __future__ import annotations

import numpy as np
import pytest

from cmce import metrics as M
from cmce.degrade import DEGRADATIONS, MIX_KINDS, DegradeSpec, degrade_image, plan_degradation, write_degraded
from cmce.ensemble import FusionGate, fuse_member_list
from cmce.errors import CmceError


def _face_image(seed: int = 0) -> np.ndarray:
    """A textured 120x100 RGB image (gradients plus noise): every degradation must change it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:120, 0:100]
    base = np.stack([x * 2.5, y * 2.0, (x + y) * 1.1], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("text", "share", "kinds"),
    [
        ("mix:0.6", 0.6, MIX_KINDS),
        ("MIX:0.25:blur+noise", 0.25, ("blur", "noise")),
        ("blur", 1.0, ("blur",)),
        ("occlusion:0.5", 0.5, ("occlusion",)),
    ],
)
def test_spec_parsing_and_canonical_text(text: str, share: float, kinds: tuple) -> None:
    spec = DegradeSpec.parse(text)
    assert spec.share == share and spec.kinds == kinds
    assert DegradeSpec.parse(spec.text) == spec


@pytest.mark.parametrize("text", ["mix", "fog", "mix:1.5", "blur:0", "blur:0.5:noise", "mix:0.5:blur+fog", ""])
def test_bad_specs_say_what_is_valid(text: str) -> None:
    with pytest.raises(CmceError, match="valid kinds|mix needs|share|KIND|only mix"):
        DegradeSpec.parse(text)


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_each_kind_changes_the_image_deterministically(kind: str) -> None:
    img = _face_image()
    a = degrade_image(img, kind, np.random.default_rng(3), box=(20, 20, 80, 100))
    b = degrade_image(img, kind, np.random.default_rng(3), box=(20, 20, 80, 100))
    assert a.shape == img.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - img.astype(int)).mean() > 1.0
    if kind == "dark":
        assert a.mean() < 0.7 * img.mean()
    if kind == "occlusion":  # a grey band inside the face box, nothing outside it
        changed = np.any(a != img, axis=-1)
        ys, xs = np.nonzero(changed)
        assert xs.min() >= 20 and xs.max() < 80 and ys.min() >= 20 and ys.max() < 100
        assert np.all(a[changed] == 128)


def test_plan_picks_the_share_and_every_kind(tmp_path) -> None:
    spec = DegradeSpec.parse("mix:0.6")
    pos, kinds = plan_degradation(1000, spec, seed=0)
    assert len(pos) == 600 and len(set(pos.tolist())) == 600 and pos.max() < 1000
    assert set(kinds.tolist()) == set(MIX_KINDS)
    pos2, kinds2 = plan_degradation(1000, spec, seed=0)
    np.testing.assert_array_equal(pos, pos2)
    assert not np.array_equal(plan_degradation(1000, spec, seed=1)[0], pos)
    # the written pixels depend only on (content digest, kind, seed): caching by content works
    img = _face_image()
    p1 = write_degraded([img], ["ab" * 32], ["jpeg"], 0, tmp_path / "a")[0]
    p2 = write_degraded([img], ["ab" * 32], ["jpeg"], 0, tmp_path / "b")[0]
    p3 = write_degraded([img], ["ab" * 32], ["jpeg"], 1, tmp_path / "c")[0]
    assert p1.read_bytes() == p2.read_bytes() != p3.read_bytes()


def test_top1_hits_matches_recall_at_1_with_a_mask() -> None:
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(60, 40))
    ql, gl = rng.integers(0, 30, 60), np.arange(40) % 32
    mask = rng.random(40) > 0.3
    hits = M.top1_hits(sim, ql, gl, mask)
    assert np.isnan(hits).any()  # queries whose mate is rejected are not counted
    assert np.nanmean(hits) == pytest.approx(M.recall_at_k(sim, ql, gl, ks=(1,), gallery_mask=mask)[1])


def test_cluster_bootstrap_against_a_naive_resampling() -> None:
    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(40), rng.integers(1, 5, 40))
    a = (rng.random(len(clusters)) < 0.8).astype(float)
    b = np.where(rng.random(len(clusters)) < 0.1, np.nan, (rng.random(len(clusters)) < 0.9).astype(float))
    point, lo, hi = M.cluster_bootstrap([a, b], clusters, lambda x, y: y - x, resamples=400, seed=5)
    assert point == pytest.approx(np.nanmean(b) - np.nanmean(a))
    # naive: resample identities, gather their queries, recompute the difference
    ids = np.unique(clusters)
    r = np.random.default_rng(7)
    naive = []
    for _ in range(400):
        rows = np.concatenate([np.flatnonzero(clusters == c) for c in r.choice(ids, len(ids))])
        naive.append(np.nanmean(b[rows]) - np.nanmean(a[rows]))
    assert lo == pytest.approx(np.quantile(naive, 0.025), abs=0.03)
    assert hi == pytest.approx(np.quantile(naive, 0.975), abs=0.03)
    assert lo < point < hi


def test_tar_interval_brackets_the_point_value() -> None:
    rng = np.random.default_rng(2)
    g, q = 200, 300
    gl, ql = np.arange(g), rng.integers(0, g, q)
    sim = rng.normal(0, 0.1, (q, g))
    sim[np.arange(q), ql] += rng.normal(0.45, 0.15, q)
    scores, same = M.verification_scores(sim, ql, gl)
    tar, lo, hi = M.tar_at_far_cluster_ci(sim, ql, gl, ql, far=1e-2, resamples=200)
    assert tar == M.tar_at_far(scores, same, 1e-2)
    assert lo <= tar <= hi and hi - lo < 0.2


def _unit(rng, shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_fusion_gate_weights_and_round_trip() -> None:
    rng = np.random.default_rng(0)
    v = [_unit(rng, (6, 8)) for _ in range(3)]
    present = [np.ones(6, bool), np.array([1, 0, 1, 1, 0, 1], bool), np.ones(6, bool)]
    prob = np.full(6, 0.999, np.float32)
    # zero logits: exactly the paper's mean over the present members
    flat = FusionGate("weighted", ("a", "b", "query"), bias=(0.0, 0.0, 0.0))
    np.testing.assert_allclose(flat.fuse(v, present, prob), fuse_member_list(v, present), atol=1e-6)
    gate = FusionGate("gated", ("a", "b", "query"), w1=tuple(map(tuple, rng.normal(size=(4, 7)))), b1=(0.0,) * 4,
                      w2=tuple(map(tuple, rng.normal(size=(3, 4)))), bias=(0.0, 0.5, -0.5))
    w = gate.weights(v, present, prob)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)
    assert np.all(w[~present[1], 1] == 0)  # a missing member weighs nothing
    fused = gate.fuse(v, present, prob)
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)
    assert FusionGate.from_dict(gate.to_dict()) == gate
    with pytest.raises(CmceError, match="fusion must be one of"):
        FusionGate("median")
    with pytest.raises(CmceError, match="w1"):
        FusionGate("gated", ("a", "b"), w1=((0.0,),), b1=(0.0,), w2=((0.0,), (0.0,)), bias=(0.0, 0.0))
