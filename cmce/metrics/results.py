"""Evaluation results as typed, immutable values: what ``cmce evaluate --json`` writes, read and written here.

An evaluation's JSON (``evaluate --json``, a bundle's recorded ``info["evaluation"]``) is
``Evaluation.to_dict()``; ``Evaluation.from_dict`` reads it back and checks the fields the
tables need (a missing one raises ``ResultError`` naming it). The tables' sections are typed
(``EvaluationRow``, ``RejectionStep``, ``QualityStep``, ``GalleryEnsembleRejection``,
``UpgradeResult``); the others (the answers, the open set, the degradation report, the
ablations, ...) are kept as read-only mappings, unknown keys as ``extra``, and every object
remembers the order of the keys it was read with, so that for every file ``evaluate`` wrote,
older ones included, ``Evaluation.from_dict(d).to_dict() == d``, key order and all.

A file holds one evaluation, or several (``evaluate --gallery-degrade`` given more than
once): ``{"evaluations": [...]}``. ``load_evaluations`` and ``save_evaluations`` read and
write both; NaN is written as ``null`` (``json_safe``).

Example:
    >>> row = EvaluationRow.from_dict({"name": "CMCE ensemble", "kind": "ensemble", "query": "sface",
    ...     "gallery": ["dlib-resnet34"], "recall_at_1": 0.98, "recall_at_5": 0.99, "map": 0.97,
    ...     "tar_at_far_1e-3": 0.95, "recall_at_1_ci95": [0.97, 0.99]})
    >>> row.recall_at_1_ci95, row.gallery
    ((0.97, 0.99), ('dlib-resnet34',))
    >>> list(row.to_dict())[-2:]
    ['tar_at_far_1e-3', 'recall_at_1_ci95']
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from cmce.errors import CmceError, one_named

__all__ = [
    "Evaluation", "EvaluatedBundle", "EvaluationRow", "GalleryEnsembleRejection", "GalleryEnsembleStep", "Interval",
    "QualityStep", "RejectionStep", "ResultError", "UpgradeComparison", "UpgradeResult", "UpgradeRow", "UpgradeSide",
    "evaluations_json", "frozen", "json_safe", "load_evaluations", "save_evaluations", "thawed",
]

Interval = tuple[float, float]
"""A 95% interval ``(low, high)``; a bound is None where the JSON has ``null`` (a NaN)."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty():
    """A dataclass field defaulting to the empty read-only mapping."""
    return field(default_factory=lambda: _EMPTY)


class ResultError(CmceError):
    """A JSON that is not an evaluation: a missing or malformed field (named in the message)."""


def frozen(value: Any) -> Any:
    """JSON data made read-only: objects become mappings that refuse writes, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(frozen(v) for v in value)
    return value


def thawed(value: Any) -> Any:
    """``frozen``'s inverse: plain dicts and lists again (what ``json`` writes)."""
    if isinstance(value, Mapping):
        return {k: thawed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thawed(v) for v in value]
    return value


