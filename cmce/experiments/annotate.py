"""What each shipped bundle is for, and which galleries it can upgrade: written into the bundles.

``PURPOSES`` is the table of the shipped bundles' purposes (bundle folder name -> one
sentence). ``annotate_bundles`` re-saves every bundle of a folder of bundles (weights
unchanged) so that its config and model card say what it is for and which of the other
bundles' galleries it serves (``cmce bundle annotate``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from cmce.assets import PROJECT_ROOT
from cmce.errors import BundleError
from cmce.gallery.upgrade import shared_members
from cmce.method.bundle import load_bundle, save_bundle
from cmce.method.bundle_model import Bundle

__all__ = ["PURPOSES", "SHIPPED_BUNDLES", "annotate_bundles", "upgrade_paths"]

#: The folder of the bundles this repository ships.
SHIPPED_BUNDLES = PROJECT_ROOT / "assets" / "bundles"

#: Bundle folder name -> what it is for (the model card's "Use it for").
PURPOSES: Mapping[str, str] = MappingProxyType({
    "sface-query": "the demo and real use: the most accurate ensemble here, and the cheapest queries (sface).",
    "facenet-query": "the paper's regime: gallery models stronger than a weak query model (facenet-casia), "
                     "to see how much the ensemble lifts it.",
    "facenet-dlib": "the old side of the upgrade story: a FaceNet-era gallery (facenet-casia queries, dlib-resnet34 "
                    "+ facenet's own embedding) that sface-query re-projects without reading a photo.",
})


def upgrade_paths(name: str, bundles: Mapping[str, Bundle]) -> list[dict]:
    """The bundles among ``bundles`` whose galleries the bundle ``name`` can serve.

    Returns:
        One ``{"bundle", "query", "shared", "complete"}`` per other bundle sharing at least
        one member: its name, query model, the members shared (``"query"``: the serving
        bundle's query model's own embedding) and whether they are all of the members.
    """
    bundle = bundles[name]
    return [{"bundle": other, "query": ob.query_model, "shared": shared,
             "complete": set(shared) == set(bundle.member_names)}
            for other, ob in bundles.items()
            if other != name and (shared := shared_members(bundle, ob))]


def annotate_bundles(folder: str | os.PathLike = SHIPPED_BUNDLES,
                     purposes: Mapping[str, str] = PURPOSES) -> dict[str, Bundle]:
    """Write each bundle's purpose and upgrade paths into every bundle of ``folder``.

    A bundle is a sub-folder with a ``config.json``; its purpose comes from ``purposes`` by
    folder name (a bundle not in it keeps the purpose it has). The weights are written
    back unchanged.

    Returns:
        Folder name -> the bundle as saved.

    Raises:
        BundleError: ``folder`` holds no bundle.
    """
    root = Path(folder)
    bundles = {p.name: load_bundle(p) for p in sorted(root.iterdir()) if (p / "config.json").is_file()} \
        if root.is_dir() else {}
    if not bundles:
        raise BundleError(f"{root} holds no bundle (a sub-folder with a config.json)")
    for name, bundle in bundles.items():
        bundle.info["purpose"] = purposes.get(name, bundle.info.get("purpose", ""))
        bundle.info["upgrade_from"] = upgrade_paths(name, bundles)
        save_bundle(bundle, root / name)
    return bundles
