"""``cmce evaluate`` in steps: embed a dataset's photos once, then evaluate each kind of gallery.

``embed_evaluation_photos`` lists and embeds the photos (the held-out identities with
``heldout``) with every backbone the bundle and the old sides of ``--upgrade-from`` need;
``degrade_photos`` swaps degraded copies in for a share of the gallery photos
(``--gallery-degrade SPEC``); ``evaluate_gallery`` measures one gallery: the paper's table
(``evaluate.evaluate_embedded``), then, on request, the paired comparison of quality scores
and the upgrade from each old side. Several gallery kinds reuse the same embedded photos.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cmce.errors import CmceError
from cmce.experiments.degrade import DegradeSpec, degrade_gallery
from cmce.experiments.evaluate import evaluate_embedded, gallery_positions
from cmce.experiments.evaluate_upgrade import evaluate_upgrade, precision_effect, upgrade_costs
from cmce.experiments.splits import heldout_subset
from cmce.faces.detector import FaceDetector, create_detector
from cmce.io.datasets import LabelledImages, list_labelled_images
from cmce.method.bundle import load_bundle
from cmce.method.bundle_model import Bundle
from cmce.method.precision import at_precision
from cmce.metrics.results import Evaluation
from cmce.models.embed import EmbeddedFiles, EmbeddingCache, embed_files

__all__ = ["CLEAN", "EvaluationPhotos", "UpgradeSource", "degrade_photos", "embed_evaluation_photos",
           "evaluate_ablations", "evaluate_gallery", "load_upgrade_source", "parse_gallery_kinds"]

CLEAN = "clean"
"""The ``--gallery-degrade`` value that leaves the gallery as it is (for a sweep of several kinds)."""


@dataclass(frozen=True)
class UpgradeSource:
    """One ``--upgrade-from``: as given, and the old side it names.

    Attributes:
        source: the text given (a bundle folder or Hub id, or ``backbone:NAME``).
        old: the old bundle, or the one backbone an old library holds.
    """

    source: str
    old: Bundle | str

    @property
    def models(self) -> tuple[str, ...]:
        """The backbones the old gallery holds."""
        return (self.old,) if isinstance(self.old, str) else self.old.models


def load_upgrade_source(spec: str) -> UpgradeSource:
    """``--upgrade-from``: a bundle (folder or Hub id), or ``backbone:NAME`` (a one-model library).

    Raises:
        CmceError: an unknown backbone (the message lists the valid ones) or an unreadable bundle.
    """
    from cmce.models.backbones import get_spec

    if spec.startswith("backbone:"):
        name = spec.removeprefix("backbone:")
        get_spec(name)  # unknown names fail with the list of valid ones
        return UpgradeSource(spec, name)
    return UpgradeSource(spec, load_bundle(spec))


def parse_gallery_kinds(texts: Sequence[str] | None) -> list[DegradeSpec | None]:
    """The galleries ``--gallery-degrade`` asks for: None for the clean one (no option, or ``clean``).

    Raises:
        CmceError: a spec that cannot be read (before anything is embedded).
    """
    if not texts:
        return [None]
    return [None if t.strip().lower() == CLEAN else DegradeSpec.parse(t) for t in texts]


@dataclass(frozen=True)
class EvaluationPhotos:
    """A dataset's photos as ``evaluate`` measures on them, embedded once.

    Attributes:
        data_dir: the folder-per-identity dataset.
        dataset: the photos measured on (the held-out identities with ``heldout``).
        heldout: whether ``dataset`` is the bundle's held-out identities only.
        detection: the detector kind the photos (and degraded copies) are detected with.
        models: every backbone they are embedded with.
        detector: the face detector of ``detection`` (degraded copies are detected with it too).
        clean: the photos, embedded.
        cache: the embedding cache (None: none).
        progress: whether embedding shows progress bars.
    """

    data_dir: Path
    dataset: LabelledImages
    heldout: bool
    detection: str
    models: tuple[str, ...]
    detector: FaceDetector
    clean: EmbeddedFiles
    cache: EmbeddingCache | None
    progress: bool

    @property
    def data(self) -> dict:
        """The JSON's ``data`` section: the dataset's folder name, whether held out, the detection."""
        return {"dir": str(self.data_dir.resolve().name), "heldout_only": bool(self.heldout),
                "detection": self.detection}


def embed_evaluation_photos(data_dir: str | Path, bundle: Bundle, sources: Sequence[UpgradeSource] = (), *,
                            heldout: bool, detection: str = "plain", cache: EmbeddingCache | None = None,
                            progress: bool = True) -> EvaluationPhotos:
    """List and embed the photos ``evaluate`` measures on, with the bundle's and every old side's backbones.

    Raises:
        DatasetError: ``heldout`` on a dataset the bundle was not trained on.
        CmceError: two bundles that held out different identities.
    """
    ds = list_labelled_images(data_dir)
    if heldout:
        held = heldout_subset(ds, bundle)
        for s in sources:
            if not isinstance(s.old, str) and heldout_subset(ds, s.old).paths != held.paths:
                raise CmceError("--upgrade-from: the two bundles held out different identities; train both on the "
                                "same data with the same --seed, --val-fraction and --test-fraction")
        ds = held
    models = tuple(dict.fromkeys([*bundle.models, *(m for s in sources for m in s.models)]))
    detector = create_detector(detection)  # the photos and their degraded copies alike
    embedded = embed_files(list(ds.paths), list(models), detector=detector, cache=cache, progress=progress)
    return EvaluationPhotos(Path(data_dir), ds, heldout, detection, models, detector, embedded, cache, progress)


def degrade_photos(photos: EvaluationPhotos, spec: DegradeSpec, *, seed: int = 0) -> tuple[EmbeddedFiles, dict]:
    """The photos with a share of the gallery photos degraded by ``spec`` (queries stay clean).

    Returns:
        (the embedded photos with the degraded copies swapped in, the degradation report).
    """
    embedded, report, _ = degrade_gallery(photos.clean, gallery_positions(photos.clean, photos.dataset.labels), spec,
                                          seed=seed, models=list(photos.models), cache=photos.cache,
                                          progress=photos.progress, detector=photos.detector)
    return embedded, report


def evaluate_gallery(photos: EvaluationPhotos, bundle: Bundle, embedded: EmbeddedFiles, *,
                     degrade_report: dict | None = None, sources: Sequence[UpgradeSource] = (),
                     precision: str = "float32", compare_scores: bool = False, ci_resamples: int = 1000) -> Evaluation:
    """One gallery's evaluation, as ``evaluate --json`` writes it.

    Args:
        photos: the dataset, embedded (``embed_evaluation_photos``).
        bundle: the bundle evaluated.
        embedded: ``photos.clean``, or its degraded version (``degrade_photos``).
        degrade_report: the degradation report of ``embedded`` (None: a clean gallery).
        sources: old sides of the upgrade experiment (``--upgrade-from``), in order.
        precision: the precision the new bundle re-projects the old galleries in.
        compare_scores: add the paired comparison of quality scores (``score_comparison``).

    Returns:
        The evaluation: ``evaluate_embedded``'s sections, then ``score_comparison`` (when
        asked), ``gallery_degrade`` (a degraded gallery), ``upgrade`` (one old side; with
        several, ``upgrades``: one per side, in order) and ``data``, in that order in its JSON.
    """
    labels = photos.dataset.labels
    result = evaluate_embedded(embedded, labels, bundle, ci_resamples=ci_resamples)
    if compare_scores:
        from cmce.experiments.score_comparison import bundle_score_comparison

        result["score_comparison"] = bundle_score_comparison(embedded, labels, bundle,
                                                             resamples=ci_resamples).to_dict()
    if degrade_report is not None:
        result["gallery_degrade"] = degrade_report
    upgrades = [_upgrade(embedded, labels, bundle, s, precision) for s in sources]
    if len(upgrades) == 1:
        result["upgrade"] = upgrades[0]
    elif upgrades:
        result["upgrades"] = upgrades
    result["data"] = photos.data
    return Evaluation.from_dict(result)


def _upgrade(embedded: EmbeddedFiles, labels: Sequence[str], bundle: Bundle, source: UpgradeSource,
             precision: str) -> dict:
    """The upgrade experiment from one old side, the new bundle re-projecting in ``precision``."""
    serving = at_precision(bundle, precision)
    costs = upgrade_costs(embedded, labels, bundle, source.models, serving=serving)
    up = evaluate_upgrade(embedded, labels, serving, source.old, seconds_per_1k_entries=costs)
    up["from"]["source"] = source.source
    if precision != "float32":
        up["precision"] = precision_effect(embedded, labels, bundle, serving, source.models, precision=precision)
    return up


def evaluate_ablations(photos: EvaluationPhotos, bundle: Bundle, embedded: EmbeddedFiles,
                       degrade_report: dict | None, *, ci_resamples: int = 1000) -> dict:
    """``--ablations``: the paper's ablations, trained on the bundle's training identities.

    Measured on the clean gallery, and on the degraded one when ``degrade_report`` says
    ``embedded`` is (``ablations.run_ablations``).
    """
    from cmce.experiments.ablations import run_ablations
    from cmce.experiments.splits import SplitConfig, dataset_splits

    full = list_labelled_images(photos.data_dir)
    # the training identities as the bundle was trained on them: plain detection, whatever --detection says
    train_emb = embed_files(list(full.paths), list(bundle.models), cache=photos.cache, progress=photos.progress)
    sp = dataset_splits(full.labels, SplitConfig(**bundle.info["training"]["split"]))
    conditions = {"clean": photos.clean}
    if degrade_report is not None:
        conditions[degrade_report["spec"]] = embedded
    return run_ablations(train_emb, full.labels, sp["train"] | sp["val"], conditions, photos.dataset.labels,
                         bundle, ci_resamples=ci_resamples)