def json_safe(value: Any) -> Any:
    """``value`` with every NaN float replaced by None (JSON has no NaN; it reads as null)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------- reading and writing fields


@dataclass(frozen=True)
class _Field:
    """One JSON key of a typed result: its attribute, whether it must be there, how it is read and written."""

    key: str
    attr: str
    required: bool = False
    read: Callable[[Any, str], Any] = lambda v, where: v
    write: Callable[[Any], Any] = lambda v: v


def _names(v: Any, where: str) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise ResultError(f"{where}: expected a list of names, got {v!r}")
    return tuple(v)


def _interval(v: Any, where: str) -> Interval | None:
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ResultError(f"{where}: expected an interval [low, high], got {v!r}")
    return v[0], v[1]


def _list(v: Any) -> list | None:
    return None if v is None else list(v)


def _one(cls) -> dict:
    return {"read": lambda v, where: None if v is None else cls.from_dict(v, where=where), "write": lambda v: v.to_dict()}


def _many(cls) -> dict:
    def read(v: Any, where: str) -> tuple | None:
        if v is None:
            return None
        if not isinstance(v, (list, tuple)):
            raise ResultError(f"{where}: expected a list, got {type(v).__name__}")
        return tuple(cls.from_dict(x, where=f"{where}[{i}]") for i, x in enumerate(v))

    return {"read": read, "write": lambda v: [x.to_dict() for x in v]}


def _by_name(cls) -> dict:
    def read(v: Any, where: str) -> Mapping:
        if not isinstance(v, Mapping):
            raise ResultError(f"{where}: expected an object, got {type(v).__name__}")
        return MappingProxyType({k: _many(cls)["read"](x, f"{where}.{k}") for k, x in v.items()})

    return {"read": read, "write": lambda v: {k: [x.to_dict() for x in xs] for k, xs in v.items()}}


_NAMES = {"read": _names, "write": list}
_INTERVAL = {"read": _interval, "write": _list}
_FROZEN = {"read": lambda v, where: frozen(v), "write": thawed}


class _Typed:
    """``from_dict`` / ``to_dict`` of a frozen dataclass from its ``_FIELDS``; unknown keys go to ``extra``."""

    _FIELDS: ClassVar[tuple[_Field, ...]] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str | None = None):
        """Read one from its JSON object.

        Raises:
            ResultError: not an object, a required key missing, or a field of the wrong shape.
        """
        where = where or cls.__name__
        if not isinstance(d, Mapping):
            raise ResultError(f"{where}: expected an object, got {type(d).__name__}")
        values = {}
        for f in cls._FIELDS:
            if f.key in d:
                values[f.attr] = f.read(d[f.key], f"{where}.{f.key}")
            elif f.required:
                raise ResultError(f"{where}: missing {f.key!r}")
        known = {f.key for f in cls._FIELDS}
        return cls(**values, extra=frozen({k: v for k, v in d.items() if k not in known}), keys=tuple(d))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: the keys it was read with, in their order (or every field set), then new ones.

        A field left at its default is written only if it was read (a ``null`` read is written back).
        """
        defaults = {f.name: f.default if f.default_factory is MISSING else f.default_factory() for f in fields(self)}
        values = {}
        for f in self._FIELDS:
            value = getattr(self, f.attr)
            if f.key in self.keys or (value is not None and value != defaults[f.attr]):
                values[f.key] = None if value is None else f.write(value)
        values.update({k: thawed(v) for k, v in self.extra.items()})
        out = {k: values.pop(k) for k in self.keys if k in values}
        out.update(values)
        return out


# --------------------------------------------------------------------------- the paper's table


@dataclass(frozen=True)
class EvaluatedBundle(_Typed):
    """The bundle an evaluation measured (``bundle`` in the JSON)."""

    query: str
    gallery: tuple[str, ...]
    query_member: bool | None = None
    quality: str | None = None
    source: str | None = None
    extra: Mapping[str, Any] = _empty()
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    _FIELDS: ClassVar = (_Field("query", "query", True), _Field("gallery", "gallery", True, **_NAMES),
                         _Field("query_member", "query_member"), _Field("quality", "quality"),
                         _Field("source", "source"))


@dataclass(frozen=True)
class EvaluationRow(_Typed):
    """One row of the paper's table: a view of the gallery searched by a query model.

    Attributes:
        name: the row (``"CMCE ensemble"``, ``"dlib-resnet34 -> sface (transformer)"``, ...).
        kind: ``symmetric``, ``asymmetric``, ``ensemble`` or ``baseline``.
        query: the query model; gallery: the gallery side's members.
        recall_at_1, recall_at_5, map, tar_at_far_1e3: the figures (fractions; None: NaN).
        recall_at_1_ci95, tar_at_far_1e3_ci95: their 95% intervals, where recorded.
    """

    name: str
    kind: str
    query: str
    gallery: tuple[str, ...]
    recall_at_1: float | None
    recall_at_5: float | None = None
    map: float | None = None
    tar_at_far_1e3: float | None = None
    recall_at_1_ci95: Interval | None = None
    tar_at_far_1e3_ci95: Interval | None = None
    extra: Mapping[str, Any] = _empty()
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    _FIELDS: ClassVar = (
        _Field("name", "name", True), _Field("kind", "kind", True), _Field("query", "query", True),
        _Field("gallery", "gallery", True, **_NAMES), _Field("recall_at_1", "recall_at_1", True),
        _Field("recall_at_5", "recall_at_5"), _Field("map", "map"), _Field("tar_at_far_1e-3", "tar_at_far_1e3", True),
        _Field("recall_at_1_ci95", "recall_at_1_ci95", **_INTERVAL),
        _Field("tar_at_far_1e-3_ci95", "tar_at_far_1e3_ci95", **_INTERVAL))


