"""Archive search: galleries too big for the in-memory ``Gallery``, searched from their derived data.

``cmce.gallery.archive_build`` builds a bundle's archive derived data by streaming over a
gallery's shards. What stays in RAM while serving: the compact index (about 40 bytes per entry, see
``cmce.search.compact``), the quality scores (4 bytes) and the search mask (1 byte); the
vectors, the other scores and the entry metadata are memory-mapped from disk and only
the rows of a search's hits are read. Below ``COMPACT_FROM`` entries the exact
``VectorIndex`` is built from ``vectors.npy`` when the archive is opened.

Answers work as in ``Gallery.search_vector`` (through the same ``answers.decide_answer``):
every active entry is searched; entries whose quality score is above the bundle's
calibrated threshold are marked doubtful, not removed; a query whose best score does not
stand out enough from the next people's (``unknown.CohortNorm``; in archives too small
for its cohort: whose best score is below the ensemble's similarity threshold) is
"unknown"; an entry the caller rejects never
appears among the matches, and when it is a query's best match the answer is "Unknown"
(doubtful), never the next person.
"""


from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cmce.errors import CmceError, GalleryError
from cmce.gallery.archive_build import ARCHIVE_KIND, ENTRY_COLUMNS, META_FILE
from cmce.gallery.ingest import DEFAULT_GALLERY_LIMITS, GalleryLimits
from cmce.gallery.memory import Gallery
from cmce.gallery.persistence import bundle_fingerprint
from cmce.gallery.results import Match, QueryResult, ViewResult
from cmce.gallery.searchable import ImageInput, SearchableGallery, detect_query, search_photo
from cmce.method.answers import DoubtMarks, decide_answer, doubt_marks
from cmce.method.bundle_model import Bundle
from cmce.method.engine import FaceEngine
from cmce.method.unknown import gallery_doubt, unknown_norm, unknown_note
from cmce.search.base import VectorSearch
from cmce.search.compact import CompactIndex
from cmce.search.index import VectorIndex
from cmce.storage.corrections import read_corrections
from cmce.storage.manifest import read_manifest, require_manifest, shards_signature
from cmce.storage.shards import require_pyarrow

__all__ = ["ArchiveGallery", "open_gallery"]

_DEPRECATED = {"ArchiveMatch": Match, "ArchiveResult": ViewResult}


def __getattr__(name: str) -> object:
    """``ArchiveMatch`` and ``ArchiveResult``: deprecated names of ``results.Match`` and ``results.ViewResult``."""
    if name in _DEPRECATED:
        new = _DEPRECATED[name]
        warnings.warn(f"cmce.gallery.archive.{name} is deprecated: archives answer with "
                      f"cmce.gallery.results.{new.__name__}", DeprecationWarning, stacklevel=2)
        return new
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_gallery(folder: str | os.PathLike, engine: FaceEngine,
                 limits: GalleryLimits = DEFAULT_GALLERY_LIMITS) -> SearchableGallery:
    """Open a saved gallery for searching, the way its manifest says.

    An archive gallery (its derived data is the ``archive`` kind, see ``build_archive_index``)
    is opened as an ``ArchiveGallery``, any other as an in-memory ``Gallery``
    (``Gallery.load``: re-projected into the engine's bundle).

    Raises:
        GalleryError: missing or corrupt folder, no member of the bundle stored, or an
            archive index of another bundle or older than the shards.
    """
    if ((read_manifest(folder) or {}).get("derived") or {}).get("kind") == ARCHIVE_KIND:
        return ArchiveGallery.open(folder, engine.bundle, engine=engine)
    return Gallery.load(folder, engine, limits)


