"""Bundles: a query model, gallery models, their transformers and calibration.

A bundle folder (local or a Hugging Face Hub model repo) holds

* ``config.json``: format version, query and gallery model names with their
  weights-table sha256, transformer architecture, calibration, training summary,
  metrics, and the sha256 of ``model.safetensors``;
* ``model.safetensors``: the transformers' weights (``<gallery model>.<param>``);
* ``baselines.safetensors`` (optional): what only ``evaluate`` uses, the least-squares
  maps (``linear.<gallery model>``) and the distillation-style query adapters
  (``adapter.<gallery model>.<param>``); kept apart so the weights the app loads stay small;
* ``README.md``: a generated model card (licences, training data, evaluation).

Backbone weights are not in the bundle: they come from the packages in the weights
table, whose checksums the config records. This module reads and writes
bundles (a folder, or a Hub repo through ``cmce.method.hub``); the bundle in memory is
``cmce.method.bundle_model``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cmce.assets import PROJECT_ROOT
from cmce.cache import file_sha256
from cmce.errors import BackboneError, BundleError, CmceError
from cmce.method.bundle_model import FORMAT_VERSION, Bundle, Calibration
from cmce.method.ensemble import FusionGate
from cmce.method.hub import download_files, upload_folder
from cmce.models.backbones import get_spec
from cmce.models.transform import (
    TransformerConfig,
    create_transformer,
)

__all__ = ["BASELINES_NAME", "BUNDLE_FILES", "CARD_NAME", "CONFIG_NAME", "DEFAULT_MAX_BUNDLE_BYTES", "WEIGHTS_NAME", "check_bundle_files", "default_bundle_path", "load_bundle", "push_to_hub", "save_bundle"]


logger = logging.getLogger(__name__)




CONFIG_NAME = "config.json"


WEIGHTS_NAME = "model.safetensors"


BASELINES_NAME = "baselines.safetensors"


CARD_NAME = "README.md"


BUNDLE_FILES = (CONFIG_NAME, WEIGHTS_NAME, BASELINES_NAME, CARD_NAME)
"""The only files of a bundle that are ever downloaded or read: JSON, safetensors and the card.
Anything else in a folder or repo (pickles, ``.py`` files, ``.bin`` weights) is ignored: loading
a bundle never runs code from it."""


DEFAULT_MAX_BUNDLE_BYTES = 64 * 2**20


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]{0,95}/[\w.\-]{1,96}$")


def default_bundle_path() -> Path:
    """The bundle shipped in ``assets/`` (``CMCE_BUNDLE`` overrides it)."""
    env = os.environ.get("CMCE_BUNDLE")
    if env:
        return Path(env)
    return PROJECT_ROOT / "assets" / "bundles" / "sface-query"


def save_bundle(bundle: Bundle, path: str | os.PathLike) -> Path:
    """Write ``bundle`` to a folder atomically (a temporary folder renamed into place).

    Returns:
        The folder.
    """
    import torch
    from safetensors.torch import save_file

    from cmce.method.card import render_model_card

    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp"))
    try:
        # float16 storage halves the file; weights are used in float32 after loading
        state = {
            f"{m}.{k}": v.detach().cpu().to(torch.float16).contiguous()
            for m in bundle.gallery_models
            for k, v in bundle.transformers[m].state_dict().items()
        }
        baselines = {}
        for m, a in bundle.query_adapters.items():
            baselines.update({f"adapter.{m}.{k}": v.detach().cpu().to(torch.float16).contiguous()
                              for k, v in a.state_dict().items()})
        for m, w in bundle.linear_maps.items():
            baselines[f"linear.{m}"] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).to(torch.float16)
        meta = {"format": "pt", "library": "cmce"}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata=meta)
        cfg = bundle.config_dict()
        cfg["weights_sha256"] = file_sha256(tmp / WEIGHTS_NAME)
        if baselines:
            save_file(baselines, str(tmp / BASELINES_NAME), metadata=meta)
            cfg["baselines_sha256"] = file_sha256(tmp / BASELINES_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, allow_nan=True) + "\n")
        (tmp / CARD_NAME).write_text(render_model_card(cfg))
        tmp.chmod(0o755)  # mkdtemp makes 0700 folders and the files inherit nothing else
        for f in tmp.iterdir():
            f.chmod(0o644)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("saved bundle to %s", dest)
    return dest


def check_bundle_files(sizes: Mapping[str, int | None], max_bytes: int, source: str = "bundle") -> int:
    """Check a bundle's file list and sizes, before any of its files is downloaded or read.

    Only :data:`BUNDLE_FILES` count: any other file (a pickle, a ``.py`` file, ``.bin``
    weights) is never downloaded nor read, so it is ignored here too.

    Args:
        sizes: file name -> size in bytes (None: unknown), as a repo's metadata lists them.
        max_bytes: most bytes the bundle's files may hold together.
        source: how the bundle is named in messages.

    Returns:
        The bytes that loading will download or read.

    Raises:
        BundleError: config.json or model.safetensors is not listed, a size is unknown,
            or the total is over ``max_bytes``.

    >>> check_bundle_files({"config.json": 2_000, "model.safetensors": 3_000_000, "evil.pkl": 10**9}, 64 * 2**20)
    3002000
    """
    used = {name: sizes[name] for name in BUNDLE_FILES if name in sizes}
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if name not in used]
    if missing:
        raise BundleError(f"{source}: {', '.join(missing)} missing (a bundle needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    unknown = [name for name, size in used.items() if size is None or size < 0]
    if unknown:
        raise BundleError(f"{source}: the size of {', '.join(unknown)} is not listed; refusing to download it")
    total = sum(int(size) for size in used.values())
    if total > max_bytes:
        listed = ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in used.items())
        raise BundleError(f"{source}: its files hold {total / 2**20:.1f} MiB ({listed}), over the "
                          f"{max_bytes / 2**20:.0f} MiB allowed for a bundle (CMCE_MAX_BUNDLE_MB)")
    return total


def load_bundle(
    path_or_id: str | os.PathLike | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    max_bytes: int | None = DEFAULT_MAX_BUNDLE_BYTES,
) -> Bundle:
    """Load a bundle from a local folder or a Hugging Face Hub model repo.

    Args:
        path_or_id: a folder, or ``"org/name"`` on the Hub; default the bundle in assets/.
        revision: Hub branch, tag or commit (pin a commit for reproducibility).
        cache_dir: Hugging Face cache folder (default: huggingface_hub's).
        max_bytes: most bytes of the bundle's files (:data:`BUNDLE_FILES`), checked from the
            Hub repo's metadata before anything is downloaded, and from the folder's file
            sizes before anything is read; None: no cap. Only JSON and safetensors files
            are read: loading never runs code from the bundle.

    Raises:
        BundleError: the folder/repo is missing a file, a file is corrupt, a checksum
            differs, a backbone is unknown, the config does not fit this version, or
            the files are over ``max_bytes``.
        HubError: the Hub cannot be reached and the repo is not in the local cache.
    """
    target = default_bundle_path() if path_or_id is None else path_or_id
    folder = Path(target).expanduser()
    if folder.is_dir():
        return _load_folder(folder, str(folder), max_bytes)
    name = str(target)
    if folder.exists() or not _REPO_ID.match(name) or name.startswith((".", "/", "~")):
        raise BundleError(
            f"{name}: not a bundle folder, and not a Hub id of the form 'org/name'"
        )
    source = f"hf://{name}@{revision or 'main'}"
    check = None if max_bytes is None else (lambda sizes, where: check_bundle_files(sizes, max_bytes, where))
    folder = download_files(name, revision, BUNDLE_FILES, cache_dir=cache_dir, check_sizes=check)
    return _load_folder(folder, source, max_bytes)


def _load_folder(folder: Path, source: str, max_bytes: int | None = None) -> Bundle:
    """Read a bundle folder: config.json, then the safetensors files it names (nothing else)."""
    from safetensors import SafetensorError

    cfg, w_path, b_path = _read_config(folder, source, max_bytes)
    try:
        return _bundle_from(cfg, w_path, b_path, source)
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{source}: {CONFIG_NAME} does not fit this version of cmce ({e!r})") from e
    except (RuntimeError, SafetensorError) as e:
        raise BundleError(f"{source}: {WEIGHTS_NAME} does not match its config ({e})") from e
    except CmceError as e:
        raise BundleError(f"{source}: {e}") from e


def _read_config(folder: Path, source: str, max_bytes: int | None) -> tuple[dict, Path, Path | None]:
    """A bundle folder's checked config: ``(config, weights file, baselines file or None)``.

    Raises:
        BundleError: a file missing, over ``max_bytes``, not JSON, of another format
            version, or with another checksum than the config records.
    """
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise BundleError(f"{source}: {p.name} is missing (a bundle needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    if max_bytes is not None:
        check_bundle_files({n: (folder / n).stat().st_size for n in BUNDLE_FILES if (folder / n).is_file()},
                           max_bytes, source)
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{source}: {CONFIG_NAME} is not valid JSON ({e})") from e
    if not isinstance(cfg, dict) or cfg.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{source}: {CONFIG_NAME} has format_version {cfg.get('format_version') if isinstance(cfg, dict) else None!r};"
            f" this cmce reads version {FORMAT_VERSION}"
        )
    want = cfg.get("weights_sha256")
    if want and file_sha256(w_path) != want:
        raise BundleError(f"{source}: {WEIGHTS_NAME} checksum mismatch (corrupt or replaced file)")
    b_path, b_want = folder / BASELINES_NAME, cfg.get("baselines_sha256")
    if b_want:
        if not b_path.is_file():
            raise BundleError(f"{source}: {BASELINES_NAME} is missing (its config lists it)")
        if file_sha256(b_path) != b_want:
            raise BundleError(f"{source}: {BASELINES_NAME} checksum mismatch (corrupt or replaced file)")
    return cfg, w_path, (b_path if b_want else None)


def _bundle_from(cfg: dict, w_path: Path, b_path: Path | None, source: str) -> Bundle:
    """The bundle a checked config and its safetensors files describe (``_load_folder`` words the errors)."""
    from safetensors.torch import load_file

    query = cfg["query_model"]["name"]
    gallery = [(g["name"], g.get("sha256"), g["transformer"]) for g in cfg["gallery_models"]]
    adapter_arch = {g["name"]: g["query_adapter"] for g in cfg["gallery_models"] if "query_adapter" in g}
    _check_backbone(source, query, cfg["query_model"].get("sha256"))
    for name, sha, _ in gallery:
        _check_backbone(source, name, sha)
    state = {k: v.float() for k, v in load_file(str(w_path)).items()}
    if b_path is not None:
        state.update({k: v.float() for k, v in load_file(str(b_path)).items()})
    transformers = _modules(state, [(name, arch) for name, _, arch in gallery], "")
    adapters = _modules(state, list(adapter_arch.items()), "adapter.")
    return Bundle(
        query_model=query,
        gallery_models=tuple(n for n, _, _ in gallery),
        transformers=transformers,
        query_member=bool(cfg.get("query_member", False)),
        fusion=FusionGate.from_dict(cfg.get("fusion")),
        linear_maps={
            k[len("linear."):]: v.numpy() for k, v in state.items() if k.startswith("linear.")
        },
        query_adapters=adapters,
        calibration=Calibration.from_dict(cfg.get("calibration", {})),
        info=cfg.get("info", {}),
        source=source,
    )


def _modules(state: dict, archs: list[tuple[str, dict]], prefix: str) -> dict:
    """``name -> transformer`` in eval mode, each built from its architecture and loaded strictly from
    the ``{prefix}{name}.`` entries of ``state``."""
    modules = {}
    for name, arch in archs:
        module = create_transformer(TransformerConfig(**arch))
        start = f"{prefix}{name}."
        module.load_state_dict({k[len(start):]: v for k, v in state.items() if k.startswith(start)}, strict=True)
        modules[name] = module.eval()
    return modules


def _check_backbone(source: str, name: str, sha: str | None) -> None:
    try:
        spec = get_spec(name)
    except BackboneError as e:
        raise BundleError(f"{source}: {e}") from e
    if sha and spec.sha256 and sha != spec.sha256:
        raise BundleError(
            f"{source}: was built with other {name} weights (sha256 {sha[:12]}..., "
            f"installed {spec.sha256[:12]}...)"
        )


def push_to_hub(
    path: str | os.PathLike, repo_id: str, *, revision: str | None = None, private: bool = False,
    token: str | None = None, commit_message: str = "Upload CMCE bundle",
) -> str:
    """Upload a saved bundle folder to a Hub model repo; returns the commit URL."""
    folder = Path(path)
    _load_folder(folder, str(folder))  # refuse to upload a broken bundle
    return upload_folder(folder, repo_id, [CONFIG_NAME, WEIGHTS_NAME, BASELINES_NAME, CARD_NAME],
                         revision=revision, private=private, token=token, commit_message=commit_message)