@dataclass(frozen=True)
class RejectionStep(_Typed):
    """The paper's rejection metric at one rate: Recall@1 of the queries kept (the served ensemble)."""

    rate: float
    recall_at_1: float | None = None
    recall_at_1_ci95: Interval | None = None
    random_recall_at_1: float | None = None
    random_error_cut: float | None = None
    detection_recall_at_1: float | None = None
    relative_error_cut: float | None = None
    relative_error_cut_ci95: Interval | None = None
    open_set_accuracy: float | None = None
    extra: Mapping[str, Any] = _empty()
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    _FIELDS: ClassVar = (
        _Field("rate", "rate", True), _Field("recall_at_1", "recall_at_1"),
        _Field("recall_at_1_ci95", "recall_at_1_ci95", **_INTERVAL), _Field("random_recall_at_1", "random_recall_at_1"),
        _Field("random_error_cut", "random_error_cut"), _Field("detection_recall_at_1", "detection_recall_at_1"),
        _Field("relative_error_cut", "relative_error_cut"),
        _Field("relative_error_cut_ci95", "relative_error_cut_ci95", **_INTERVAL),
        _Field("open_set_accuracy", "open_set_accuracy"))


@dataclass(frozen=True)
class QualityStep(_Typed):
    """Rejection by one quality score at one rate: Recall@1 of the kept queries and the error cut."""

    rate: float | None = None
    recall_at_1: float | None = None
    recall_at_1_ci95: Interval | None = None
    error_cut: float | None = None
    error_cut_ci95: Interval | None = None
    extra: Mapping[str, Any] = _empty()
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    _FIELDS: ClassVar = (_Field("rate", "rate"), _Field("recall_at_1", "recall_at_1"),
                         _Field("recall_at_1_ci95", "recall_at_1_ci95", **_INTERVAL), _Field("error_cut", "error_cut"),
                         _Field("error_cut_ci95", "error_cut_ci95", **_INTERVAL))


@dataclass(frozen=True)
class GalleryEnsembleStep:
    """One rate of rejection on the gallery models' own ensemble: random, and each quality score.

    In the JSON the scores' figures are flat keys (``disagreement_recall_at_1``, ...).
    """

    rate: float
    random_recall_at_1: float | None = None
    random_error_cut: float | None = None
    scores: Mapping[str, QualityStep] = _empty()
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "GalleryEnsembleStep") -> GalleryEnsembleStep:
        if not isinstance(d, Mapping) or "rate" not in d:
            raise ResultError(f"{where}: expected an object with a 'rate', got {d!r}")
        names = [k.removesuffix("_recall_at_1") for k in d if k.endswith("_recall_at_1") and k != "random_recall_at_1"]
        scores = {s: QualityStep.from_dict({k.removeprefix(f"{s}_"): v for k, v in d.items() if k.startswith(f"{s}_")},
                                           where=f"{where}.{s}") for s in names}
        return cls(d["rate"], d.get("random_recall_at_1"), d.get("random_error_cut"), MappingProxyType(scores),
                   keys=tuple(d))

    def to_dict(self) -> dict[str, Any]:
        out = {"rate": self.rate, "random_recall_at_1": self.random_recall_at_1}
        if self.random_error_cut is not None or "random_error_cut" in self.keys:
            out["random_error_cut"] = self.random_error_cut
        for s, q in self.scores.items():
            out.update({f"{s}_{k}": v for k, v in q.to_dict().items()})
        ordered = {k: out.pop(k) for k in self.keys if k in out}
        return {**ordered, **out}


@dataclass(frozen=True)
class GalleryEnsembleRejection(_Typed):
    """Rejection on the gallery models' own ensemble (the paper's setting): Recall@1, then per rate."""

    recall_at_1: float | None
    recall_at_1_ci95: Interval | None = None
    rates: tuple[GalleryEnsembleStep, ...] = ()
    extra: Mapping[str, Any] = _empty()
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    _FIELDS: ClassVar = (_Field("recall_at_1", "recall_at_1", True),
                         _Field("recall_at_1_ci95", "recall_at_1_ci95", **_INTERVAL),
                         _Field("rates", "rates", True, **_many(GalleryEnsembleStep)))


# --------------------------------------------------------------------------- the upgrade experiment


@dataclass(frozen=True)
class UpgradeSide(_Typed):
    """One side of an upgrade: its query model, the gallery members it serves, where it came from."""

    query: str
    gallery: tuple[str, ...]
    source: str | None = None
    extra: Mapping[str, Any] = _empty()
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    _FIELDS: ClassVar = (_Field("query", "query", True), _Field("gallery", "gallery", True, **_NAMES),
                         _Field("source", "source"))


