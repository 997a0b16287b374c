"""Bundles: local round trip, a real Hugging Face cache layout offline, and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cmce.errors import BundleError, HubError
from cmce.method.bundle import load_bundle, save_bundle
from cmce.method.bundle_model import Bundle, Calibration
from cmce.method.ensemble import QualityModel
from cmce.models.transform import TransformerConfig, create_transformer, transform_embeddings


def _bundle(seed: int = 0) -> Bundle:
    torch.manual_seed(seed)
    tr = {
        "dlib-resnet34": create_transformer(TransformerConfig(128, 128, hidden=64, blocks=1)).eval(),
        "facenet-casia": create_transformer(TransformerConfig(512, 128, hidden=64, blocks=1)).eval(),
    }
    rng = np.random.default_rng(seed)
    return Bundle(
        "sface", ("dlib-resnet34", "facenet-casia"), tr, query_member=True,
        calibration=Calibration(0.1, 0.25, QualityModel("disagreement"), 1e-3, {"ensemble": 0.31, "query": 0.4}),
        linear_maps={"dlib-resnet34": rng.standard_normal((128, 128)).astype(np.float32)},
        info={"training": {"images": 10, "identities": 3}},
    )


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_round_trip_through_a_folder(tmp_path: Path) -> None:
    b = _bundle()
    save_bundle(b, tmp_path / "b")
    assert {p.name for p in (tmp_path / "b").iterdir()} == {
        "config.json", "model.safetensors", "baselines.safetensors", "README.md"
    }
    card = (tmp_path / "b" / "README.md").read_text()
    assert "Apache-2.0" in card and "CC0" in card and "MIT" in card
    loaded = load_bundle(tmp_path / "b")
    rng = np.random.default_rng(1)
    emb = {"sface": _unit(rng, 7, 128), "dlib-resnet34": _unit(rng, 7, 128), "facenet-casia": _unit(rng, 7, 512)}
    prob = np.full(7, 0.999, np.float32)
    a, c = b.gallery_vectors(emb, prob), loaded.gallery_vectors(emb, prob)
    # weights are stored as float16: equal to that precision
    np.testing.assert_allclose(a.ensemble, c.ensemble, atol=3e-3)
    np.testing.assert_allclose(a.uncertainty, c.uncertainty, atol=3e-3)
    again_loaded = load_bundle(tmp_path / "b")  # loading is deterministic
    np.testing.assert_array_equal(again_loaded.gallery_vectors(emb, prob).ensemble, c.ensemble)
    assert loaded.query_member and loaded.calibration == b.calibration
    np.testing.assert_allclose(loaded.linear_maps["dlib-resnet34"], b.linear_maps["dlib-resnet34"], rtol=1e-3, atol=1e-3)
    # saving again over an existing bundle replaces it atomically
    save_bundle(_bundle(seed=3), tmp_path / "b")
    again = load_bundle(tmp_path / "b")
    assert not np.allclose(again.gallery_vectors(emb, prob).ensemble, a.ensemble)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def _fake_hub_cache(cache: Path, repo_id: str, bundle_dir: Path, commit: str = "a" * 40) -> None:
    """The layout huggingface_hub writes: blobs/, refs/main, snapshots/<commit>/ symlinks."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    import hashlib

    for f in bundle_dir.iterdir():
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, repo / "blobs" / digest)
        (snap / f.name).symlink_to(Path("../../blobs") / digest)


def test_load_from_a_hugging_face_cache_offline(tmp_path: Path) -> None:
    save_bundle(_bundle(), tmp_path / "src")
    _fake_hub_cache(tmp_path / "hub", "cmce-org/faces", tmp_path / "src")
    b = load_bundle("cmce-org/faces", cache_dir=tmp_path / "hub")
    assert b.source == "hf://cmce-org/faces@main" and b.gallery_models == ("dlib-resnet34", "facenet-casia")
    b2 = load_bundle("cmce-org/faces", revision="a" * 40, cache_dir=tmp_path / "hub")
    assert b2.query_model == "sface"


def test_unreachable_hub_fails_fast(tmp_path: Path, no_network) -> None:
    with pytest.raises(HubError, match="not in the local cache"):
        load_bundle("someone/not-cached", cache_dir=tmp_path / "hub")


@pytest.mark.parametrize("bad", ["../x", "a/b/c", "/abs/path/nope", "no-slash"])
def test_neither_folder_nor_hub_id(bad: str) -> None:
    with pytest.raises(BundleError, match="not a bundle folder"):
        load_bundle(bad)


def _saved(tmp_path: Path) -> Path:
    return save_bundle(_bundle(), tmp_path / "b")


def test_missing_weights_file(tmp_path: Path) -> None:
    d = _saved(tmp_path)
    (d / "model.safetensors").unlink()
    with pytest.raises(BundleError, match="model.safetensors is missing"):
        load_bundle(d)


def test_corrupt_weights_fail_the_checksum(tmp_path: Path) -> None:
    d = _saved(tmp_path)
    data = bytearray((d / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (d / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(d)


@pytest.mark.parametrize("damage, match", [("delete", "baselines.safetensors is missing"),
                                           ("flip", "baselines.safetensors checksum mismatch")])
def test_baselines_file_is_checked_too(tmp_path: Path, damage: str, match: str) -> None:
    d = _saved(tmp_path)
    f = d / "baselines.safetensors"
    if damage == "delete":
        f.unlink()
    else:
        data = bytearray(f.read_bytes())
        data[-10] ^= 0xFF
        f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=match):
        load_bundle(d)


def test_bundle_without_baselines_has_no_baselines_file(tmp_path: Path) -> None:
    b = _bundle()
    b.linear_maps = {}
    d = save_bundle(b, tmp_path / "b")
    assert not (d / "baselines.safetensors").exists()
    assert load_bundle(d).linear_maps == {}


def test_truncated_weights_without_checksum(tmp_path: Path) -> None:
    d = _saved(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("weights_sha256")
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100])
    with pytest.raises(BundleError, match="model.safetensors"):
        load_bundle(d)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c["query_model"].update(name="resnet-9000"), "unknown backbone 'resnet-9000'"),
        (lambda c: c["gallery_models"][0].update(sha256="0" * 64), "other dlib-resnet34 weights"),
        (lambda c: c.update(format_version=99), "format_version 99"),
        (lambda c: c["gallery_models"][1]["transformer"].update(in_dim=256), "does not match its config|maps 256"),
        (lambda c: c.pop("gallery_models"), "does not fit this version"),
    ],
)
def test_incompatible_configs_are_refused(tmp_path: Path, edit, match: str) -> None:
    d = _saved(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    edit(cfg)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match=match):
        load_bundle(d)


def test_not_json(tmp_path: Path) -> None:
    d = _saved(tmp_path)
    (d / "config.json").write_text("{nope")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(d)


def test_transformer_output_is_unit_norm() -> None:
    b = _bundle()
    out = transform_embeddings(b.transformers["facenet-casia"], _unit(np.random.default_rng(0), 5, 512))
    assert out.shape == (5, 128)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