class ArchiveGallery:
    """Search a gallery through its archive derived data (see the module docstring).

    Open with :meth:`open`. Searches are thread-safe; the object is read-only. It answers
    in the ``"ensemble"`` view only, through the ``SearchableGallery`` interface of every
    gallery (``search_image`` needs the ``engine`` that detects and embeds query photos).
    """

    def __init__(self, folder: Path, bundle: Bundle, meta: dict, index: VectorSearch,
                 engine: FaceEngine | None = None) -> None:
        self.folder = folder
        self.bundle = bundle
        self.engine = engine
        self.meta = meta
        self.index = index
        derived = folder / "derived" / Path(meta["path"]).name
        self.quality = np.load(derived / "quality.npy")
        self.uncertainty = np.load(derived / "uncertainty.npy", mmap_mode="r")
        self.active = np.load(derived / "active.npy")
        pa = require_pyarrow()[0]
        reader = pa.ipc.open_file(pa.memory_map(str(derived / "entries.arrow")))
        # one record batch per shard, zero-copy from the memory map; a hit is looked up in its
        # batch (Table.take over chunks would concatenate every chunk: 40 ms at 2M entries)
        self._batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        self._offsets = np.cumsum([0] + [b.num_rows for b in self._batches])
        n = int(meta["entries"])
        if not (len(self.quality) == len(self.active) == len(self.uncertainty) == self._offsets[-1] == n):
            raise GalleryError(f"{derived}: derived files disagree on the entry count; rebuild the archive index")
        self.corrections = read_corrections(folder)  # names override the labels entries.arrow holds
        self._threshold = float(bundle.calibration.similarity_thresholds.get("ensemble", -1.0))
        self._doubt = self._doubt_marks()  # computed once: the quality scores never change
        self._gallery_doubt = gallery_doubt(self.quality[self.active])  # the "Unknown" threshold's coverage guard

    def __len__(self) -> int:
        return int(self.meta["entries"])

    @property
    def view_names(self) -> tuple[str, ...]:
        """An archive answers in the ensemble view only."""
        return ("ensemble",)

    @classmethod
    def open(cls, folder: str | os.PathLike, bundle: Bundle, *, engine: FaceEngine | None = None) -> ArchiveGallery:
        """Open a gallery's archive derived data for ``bundle``.

        Args:
            folder: the gallery.
            bundle: the serving bundle.
            engine: the models that detect and embed query photos (``search_image``);
                its bundle is ``bundle``. None: vectors only (``search_vector(s)``).

        Raises:
            GalleryError: not a gallery, no archive derived data for this bundle, or
                data older than the shards; the message says what to run.
        """
        folder = Path(folder)
        manifest = require_manifest(folder)
        info = manifest.get("derived") or {}
        fingerprint = bundle_fingerprint(bundle)
        hint = f"build it with: python -m cmce build-index {folder} --bundle <this bundle>"
        if info.get("kind") != ARCHIVE_KIND or info.get("fingerprint") != fingerprint:
            raise GalleryError(f"{folder}: no archive index for this bundle; {hint}")
        if info.get("shards") != shards_signature(manifest):
            raise GalleryError(f"{folder}: shards were added after the archive index was built; {hint}")
        derived = folder / info["path"]
        try:
            meta = json.loads((derived / META_FILE).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise GalleryError(f"{derived}: unreadable {META_FILE} ({e}); {hint}") from e
        meta["path"] = info["path"]
        index: VectorSearch
        if meta.get("index") == "compact":
            index = CompactIndex.load(derived / "compact")
        else:
            vectors = np.load(derived / "vectors.npy", mmap_mode="r")
            index = VectorIndex(vectors.shape[1])
            for i in range(0, len(vectors), 1 << 18):
                index.add(np.asarray(vectors[i : i + (1 << 18)], np.float32))
        return cls(folder, bundle, meta, index, engine)

    def _doubt_marks(self) -> DoubtMarks:
        live = np.flatnonzero(self.active)
        cal = self.bundle.calibration
        marks = doubt_marks(self.quality[live], cal.threshold_for(), cal.rejection_rate)
        full = np.zeros(len(self), bool)
        full[live] = marks.doubtful
        return DoubtMarks(full, marks.over_threshold, marks.expected, marks.unfamiliar, marks.note)

    def doubt(self) -> DoubtMarks:
        """Doubtful entries (quality score above the bundle's calibrated threshold), as ``Gallery.doubt``."""
        return self._doubt

    def unknown_note(self, unknown_by: str | None = None) -> str:
        """As ``Gallery.unknown_note``: where the archive's photos lower the "Unknown" threshold."""
        return unknown_note(unknown_norm(self.bundle.calibration.cohort_norm, unknown_by), "ensemble",
                            int(self.active.sum()), self._gallery_doubt)

    def rejected(self, *, rate: float | None = None, threshold: float | None = None) -> np.ndarray:
        """(N,) bool: rejected active entries, as ``Gallery.rejected``.

        ``rate`` rejects that share of the active entries (most doubtful first),
        ``threshold`` those scoring above it. Without either: the bundle's calibrated
        threshold, capped at the calibrated share when the archive looks unlike the
        calibration galleries (``answers.capped_rejection``), or the calibrated rate if
        the bundle has no threshold. Searches reject nothing unless given this mask.
        """
        out = np.zeros(len(self), bool)
        live = np.flatnonzero(self.active)
        if not len(live):
            return out
        out[live] = self.bundle.rejected_capped(self.quality[live], rate=rate, threshold=threshold)
        return out

    def search_vectors(self, queries: np.ndarray, *, view: str = "ensemble", k: int = 5,
                       rejected: np.ndarray | None = None, query_probability: np.ndarray | None = None,
                       answer_rule: str | None = None, unknown_by: str | None = None) -> list[ViewResult]:
        """Search with query-model vectors; answer as ``Gallery.search_vector`` does.

        Every active entry is searched. A rejected entry never appears among the
        matches, and when it is a query's best match the answer is "Unknown: the best
        match is a rejected photo of X", not the next person. The bundle's answer rule
        then says "Unknown" where the named person is too likely wrong.

        Args:
            queries: (Q, Dq) unit vectors from the query model.
            view: ``"ensemble"`` (the only view of an archive).
            k: matches per query.
            rejected: (N,) bool, entries that never match (default none: doubtful
                entries are marked, not removed).
            query_probability: (Q,) the query faces' detector probabilities (an input of
                the answer rule; default 1).
            answer_rule: one of ``answer_rules.ANSWER_RULES``, ``"none"`` (name whoever reaches
                the threshold), or None (the bundle's rule).
            unknown_by: ``unknown.UNKNOWN_BY`` (see ``Gallery.search_vector``).

        Returns:
            One ``ViewResult`` of the ensemble view per query; its matches carry
            ``entry_id`` and ``uri``, not ``members`` or ``member_scores``.

        Raises:
            CmceError: another view, or a mask or ``query_probability`` of the wrong shape.
        """
        q, rejected, prob = self._search_inputs(queries, view, rejected, query_probability)
        # the best hits over every active entry decide the answer (a rejected best match blocks);
        # the matches shown leave rejected entries out: searched again where a hit is rejected
        cal = self.bundle.calibration
        norm = unknown_norm(cal.cohort_norm, unknown_by)
        size = int(self.active.sum())
        hits = self.index.search(q, k=max(k, 20, norm.hits_for(size) if norm is not None else 0), mask=self.active)
        shown_scores, shown_positions = hits.scores[:, :k], hits.positions[:, :k]
        again = np.flatnonzero([rejected[p[p >= 0]].any() for p in hits.positions])
        if len(again):
            kept = self.index.search(q[again], k=k, mask=self.active & ~rejected)
            shown_scores, shown_positions = shown_scores.copy(), shown_positions.copy()
            shown_scores[again], shown_positions[again] = kept.scores, kept.positions
        hit_rows = self._entry_rows(hits.positions[hits.positions >= 0], ("label",))
        shown_rows = self._entry_rows(shown_positions[shown_positions >= 0])
        policy = None if answer_rule == "none" else cal.answer_policy("ensemble", answer_rule)
        doubtful = self._doubt.doubtful
        out, i, j = [], 0, 0
        for row in range(len(q)):
            found = hits.positions[row] >= 0
            pos = hits.positions[row][found]
            labels = hit_rows["label"][i : i + len(pos)]
            i += len(pos)
            top = int(pos[0]) if len(pos) else None
            answer = decide_answer(
                [float(s) for s in hits.scores[row][found]], labels,
                [lab or f"\0{p}" for lab, p in zip(labels, pos.tolist())], threshold=self._threshold,
                policy=policy, query_probability=float(prob[row]),
                entry_quality=float(self.quality[top]) if top is not None else float("nan"),
                entry_disagreement=float(self.uncertainty[top]) if top is not None else float("nan"),
                blocked=bool(top is not None and rejected[top]), doubtful=bool(top is not None and doubtful[top]),
                norm=norm, gallery_size=size, gallery_doubt=self._gallery_doubt)
            matches = []
            for score, p in zip(shown_scores[row], shown_positions[row]):
                if p < 0:
                    continue
                matches.append(Match(int(p), shown_rows["label"][j], shown_rows["source"][j], float(score),
                                     float(self.uncertainty[p]), float(self.quality[p]), doubtful=bool(doubtful[p]),
                                     entry_id=shown_rows["entry_id"][j], uri=shown_rows["uri"][j]))
                j += 1
            out.append(ViewResult("ensemble", tuple(matches), self._threshold, answer.unknown, answer))
        return out

    def _search_inputs(self, queries: np.ndarray, view: str, rejected: np.ndarray | None,
                       query_probability: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``search_vectors``' inputs checked: (Q, Dq) float32 queries, (N,) bool mask, (Q,) probabilities."""
        if view not in self.view_names:
            raise CmceError(f"view must be one of {self.view_names}, got {view!r}")
        q = np.atleast_2d(np.asarray(queries, np.float32))
        if rejected is None:
            rejected = np.zeros(len(self), bool)
        else:
            rejected = np.asarray(rejected)
            if rejected.dtype != np.bool_ or rejected.shape != (len(self),):
                raise CmceError(
                    f"rejected must be a bool array of shape ({len(self)},), got {rejected.dtype} {rejected.shape}")
        prob = np.ones(len(q)) if query_probability is None else np.asarray(query_probability, np.float64)
        if prob.shape != (len(q),):
            raise CmceError(f"query_probability must be ({len(q)},), got {prob.shape}")
        return q, rejected, prob

    def search_vector(self, query: np.ndarray, *, k: int = 5, rejected: np.ndarray | None = None,
                      query_probability: float = 1.0, answer_rule: str | None = None,
                      unknown_by: str | None = None) -> dict[str, ViewResult]:
        """The ensemble view's answer to one (Dq,) query-model vector, as ``Gallery.search_vector``'s.

        Returns:
            ``{"ensemble": ViewResult}`` (see ``search_vectors``).
        """
        res = self.search_vectors(np.asarray(query, np.float32)[None, :], k=k, rejected=rejected,
                                  query_probability=np.array([query_probability]), answer_rule=answer_rule,
                                  unknown_by=unknown_by)[0]
        return {"ensemble": res}

    def search_image(self, image: ImageInput, *, face_index: int | None = None, k: int = 5,
                     rejected: np.ndarray | None = None, name: str = "query", answer_rule: str | None = None,
                     unknown_by: str | None = None) -> QueryResult:
        """Detect faces in a query photo and search with one of them, as ``Gallery.search_image``.

        Raises:
            CmceError: opened without an engine. ImageError: unreadable photo.
            NoFaceError: no face in the photo. CmceError: ``face_index`` out of range.
        """
        if self.engine is None:
            raise CmceError(f"{self.folder}: open the archive with an engine to search photos "
                            f"(ArchiveGallery.open(folder, bundle, engine=engine))")
        return search_photo(self, self.engine, detect_query(self.engine, image, name), face_index=face_index, k=k,
                            rejected=rejected, answer_rule=answer_rule, unknown_by=unknown_by)

    def _entry_rows(self, positions: np.ndarray, columns: Sequence[str] = ENTRY_COLUMNS) -> dict[str, list]:
        """The ``columns`` (default entry_id, source, label and uri) of each position, in order.

        A label is the entry's name among the corrections where it has one (as ``read_gallery`` shows it).
        """
        names = self.corrections.names if "label" in columns else {}
        fetch = list(columns) + (["entry_id"] if names and "entry_id" not in columns else [])
        out: dict[str, list] = {c: [] for c in fetch}
        batch_of = np.searchsorted(self._offsets, positions, side="right") - 1
        for pos, b in zip(positions.tolist(), batch_of.tolist()):
            batch, row = self._batches[b], pos - int(self._offsets[b])
            for c in fetch:
                out[c].append(batch.column(c)[row].as_py())
        if names:
            out["label"] = [names.get(e, label) for e, label in zip(out["entry_id"], out["label"])]
        return {c: out[c] for c in columns}

    def memory_bytes(self) -> int:
        """Bytes held in RAM for searching: the index's in-memory part, quality scores, masks."""
        return int(self.index.memory_bytes() + self.quality.nbytes + self.active.nbytes + self._doubt.doubtful.nbytes)