@dataclass(frozen=True)
class UpgradeRow(_Typed):
    """One stage of the upgrade (``before``, ``no_backfill``, ``backfill``) and what it costs."""

    stage: str
    members: tuple[str, ...]
    query: str
    recall_at_1: float | None
    recall_at_1_ci95: Interval | None = None
    tar_at_far_1e2: float | None = None
    tar_at_far_1e3: float | None = None
    seconds_per_1k_entries: float | None = None
    photos_read: int | None = None
    extra: Mapping[str, Any] = _empty()
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    _FIELDS: ClassVar = (
        _Field("stage", "stage", True), _Field("members", "members", True, **_NAMES), _Field("query", "query", True),
        _Field("recall_at_1", "recall_at_1", True), _Field("recall_at_1_ci95", "recall_at_1_ci95", **_INTERVAL),
        _Field("tar_at_far_1e-2", "tar_at_far_1e2"), _Field("tar_at_far_1e-3", "tar_at_far_1e3"),
        _Field("seconds_per_1k_entries", "seconds_per_1k_entries"), _Field("photos_read", "photos_read"))


@dataclass(frozen=True)
class UpgradeComparison(_Typed):
    """The paired Recall@1 gain from one stage to the next, with its 95% interval."""

    from_stage: str
    to_stage: str
    recall_at_1_gain: float | None
    ci95: Interval | None = None
    extra: Mapping[str, Any] = _empty()
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    _FIELDS: ClassVar = (_Field("from", "from_stage", True), _Field("to", "to_stage", True),
                         _Field("recall_at_1_gain", "recall_at_1_gain", True), _Field("ci95", "ci95", **_INTERVAL))


@dataclass(frozen=True)
class UpgradeResult(_Typed):
    """The paper's query-model update from one old side (``evaluate --upgrade-from``).

    Attributes:
        old, new: the two sides (``from`` and ``to`` in the JSON).
        counts: gallery entries and queries.
        rows: the stages; comparisons: the paired gains between them.
        ensemble_size: no-backfill figures by number of members (as recorded).
        precision: what re-projecting in int8 changed against float32 (``--precision int8``), if asked.
    """

    old: UpgradeSide
    new: UpgradeSide
    rows: tuple[UpgradeRow, ...]
    counts: Mapping[str, Any] = _empty()
    comparisons: tuple[UpgradeComparison, ...] = ()
    ensemble_size: tuple[Mapping[str, Any], ...] | None = None
    precision: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = _empty()
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    _FIELDS: ClassVar = (
        _Field("from", "old", True, **_one(UpgradeSide)), _Field("to", "new", True, **_one(UpgradeSide)),
        _Field("counts", "counts", **_FROZEN), _Field("rows", "rows", True, **_many(UpgradeRow)),
        _Field("comparisons", "comparisons", **_many(UpgradeComparison)),
        _Field("ensemble_size", "ensemble_size", **_FROZEN), _Field("precision", "precision", **_FROZEN))


# --------------------------------------------------------------------------- one evaluation


