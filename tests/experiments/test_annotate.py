"""``cmce bundle annotate``: purposes and upgrade paths written into bundles, weights untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cmce.cli import main
from cmce.errors import BundleError
from cmce.experiments.annotate import PURPOSES, annotate_bundles
from cmce.method.bundle import load_bundle

SHIPPED = Path(__file__).resolve().parents[2] / "assets" / "bundles"
pytestmark = pytest.mark.skipif(not (SHIPPED / "sface-query" / "config.json").is_file()
                                or not (SHIPPED / "facenet-dlib" / "config.json").is_file(),
                                reason="shipped bundles not built")


def _tensors(bundle) -> dict[str, bytes]:
    out = {}
    for kind, modules in (("t", bundle.transformers), ("a", bundle.query_adapters)):
        for name, module in modules.items():
            for key, value in module.state_dict().items():
                out[f"{kind}/{name}/{key}"] = value.cpu().numpy().tobytes() if torch.is_tensor(value) else repr(value)
    out.update({f"linear/{m}": v.tobytes() for m, v in bundle.linear_maps.items()})
    return out


def test_annotate_writes_purposes_and_upgrade_paths_and_keeps_the_weights(tmp_path, capsys) -> None:
    root = tmp_path / "bundles"
    for name in ("sface-query", "facenet-dlib"):
        shutil.copytree(SHIPPED / name, root / name)
    config = json.loads((root / "sface-query" / "config.json").read_text())
    config["info"]["purpose"] = "something else"
    (root / "sface-query" / "config.json").write_text(json.dumps(config))
    before = {n: _tensors(load_bundle(root / n)) for n in ("sface-query", "facenet-dlib")}
    assert main(["bundle", "annotate", str(root)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("facenet-dlib: ") and "sface-query: " in printed
    for name in ("sface-query", "facenet-dlib"):
        after = load_bundle(root / name)
        assert after.info["purpose"] == PURPOSES[name]
        assert _tensors(after) == before[name]  # byte-identical weights
        assert f"**Use it for:** {PURPOSES[name]}" in (root / name / "README.md").read_text()
    paths = load_bundle(root / "sface-query").info["upgrade_from"]
    assert [p["bundle"] for p in paths] == ["facenet-dlib"] and paths[0]["query"] == "facenet-casia"
    assert set(paths[0]["shared"]) <= {"dlib-resnet34", "facenet-casia", "query"}


def test_annotate_keeps_the_purpose_of_a_bundle_it_does_not_know(tmp_path) -> None:
    root = tmp_path / "bundles"
    shutil.copytree(SHIPPED / "sface-query", root / "mine")
    config = json.loads((root / "mine" / "config.json").read_text())
    config["info"]["purpose"] = "my own"
    (root / "mine" / "config.json").write_text(json.dumps(config))
    bundles = annotate_bundles(root)
    assert bundles["mine"].info["purpose"] == "my own" and bundles["mine"].info["upgrade_from"] == []
    with pytest.raises(BundleError, match="holds no bundle"):
        annotate_bundles(tmp_path / "empty")
    assert main(["bundle", "annotate", str(tmp_path / "empty")]) == 2
