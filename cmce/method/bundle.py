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
table, whose checksums the config records. All Hub I/O of cmce lives in this module.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmce.assets import PROJECT_ROOT
from cmce.cache import file_sha256
from cmce.errors import BackboneError, BundleError, CmceError
from cmce.method.answer_rules import AnswerPolicy
from cmce.method.answers import capped_rejection, doubt_marks
from cmce.method.ensemble import QUALITY_SCORES, FusionGate, QualityModel
from cmce.method.hub import download_files, upload_folder
from cmce.method.unknown import CohortNorm
from cmce.metrics.uncertainty import mean_pairwise_cosine_distance
from cmce.models.backbones import PRETRAINED, get_spec
from cmce.models.transform import (
    EmbeddingTransformer,
    TransformerConfig,
    create_transformer,
    transform_embeddings,
)

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT_VERSION",
    "Bundle",
    "BUNDLE_FILES",
    "Calibration",
    "GalleryVectors",
    "check_bundle_files",
    "default_bundle_path",
    "load_bundle",
    "push_to_hub",
    "save_bundle",
]

FORMAT_VERSION = 1
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


@dataclass(frozen=True)
class Calibration:
    """Thresholds calibrated on the training data and stored in the bundle.

    Attributes:
        rejection_rate: the default share of gallery entries to reject.
        rejection_threshold: quality-score threshold that rejects that share of the
            calibration gallery (entries with score > threshold are rejected).
        quality: how the quality score is computed.
        open_set_far: false-accept rate the similarity thresholds stand for.
        similarity_thresholds: per view (``"ensemble"``, each gallery model name,
            ``"query"``), the query-gallery cosine similarity below which the answer
            is "unknown" at ``open_set_far``.
        quality_thresholds: per quality score, the threshold that rejects
            ``rejection_rate`` of the calibration gallery.
        answer_rule: which of ``answer_rules.ANSWER_RULES`` the bundle answers by (chosen by
            cross-validation; empty in bundles calibrated before it).
        answer_policies: per view and rule, the ``answer_rules.AnswerPolicy`` that answers
            "unknown" where a named person is too likely wrong (its ``threshold``).
        cohort_norm: the "Unknown" threshold on cohort-normalised scores
            (``unknown.CohortNorm``), used instead of ``similarity_thresholds`` in
            galleries with enough people; None in bundles calibrated before it.
    """

    rejection_rate: float = 0.10
    rejection_threshold: float = float("inf")
    quality: QualityModel = field(default_factory=QualityModel)
    open_set_far: float = 1e-3
    similarity_thresholds: Mapping[str, float] = field(default_factory=dict)
    quality_thresholds: Mapping[str, float] = field(default_factory=dict)
    answer_rule: str = ""
    answer_policies: Mapping[str, Mapping[str, AnswerPolicy]] = field(default_factory=dict)
    cohort_norm: CohortNorm | None = None

    def answer_policy(self, view: str, rule: str | None = None) -> AnswerPolicy | None:
        """The rule that abstains on doubtful answers in ``view``: the bundle's
        ``answer_rule`` unless ``rule`` names another (None: not calibrated for it)."""
        return self.answer_policies.get(view, {}).get(rule or self.answer_rule)

    def quality_model(self, kind: str | None = None) -> QualityModel:
        """The bundle's quality score, or another kind sharing its calibration references."""
        if kind is None or kind == self.quality.kind:
            return self.quality
        if kind in QUALITY_SCORES and kind not in self.quality.kinds:
            raise CmceError(f"this bundle has no calibration for the {kind} score; "
                            f"choose one of {', '.join(self.quality.kinds)}")
        return self.quality.with_kind(kind)

    def threshold_for(self, kind: str | None = None) -> float | None:
        """Rejection threshold of a quality score, in its own unit, calibrated to reject
        ``rejection_rate`` of the calibration gallery (None: not calibrated for that score).

        Bundles trained before per-score thresholds were stored fall back to the
        ``rejection_rate`` quantile of the calibration sample where one is stored
        (disagreement: the uncertainties, detection: the detector doubts).
        """
        if kind is None or kind == self.quality.kind:
            return self.rejection_threshold if np.isfinite(self.rejection_threshold) else None
        if kind in self.quality_thresholds:
            return float(self.quality_thresholds[kind])
        ref = {"disagreement": self.quality.uncertainty_reference, "detection": self.quality.doubt_reference}.get(kind)
        if ref:
            return float(np.quantile(np.asarray(ref, np.float64), 1.0 - self.rejection_rate))
        return None

    def to_dict(self) -> dict:
        return {
            "rejection_rate": self.rejection_rate,
            "rejection_threshold": self.rejection_threshold,
            "quality": self.quality.to_dict(),
            "open_set_far": self.open_set_far,
            "similarity_thresholds": dict(self.similarity_thresholds),
            **({"quality_thresholds": dict(self.quality_thresholds)} if self.quality_thresholds else {}),
            **({"answer_rule": self.answer_rule,
                "answer_policies": {v: {k: p.to_dict() for k, p in per.items()} for v, per in self.answer_policies.items()}}
               if self.answer_policies else {}),
            **({"cohort_norm": self.cohort_norm.to_dict()} if self.cohort_norm is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(
            rejection_rate=float(d.get("rejection_rate", 0.1)),
            rejection_threshold=float(d.get("rejection_threshold", float("inf"))),
            quality=QualityModel.from_dict(d.get("quality", {})),
            open_set_far=float(d.get("open_set_far", 1e-3)),
            similarity_thresholds={k: float(v) for k, v in d.get("similarity_thresholds", {}).items()},
            quality_thresholds={k: float(v) for k, v in d.get("quality_thresholds", {}).items()},
            answer_rule=str(d.get("answer_rule", "")),
            answer_policies={v: {k: AnswerPolicy.from_dict(p) for k, p in per.items()}
                             for v, per in d.get("answer_policies", {}).items()},
            cohort_norm=CohortNorm.from_dict(d["cohort_norm"]) if d.get("cohort_norm") else None,
        )


@dataclass(frozen=True)
class GalleryVectors:
    """Everything a gallery stores per entry, computed by ``Bundle.gallery_vectors``.

    Attributes:
        ensemble: (G, Dq) fused unit vectors (zero rows where no member is present).
        views: view name -> (G, Dq): each gallery model through its transformer, and
            ``"query"``, the query model's own embedding of the gallery image (zero rows
            where the entry lacks that embedding).
        uncertainty: (G,) mean pairwise cosine distance of the members (NaN where
            fewer than two embeddings can be compared).
        quality: (G,) quality score (higher = less trustworthy).
        members: the ensemble's member names: gallery models, then ``"query"`` when
            the query model's own embedding is a member.
        member_present: (G, M) bool, which members each entry was fused from.
        available: view name -> (G,) bool, the entries that view can match.
    """

    ensemble: np.ndarray
    views: Mapping[str, np.ndarray]
    uncertainty: np.ndarray
    quality: np.ndarray
    members: tuple[str, ...] = ()
    member_present: np.ndarray | None = None
    available: Mapping[str, np.ndarray] = field(default_factory=dict)

    def member_arrays(self) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """The members' vectors (``views``, in ``members`` order) and their presence, as
        ``QualityModel.score`` takes them."""
        vecs = [self.views[m] for m in self.members]
        pres = None if self.member_present is None else [self.member_present[:, i] for i in range(len(self.members))]
        return vecs, pres

    def entry_members(self, position: int) -> tuple[str, ...]:
        """The members entry ``position`` was fused from."""
        if self.member_present is None:
            return self.members
        return tuple(m for m, p in zip(self.members, self.member_present[position]) if p)


@dataclass
class Bundle:
    """A trained CMCE model set.

    Attributes:
        query_model: backbone name defining the shared space.
        gallery_models: backbone names whose transformed embeddings are ensembled.
        transformers: gallery model -> transformation network into the query space.
        query_member: whether the query model's own gallery embedding joins the ensemble.
        calibration: thresholds for rejection and "unknown".
        linear_maps: gallery model -> (Dg, Dq) least-squares map (the no-learning
            baseline, kept so that ``evaluate`` can report it).
        query_adapters: gallery model -> network mapping the *query* model's embedding
            into that gallery model's space (the distillation-style baseline, the
            opposite direction of CMCE; only ``evaluate`` uses it). Optional.
        fusion: how the members are fused (``FusionGate``; default the paper's plain mean).
        info: free-form training summary and metrics (JSON-serialisable).
        source: where it was loaded from.
    """

    query_model: str
    gallery_models: tuple[str, ...]
    transformers: dict[str, EmbeddingTransformer]
    query_member: bool = False
    calibration: Calibration = field(default_factory=Calibration)
    linear_maps: dict[str, np.ndarray] = field(default_factory=dict)
    query_adapters: dict[str, EmbeddingTransformer] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    source: str | None = None
    fusion: FusionGate = field(default_factory=FusionGate)

    def __post_init__(self) -> None:
        get_spec(self.query_model)
        missing = [m for m in self.gallery_models if m not in self.transformers]
        if missing or not self.gallery_models:
            raise BundleError(f"bundle needs one transformer per gallery model; missing: {missing}")
        dq = PRETRAINED[self.query_model].embedding_size
        for m in self.gallery_models:
            cfg = self.transformers[m].config
            if cfg.in_dim != get_spec(m).embedding_size or cfg.out_dim != dq:
                raise BundleError(
                    f"transformer {m!r} maps {cfg.in_dim}->{cfg.out_dim}, but {m} gives "
                    f"{get_spec(m).embedding_size}-d and {self.query_model} {dq}-d"
                )
        for m, a in self.query_adapters.items():
            if m not in self.gallery_models or a.config.in_dim != dq or a.config.out_dim != get_spec(m).embedding_size:
                raise BundleError(f"query adapter {m!r} does not map {self.query_model} into a gallery model's space")
        if self.fusion.kind != "mean" and self.fusion.members != self.member_names:
            raise BundleError(f"the fusion was learned for members {list(self.fusion.members)}, "
                              f"but the bundle's members are {list(self.member_names)}")

    @property
    def models(self) -> tuple[str, ...]:
        """Every backbone the gallery side runs (query model included)."""
        return (self.query_model,) + tuple(m for m in self.gallery_models if m != self.query_model)

    @property
    def view_names(self) -> tuple[str, ...]:
        """Columns of the side-by-side view: ensemble, each gallery model, query alone."""
        return ("ensemble",) + self.gallery_models + ("query",)

    def members(self, embeddings: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Transformed gallery embeddings per gallery model, (G, Dq) each."""
        out = {}
        for m in self.gallery_models:
            if m not in embeddings:
                raise CmceError(f"missing {m} embeddings; the bundle needs {list(self.models)}")
            out[m] = transform_embeddings(self.transformers[m], embeddings[m])
        return out

    def to(self, device: str) -> Bundle:
        """Move the transformation networks (and query adapters) to a torch device; returns self."""
        for module in (*self.transformers.values(), *self.query_adapters.values()):
            module.to(device)
        return self

    @property
    def member_names(self) -> tuple[str, ...]:
        """The ensemble's members: gallery models, then ``"query"`` if it is a member."""
        return self.gallery_models + (("query",) if self.query_member else ())

    def gallery_vectors(
        self,
        embeddings: Mapping[str, np.ndarray],
        detection_probability: np.ndarray,
        present: Mapping[str, np.ndarray] | None = None,
    ) -> GalleryVectors:
        """Fuse a gallery's embeddings into stored vectors.

        An entry may lack some backbones (an old gallery indexed by fewer models): it
        is fused from the members it has, its uncertainty compares those members, and
        the views of the models it lacks cannot match it.

        Args:
            embeddings: backbone name -> (G, D) raw embeddings; a backbone absent from
                the mapping is missing for every entry.
            detection_probability: (G,) detector probability per entry.
            present: backbone name -> (G,) bool, which rows hold a real embedding
                (default: every row of every backbone in ``embeddings``).

        Returns:
            GalleryVectors for the G entries.
        """
        prob = np.asarray(detection_probability, np.float32)
        g, dq = len(prob), PRETRAINED[self.query_model].embedding_size

        def has(name: str) -> np.ndarray:
            if name not in embeddings:
                return np.zeros(g, bool)
            p = None if present is None else present.get(name)
            return np.ones(g, bool) if p is None else np.asarray(p, bool)

        views: dict[str, np.ndarray] = {}
        available: dict[str, np.ndarray] = {}
        for m in self.gallery_models:
            rows = has(m)
            if rows.all():  # the common case: no masked copies of the inputs
                views[m] = transform_embeddings(self.transformers[m], embeddings[m])
            else:
                views[m] = np.zeros((g, dq), np.float32)
                if rows.any():
                    views[m][rows] = transform_embeddings(self.transformers[m], np.asarray(embeddings[m])[rows])
            available[m] = rows
        q_rows = has(self.query_model)
        if q_rows.all():
            query_vecs = np.asarray(embeddings[self.query_model], np.float32)
        else:
            query_vecs = np.zeros((g, dq), np.float32)
            if q_rows.any():
                query_vecs[q_rows] = np.asarray(embeddings[self.query_model], np.float32)[q_rows]
        member_vecs = [views[m] for m in self.gallery_models] + ([query_vecs] if self.query_member else [])
        member_rows = [available[m] for m in self.gallery_models] + ([q_rows] if self.query_member else [])
        ensemble = self.fusion.fuse(member_vecs, member_rows, prob)
        # Disagreement of the gallery models' transformed embeddings (the paper's signal);
        # with fewer than two of them, the query model's own embedding is compared too.
        n_gallery = np.sum([available[m] for m in self.gallery_models], axis=0)
        with_query = q_rows & (n_gallery < 2)
        uncertainty = mean_pairwise_cosine_distance([views[m] for m in self.gallery_models] + [query_vecs],
                                                    [available[m] for m in self.gallery_models] + [with_query],
                                                    normalise=False)
        # The metric gives 0.0 (no disagreement) below two members; a gallery stores NaN
        # there, "not measured", as it always has: the quality scores read it so (combined
        # ranks such an entry by doubt alone, learned marks the feature missing,
        # disagreement never rejects it), and so do the display ("–"), the answers' JSON
        # (null) and saved galleries (uncertainty.npy, scores.npz).
        compared = n_gallery + with_query
        uncertainty = np.where(compared >= 2, uncertainty, np.nan).astype(np.float32)
        mask = np.stack(member_rows, axis=1)
        views["query"], available["query"] = query_vecs, q_rows
        available["ensemble"] = mask.any(axis=1)
        quality = self.calibration.quality.score(uncertainty, prob, member_vecs, member_rows)
        return GalleryVectors(ensemble, views, uncertainty, quality, self.member_names, mask, available)

    def rejected(self, quality: np.ndarray, *, rate: float | None = None, threshold: float | None = None) -> np.ndarray:
        """(G,) bool: entries rejected at a quality threshold or a rejection rate.

        Default: the bundle's calibrated threshold. ``rate`` rejects that share of this
        gallery (most doubtful first); ``threshold`` rejects scores above it.
        """
        from cmce.metrics.rejection import gallery_rejection_mask

        q = np.asarray(quality, np.float32)
        if rate is not None:
            if not 0.0 <= rate < 1.0:
                raise CmceError(f"rejection rate must be in [0, 1), got {rate}")
            # an entry without a measurable score (NaN: a single member) is never rejected
            return ~gallery_rejection_mask(np.where(np.isnan(q), -np.inf, q), rate) if len(q) else np.zeros(0, bool)
        t = self.calibration.rejection_threshold if threshold is None else threshold
        return q > t

    def rejected_capped(self, quality: np.ndarray, *, rate: float | None = None, threshold: float | None = None,
                        kind: str | None = None) -> np.ndarray:
        """(G,) bool: what a gallery rejects when asked, for scores of the quality ``kind``.

        With ``rate`` or ``threshold``: ``rejected``. Without: the kind's calibrated
        threshold, capped at the calibrated share when the gallery has far more entries
        over it than the calibration predicts (``answers.doubt_marks``,
        ``answers.capped_rejection``), or the calibrated rate where the kind has no
        calibrated threshold.
        """
        cal = self.calibration
        if rate is None and threshold is None:
            calibrated = cal.threshold_for(kind)
            if calibrated is not None:
                marks = doubt_marks(quality, calibrated, cal.rejection_rate)
                return capped_rejection(quality, marks, cal.rejection_rate)
            rate = cal.rejection_rate
        return self.rejected(quality, rate=rate, threshold=threshold)

    def config_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "library": "cmce",
            "query_model": {"name": self.query_model, "sha256": PRETRAINED[self.query_model].sha256},
            "gallery_models": [
                {
                    "name": m,
                    "sha256": PRETRAINED[m].sha256,
                    "transformer": asdict(self.transformers[m].config),
                    **({"query_adapter": asdict(self.query_adapters[m].config)} if m in self.query_adapters else {}),
                }
                for m in self.gallery_models
            ],
            "query_member": self.query_member,
            # absent for the plain mean, so older bundles' fingerprints stay as they were
            **({"fusion": self.fusion.to_dict()} if self.fusion.kind != "mean" else {}),
            "calibration": self.calibration.to_dict(),
            "info": self.info,
        }


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
    from safetensors.torch import load_file

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
    try:
        query = cfg["query_model"]["name"]
        gallery = [(g["name"], g.get("sha256"), g["transformer"]) for g in cfg["gallery_models"]]
        adapter_arch = {g["name"]: g["query_adapter"] for g in cfg["gallery_models"] if "query_adapter" in g}
        _check_backbone(source, query, cfg["query_model"].get("sha256"))
        for name, sha, _ in gallery:
            _check_backbone(source, name, sha)
        state = {k: v.float() for k, v in load_file(str(w_path)).items()}
        if b_want:
            state.update({k: v.float() for k, v in load_file(str(b_path)).items()})
        transformers = {}
        for name, _, arch in gallery:
            module = create_transformer(TransformerConfig(**arch))
            prefix = f"{name}."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            module.load_state_dict(sub, strict=True)
            transformers[name] = module.eval()
        adapters = {}
        for name, arch in adapter_arch.items():
            module = create_transformer(TransformerConfig(**arch))
            prefix = f"adapter.{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
            adapters[name] = module.eval()
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
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{source}: {CONFIG_NAME} does not fit this version of cmce ({e!r})") from e
    except (RuntimeError, SafetensorError) as e:
        raise BundleError(f"{source}: {WEIGHTS_NAME} does not match its config ({e})") from e
    except CmceError as e:
        raise BundleError(f"{source}: {e}") from e


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


def bundle_summary(bundle: Bundle) -> dict[str, Any]:
    """What the app and CLI show about a bundle: models, licences, training data."""
    def row(name: str) -> dict:
        s = PRETRAINED[name]
        return {"name": name, "license": s.license, "training_data": s.training_data, "embedding_size": s.embedding_size}

    return {
        "source": bundle.source,
        "query_model": row(bundle.query_model),
        "gallery_models": [row(m) for m in bundle.gallery_models],
        "query_member": bundle.query_member,
        "rejection_rate": bundle.calibration.rejection_rate,
        "quality": bundle.calibration.quality.kind,
        "quality_description": bundle.calibration.quality.description,
        "open_set_far": bundle.calibration.open_set_far,
        "cohort_norm": (bundle.calibration.cohort_norm.to_dict() if bundle.calibration.cohort_norm is not None
                        else None),
        "answer_rule": bundle.calibration.answer_rule or None,
    }