@dataclass(frozen=True)
class Evaluation(_Typed):
    """One evaluation of a bundle on one gallery (what ``evaluate --json`` writes for it).

    Attributes:
        bundle: the bundle measured (None in a bundle's own recorded evaluation).
        counts: files, faces found, gallery entries, queries, ...
        rows: the paper's table.
        answers: every query answered as the app answers (``evaluate_answers.answer_report``).
        rejection: the paper's kept-queries metric per rate (the served ensemble, shipped score).
        rejection_by_quality: quality score -> its rejection steps (the served ensemble).
        rejection_gallery_ensemble: the same on the gallery models' own ensemble.
        open_set: the similarity threshold and open-set accuracy.
        score_comparison: the paired comparison of quality scores (``--compare-scores``).
        gallery_degrade: the degradation report (None: a clean gallery).
        upgrade: the upgrade from one old side; upgrades: from several, in order.
        data: the dataset's folder name, whether held out, the detection.
        ablations: the paper's ablations (``--ablations``).
    """

    bundle: EvaluatedBundle | None = None
    counts: Mapping[str, Any] | None = None
    rows: tuple[EvaluationRow, ...] = ()
    answers: Mapping[str, Any] | None = None
    rejection_metric: str | None = None
    rejection: tuple[RejectionStep, ...] = ()
    rejection_by_quality: Mapping[str, tuple[QualityStep, ...]] = _empty()
    rejection_gallery_ensemble: GalleryEnsembleRejection | None = None
    open_set: Mapping[str, Any] | None = None
    score_comparison: Mapping[str, Any] | None = None
    gallery_degrade: Mapping[str, Any] | None = None
    upgrade: UpgradeResult | None = None
    upgrades: tuple[UpgradeResult, ...] | None = None
    data: Mapping[str, Any] | None = None
    ablations: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = _empty()
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    _FIELDS: ClassVar = (
        _Field("bundle", "bundle", **_one(EvaluatedBundle)), _Field("counts", "counts", **_FROZEN),
        _Field("rows", "rows", **_many(EvaluationRow)), _Field("answers", "answers", **_FROZEN),
        _Field("rejection_metric", "rejection_metric"), _Field("rejection", "rejection", **_many(RejectionStep)),
        _Field("rejection_by_quality", "rejection_by_quality", **_by_name(QualityStep)),
        _Field("rejection_gallery_ensemble", "rejection_gallery_ensemble", **_one(GalleryEnsembleRejection)),
        _Field("open_set", "open_set", **_FROZEN), _Field("score_comparison", "score_comparison", **_FROZEN),
        _Field("gallery_degrade", "gallery_degrade", **_FROZEN), _Field("upgrade", "upgrade", **_one(UpgradeResult)),
        _Field("upgrades", "upgrades", **_many(UpgradeResult)), _Field("data", "data", **_FROZEN),
        _Field("ablations", "ablations", **_FROZEN))

    #: The sections a bundle records of its evaluation (``evaluate --record``), in that order.
    RECORDED: ClassVar[tuple[str, ...]] = ("data", "counts", "rows", "answers", "rejection", "rejection_by_quality",
                                           "rejection_gallery_ensemble", "open_set", "gallery_degrade")

    def row(self, name: str) -> EvaluationRow:
        """The row called ``name``.

        Raises:
            ResultError: no such row; the message lists the rows there are.
        """
        return one_named(self.rows, name, key=lambda r: r.name, what="row", error=ResultError)

    @property
    def upgrade_results(self) -> tuple[UpgradeResult, ...]:
        """Every upgrade experiment: the one of ``upgrade``, or those of ``upgrades``."""
        return (self.upgrade,) if self.upgrade is not None else (self.upgrades or ())

    @property
    def degrade_spec(self) -> str | None:
        """The gallery degradation recorded (``gallery_degrade``, or any key naming one, under ``data`` too), or None.

        A mapping is described by its ``spec`` (or ``kind``) field.
        """
        scopes = [{"gallery_degrade": self.gallery_degrade, **self.extra}, self.data or {}]
        for scope in scopes:
            for key, value in scope.items():
                if "degrad" not in key.lower() or value in (None, "", False, "none"):
                    continue
                if isinstance(value, Mapping):
                    value = value.get("spec") or value.get("kind") or json.dumps(thawed(value), sort_keys=True)
                return str(value)
        return None

    def recorded(self) -> dict[str, Any]:
        """The JSON a bundle records of this evaluation (``RECORDED``; the degradation only if any), NaN as null."""
        d = self.to_dict()
        return json_safe({k: d[k] for k in self.RECORDED if k in d})


def evaluations_json(evaluations: Sequence[Evaluation]) -> str:
    """The text of an evaluation file: one evaluation's object, or ``{"evaluations": [...]}`` for several."""
    if not evaluations:
        raise ResultError("no evaluation to write")
    body = evaluations[0].to_dict() if len(evaluations) == 1 else {"evaluations": [e.to_dict() for e in evaluations]}
    return json.dumps(json_safe(body), indent=2) + "\n"


def save_evaluations(path: str | os.PathLike, evaluations: Sequence[Evaluation]) -> None:
    """Write ``evaluations`` to ``path`` (``evaluations_json``)."""
    Path(path).write_text(evaluations_json(evaluations))


def load_evaluations(path: str | os.PathLike) -> tuple[Evaluation, ...]:
    """The evaluations of a file ``evaluate --json`` wrote: one, or several.

    Raises:
        ResultError: unreadable JSON, or not an evaluation (the message names what is missing).
    """
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ResultError(f"{path}: not a readable evaluation JSON ({e})") from e
    if isinstance(d, Mapping) and list(d) == ["evaluations"]:
        return tuple(Evaluation.from_dict(e, where=f"{path}: evaluations[{i}]") for i, e in enumerate(d["evaluations"]))
    return (Evaluation.from_dict(d, where=str(path)),)
