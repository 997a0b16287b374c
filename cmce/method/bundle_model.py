"""A bundle in memory: its networks, calibration and the gallery vectors it serves.

``Bundle`` holds the query model's name, the gallery models' transformers, the fusion,
the quality score and the answer rule's calibration (``Calibration``); ``Bundle.gallery_vectors``
turns raw member embeddings into what a gallery serves (``GalleryVectors``). Reading and
writing bundles (folder or Hub) is ``cmce.method.bundle``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cmce.errors import BundleError, CmceError
from cmce.method.answer_rules import AnswerPolicy
from cmce.method.answers import capped_rejection, doubt_marks
from cmce.method.ensemble import QUALITY_SCORES, FusionGate, QualityModel
from cmce.method.unknown import CohortNorm
from cmce.metrics.uncertainty import mean_pairwise_cosine_distance
from cmce.models.backbones import PRETRAINED, get_spec
from cmce.models.transform import (
    EmbeddingTransformer,
    transform_embeddings,
)

__all__ = ["FORMAT_VERSION", "Bundle", "Calibration", "GalleryVectors", "bundle_summary"]

FORMAT_VERSION = 1
"""Version of a bundle's ``config.json`` this cmce writes and reads."""


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
