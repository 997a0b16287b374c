"""The in-memory searchable gallery: every face of every image, fused by a bundle, with rejection.

``FaceEngine`` holds the loaded models (detector, backbones, bundle) and is shared by
every gallery and user. ``Gallery`` holds one user's entries: the raw backbone
embeddings (so entries can be re-fused, added and removed without re-embedding the
rest), the fused vectors of every view, uncertainty, and a vector index per view.
Its jobs live beside it: ``ingest`` (photos -> entries and embeddings), ``view_search``
(ranked matches and answers), ``persistence`` (records, derived data, bundle keys);
every gallery answers through ``searchable.SearchableGallery`` with the results of
``results``.

Views are the columns of the side-by-side comparison: ``"ensemble"`` (CMCE), each
gallery model through its transformer, and ``"query"`` (the query model alone on both
sides). A query always costs one query-model forward pass.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from cmce.errors import CmceError, GalleryError
from cmce.gallery.ingest import (
    DEFAULT_GALLERY_LIMITS,
    GalleryEntry,
    GalleryLimits,
    IngestReport,
    Photo,
    ProgressFn,
    embed_photos,
    read_photos,
)
from cmce.gallery.persistence import (
    LoadReport,
    bundle_inputs,
    bundle_keys,
    check_servable,
    derive,
    gallery_records,
    load_report,
    placeholder_rows,
    record_entries,
)
from cmce.gallery.results import QueryResult, ViewResult
from cmce.gallery.searchable import ImageInput, detect_query, search_photo
from cmce.gallery.source_photos import SourcePhotos
from cmce.gallery.view_search import search_views
from cmce.method.answers import DoubtMarks, doubt_marks
from cmce.method.bundle_model import Bundle, GalleryVectors
from cmce.method.engine import FaceEngine
from cmce.method.unknown import gallery_doubt, unknown_norm, unknown_note
from cmce.search.index import VectorIndex
from cmce.storage.corrections import Corrections, check_corrections
from cmce.storage.derived import write_derived
from cmce.storage.read import read_gallery
from cmce.storage.records import BackboneRecord, DerivedData, GalleryRecords, backbone_record
from cmce.storage.write import append_entries, write_gallery

logger = logging.getLogger(__name__)

__all__ = ["Gallery"]


class Gallery:
    """One user's searchable gallery.

    The raw embeddings of every backbone are kept (keyed by name and weights
    checksum), so the gallery can be re-fused for another bundle, grown and pruned
    without re-reading a photo; fused vectors and indexes are derived from them.
    It is searched like every gallery (``searchable.SearchableGallery``).

    Args:
        engine: the shared models.
        limits: caps for this gallery.

    Attributes:
        corrections: the user's must-links, cannot-links and names (``add_corrections``;
            read by ``load``, written by ``save``).
        entries: every entry by position; an entry's ``label`` is its name among the
            corrections where it has one, else the label it was indexed with (or its shards hold).
        photos: where copies of its source photos are kept (``SourcePhotos``; None: nowhere):
            ``add_images`` keeps each indexed photo there, ``remove`` deletes those no live entry holds.
    """

    def __init__(self, engine: FaceEngine, limits: GalleryLimits = DEFAULT_GALLERY_LIMITS):
        self.engine = engine
        self.limits = limits
        self.entries: list[GalleryEntry] = []
        self._labels: list[str | None] = []  # each entry's label without the corrections' names (what shards hold)
        self._backbones: dict[str, BackboneRecord] = {}
        self._emb: dict[str, np.ndarray] = {}
        self._present: dict[str, np.ndarray] = {}
        for m in engine.bundle.models:
            self._ensure_backbone(backbone_record(m))
        self._vectors: GalleryVectors | None = None
        self._indexes: dict[str, VectorIndex] = {}
        self._removed = np.zeros(0, bool)
        self._lock = threading.RLock()
        self.load_report: LoadReport | None = None
        self.corrections = Corrections.empty()
        self.photos: SourcePhotos | None = None

    def _ensure_backbone(self, record: BackboneRecord) -> None:
        if record.key not in self._backbones:
            self._backbones[record.key] = record
            self._emb[record.key] = np.zeros((len(self.entries), record.dim), np.float32)
            self._present[record.key] = np.zeros(len(self.entries), bool)

    # ------------------------------------------------------------------ state

    @property
    def bundle(self) -> Bundle:
        return self.engine.bundle

    @property
    def view_names(self) -> tuple[str, ...]:
        """The views searched: ``"ensemble"``, each gallery model, ``"query"`` (the bundle's)."""
        return tuple(self.bundle.view_names)

    def __len__(self) -> int:
        """Number of live entries."""
        return int((~self._removed).sum())

    @property
    def positions(self) -> np.ndarray:
        """Positions of live entries."""
        return np.flatnonzero(~self._removed)

    @property
    def vectors(self) -> GalleryVectors:
        if self._vectors is None:
            raise GalleryError("the gallery is empty: index some images first")
        return self._vectors

    @property
    def hashes(self) -> set[str]:
        return {e.content_hash for e, r in zip(self.entries, self._removed) if not r}

    def quality_scores(self, kind: str | None = None) -> np.ndarray:
        """(N,) quality score of every position by ``kind`` (default the bundle's; higher = worse)."""
        with self._lock:
            if kind is None or kind == self.bundle.calibration.quality.kind:
                return self.vectors.quality
            prob = np.array([e.face.probability for e in self.entries], np.float32)
            return self.bundle.calibration.quality_model(kind).score(self.vectors.uncertainty, prob,
                                                                     *self.vectors.member_arrays())

    def doubt(self, quality: str | None = None) -> DoubtMarks:
        """Doubtful entries (over the score's calibrated threshold), over all positions.

        ``DoubtMarks.unfamiliar`` says the gallery has far more of them than the
        calibration predicts; ``note`` says so in one sentence.
        """
        with self._lock:
            live = self.positions
            cal = self.bundle.calibration
            marks = doubt_marks(self.quality_scores(quality)[live] if len(live) else np.zeros(0),
                                cal.threshold_for(quality), cal.rejection_rate)
            full = np.zeros(len(self.entries), bool)
            full[live] = marks.doubtful
            return DoubtMarks(full, marks.over_threshold, marks.expected, marks.unfamiliar, marks.note)

    def unknown_note(self, unknown_by: str | None = None) -> str:
        """One sentence where the gallery's photos lower the ensemble's normalised "Unknown"
        threshold (``CohortNorm.guard``), "" elsewhere (``unknown.unknown_note``; ``unknown_by``
        as ``search_vector``'s)."""
        with self._lock:
            live = self.positions
            doubt = gallery_doubt(self.vectors.quality[live]) if len(live) else float("nan")
            return unknown_note(unknown_norm(self.bundle.calibration.cohort_norm, unknown_by), "ensemble", len(live),
                                doubt)

    def rejected(self, *, rate: float | None = None, threshold: float | None = None,
                 quality: str | None = None) -> np.ndarray:
        """(N,) bool over all positions: rejected live entries (see ``Bundle.rejected``).

        ``rate`` is taken over the live entries of this gallery. ``quality`` ranks by
        another score than the bundle's (``disagreement``, ``detection``, ``combined``,
        ``learned``). Without ``rate`` or ``threshold`` it rejects above the score's
        calibrated threshold (``Calibration.threshold_for``), capped at the calibrated
        share when the gallery looks unlike the calibration galleries (``doubt``), or
        at the calibrated rate if the score has no threshold. Searching never hands a
        rejected entry's queries to another person: it blocks (``search_vector``).
        """
        with self._lock:
            out = np.zeros(len(self.entries), bool)
            live = self.positions
            if len(live) == 0:
                return out
            out[live] = self.bundle.rejected_capped(self.quality_scores(quality)[live], rate=rate,
                                                    threshold=threshold, kind=quality)
            return out

    # ------------------------------------------------------------------ indexing

    def add_images(
        self,
        items: Iterable[tuple[str, bytes | str | os.PathLike, str | None]],
        *,
        progress: ProgressFn | None = None,
        batch_size: int = 16,
        record_paths: bool = True,
        keep_photo: Callable[[Photo], object] | None = None,
    ) -> IngestReport:
        """Detect, embed and index every face of the given images.

        Args:
            items: ``(display name, file bytes or path, label or None)`` per image.
            progress: called with (fraction done, message).
            batch_size: images per detection batch.
            record_paths: store each file's absolute path (so a later backfill can
                read it again); off for uploads that are deleted afterwards.
            keep_photo: called with each decoded photo that gave entries, while its pixels
                are at hand (default: ``photos.keep``, a copy to show matches in, if ``photos`` is set).

        Returns:
            IngestReport; unreadable files, files without a face, duplicates and
            reached caps are listed there, everything else is indexed.
        """
        items = list(items)
        skipped: list[tuple[str, str]] = []
        duplicates: list[str] = []
        limits_hit: list[str] = []
        if len(items) > self.limits.max_files:
            limits_hit.append(
                f"only the first {self.limits.max_files} of {len(items)} files were read (max files per upload)"
            )
            for name, _, _ in items[self.limits.max_files :]:
                skipped.append((name, "over the files-per-upload limit"))
            items = items[: self.limits.max_files]
        added = 0
        if keep_photo is None and self.photos is not None:
            keep_photo = self.photos.keep
        with self._lock:
            seen = self.hashes
            try:
                for start in range(0, len(items), batch_size):
                    chunk = items[start : start + batch_size]
                    decoded, bad, dups = read_photos(chunk, seen, self.limits.image,
                                                     record_paths=record_paths)
                    skipped += bad
                    duplicates += dups
                    if decoded:
                        faces = embed_photos(self.engine, decoded, max_faces_per_image=self.limits.max_faces_per_image,
                                             max_entries=self.limits.max_entries, stored=len(self))
                        skipped += [(photo.name, why) for photo, why in faces.skipped]
                        limits_hit += [m for m in faces.limits_reached
                                       if not ("gallery is full" in m and any("gallery is full" in h for h in limits_hit))]
                        if faces.entries:
                            self._append(list(faces.entries), faces.embeddings)
                            added += len(faces.entries)
                            if keep_photo is not None:
                                indexed = {e.content_hash for e in faces.entries}
                                for photo in decoded:
                                    if photo.content_hash in indexed:
                                        keep_photo(photo)
                    if progress:
                        done = min(len(items), start + batch_size)
                        progress(done / max(len(items), 1), f"indexed {done}/{len(items)} files")
            finally:
                # also when interrupted: what was appended becomes searchable, never
                # half-fused; a chunk interrupted while embedding is dropped whole
                if added:
                    self._refuse()
        notes = tuple(f"new entries lack {m}: {why}" for m, why in self.engine.unavailable.items()) if added else ()
        return IngestReport(added, len(items), tuple(skipped), tuple(duplicates), tuple(limits_hit), notes)

    def _append(self, entries: list[GalleryEntry], emb: Mapping[str, np.ndarray]) -> None:
        # build everything first, then swap in: entries and embeddings never disagree
        keys = bundle_keys(self.bundle)
        by_key = {keys[m]: np.asarray(v, np.float32) for m, v in emb.items()}
        n = len(entries)
        new_emb, new_present = {}, {}
        for k, v in self._emb.items():
            rows = by_key.get(k)
            new_emb[k] = np.concatenate([v, rows if rows is not None else np.zeros((n, v.shape[1]), np.float32)])
            new_present[k] = np.concatenate([self._present[k], np.full(n, rows is not None)])
        new_removed = np.concatenate([self._removed, np.zeros(n, bool)])
        self._emb, self._present, self._removed = new_emb, new_present, new_removed
        self._labels.extend(e.label for e in entries)
        self.entries.extend(entries)

    def _refuse(self) -> None:
        """Recompute fused vectors and indexes from the stored raw embeddings."""
        if not self.entries:
            self._vectors, self._indexes = None, {}
            return
        prob = np.array([e.face.probability for e in self.entries], np.float32)
        emb, present = bundle_inputs(self.bundle, self._emb, self._present)
        vec = self.bundle.gallery_vectors(emb, prob, present)
        self._vectors = vec
        self._indexes = {}
        for view, arr in [("ensemble", vec.ensemble)] + list(vec.views.items()):
            missing = ~vec.available[view]
            index = VectorIndex(arr.shape[1])
            index.add(placeholder_rows(arr, missing))
            if self._removed.any() or missing.any():
                index.remove(np.flatnonzero(self._removed | missing))
            self._indexes[view] = index

    def remove(self, positions: Sequence[int]) -> None:
        """Remove entries without re-embedding the rest.

        The corrections rows that mention them are dropped, and the kept copy (``photos``) of
        every photo left without a live entry is deleted from disk, no longer counted in its room.
        """
        with self._lock:
            pos = np.asarray(list(positions), dtype=np.int64)
            if len(pos) and (pos.min() < 0 or pos.max() >= len(self.entries)):
                raise GalleryError(f"positions must be in [0, {len(self.entries)}); got {pos.tolist()}")
            self._removed[pos] = True
            for index in self._indexes.values():
                index.remove(pos)
            gone = self.corrections.entry_ids() - set(self.entry_ids())
            if gone:
                self.corrections = self.corrections.without_entries(gone)
                self._apply_names()
            pruned = self.photos.keep_only(self.hashes) if self.photos is not None else 0
        logger.info("removed %d entries (%d corrections' entries, %d kept photos dropped)", len(pos), len(gone), pruned)

    # ------------------------------------------------------------------ search

    def search_vector(
        self,
        query: np.ndarray,
        *,
        k: int = 5,
        rejected: np.ndarray | None = None,
        query_probability: float = 1.0,
        answer_rule: str | None = None,
        unknown_by: str | None = None,
    ) -> dict[str, ViewResult]:
        """Search every view with one query-model vector.

        Every live entry is searched. A rejected entry never appears among the matches,
        and when it is a view's best match the view answers "Unknown: the best match is
        a rejected photo of X" instead of naming the next person. The bundle's answer
        rule (``Calibration.answer_policy``) then says "Unknown" where the named person
        is too likely wrong; doubtful entries (``doubt``) are marked.

        Args:
            query: (Dq,) unit vector from the query model.
            k: matches per view.
            rejected: (N,) bool, entries that never match (default none: doubtful
                entries are marked, not removed).
            query_probability: the query face's detector probability (an input of the
                answer rule).
            answer_rule: one of ``answer_rules.ANSWER_RULES``, ``"none"`` (name whoever reaches
                the threshold), or None (the bundle's rule).
            unknown_by: ``unknown.UNKNOWN_BY``: ``"normalised"`` (default: the bundle's
                cohort-normalised threshold in galleries of enough people) or
                ``"similarity"`` (the raw similarity threshold only).

        Returns:
            view name -> ViewResult.
        """
        with self._lock:
            return self._search(query, self.bundle.view_names, self.doubt().doubtful, k=k, rejected=rejected,
                                query_probability=query_probability, answer_rule=answer_rule, unknown_by=unknown_by)

    def _search(self, query: np.ndarray, views: Sequence[str], doubtful: np.ndarray, **options) -> dict[str, ViewResult]:
        """``search_views`` over this gallery's live entries (lock held)."""
        return search_views(query, entries=self.entries, vectors=self.vectors, indexes=self._indexes,
                            live=~self._removed, doubtful=doubtful, calibration=self.bundle.calibration,
                            views=tuple(views), **options)

    def search_vectors(
        self,
        queries: np.ndarray,
        *,
        view: str = "ensemble",
        k: int = 5,
        rejected: np.ndarray | None = None,
        query_probability: np.ndarray | None = None,
        answer_rule: str | None = None,
        unknown_by: str | None = None,
    ) -> list[ViewResult]:
        """One view's answer to each of several query-model vectors, as ``search_vector``'s.

        Args:
            queries: (Q, Dq) unit vectors from the query model.
            view: one of ``view_names``.
            query_probability: (Q,) the query faces' detector probabilities (default 1).
            k, rejected, answer_rule, unknown_by: see ``search_vector``.

        Raises:
            CmceError: an unknown view, or ``query_probability`` of another length.
        """
        q = np.atleast_2d(np.asarray(queries, np.float32))
        if view not in self.view_names:
            raise CmceError(f"view must be one of {self.view_names}, got {view!r}")
        prob = np.ones(len(q)) if query_probability is None else np.asarray(query_probability, np.float64)
        if prob.shape != (len(q),):
            raise CmceError(f"query_probability must be ({len(q)},), got {prob.shape}")
        with self._lock:
            doubtful = self.doubt().doubtful
            return [self._search(row, (view,), doubtful, k=k, rejected=rejected, query_probability=float(p),
                                 answer_rule=answer_rule, unknown_by=unknown_by)[view] for row, p in zip(q, prob)]

    def search_image(
        self,
        image: ImageInput,
        *,
        face_index: int | None = None,
        k: int = 5,
        rejected: np.ndarray | None = None,
        name: str = "query",
        answer_rule: str | None = None,
        unknown_by: str | None = None,
    ) -> QueryResult:
        """Detect faces in a query photo and search with one of them.

        Args:
            image: the photo (anything ``load_image`` reads).
            face_index: which face (in the returned ``faces`` order, largest first);
                default the largest.
            k: matches per view.
            rejected, answer_rule, unknown_by: see ``search_vector``.

        Raises:
            ImageError: unreadable photo. GalleryError: empty gallery.
            CmceError: no face in the photo, or ``face_index`` out of range.
        """
        if self._vectors is None:  # said before the photo is decoded and its faces detected
            raise GalleryError("the gallery is empty: index some images first")
        return search_photo(self, self.engine, detect_query(self.engine, image, name), face_index=face_index, k=k,
                            rejected=rejected, answer_rule=answer_rule, unknown_by=unknown_by)

    # ------------------------------------------------------------------ corrections

    def entry_ids(self) -> list[str]:
        """The entry ids of the live entries, in position order."""
        with self._lock:
            return [e.entry_id or f"{e.content_hash}:{i}" for i, e in enumerate(self.entries) if not self._removed[i]]

    def add_corrections(self, *, must_link: Iterable[tuple[str, str]] = (), cannot_link: Iterable[tuple[str, str]] = (),
                        names: Mapping[str, str] | None = None) -> Corrections:
        """Add must-links, cannot-links and names to this gallery's corrections (``cmce.storage.corrections``).

        Checked as ``cmce.storage.corrections.add_corrections`` checks them, against the live
        entries; a named entry's ``label`` becomes its name. ``save`` stores them; for a saved
        gallery, ``cmce.storage.corrections.add_corrections`` changes the folder itself.

        Returns:
            The corrections after the change.

        Raises:
            UnknownEntryError, ContradictionError, CorrectionError: nothing changes.
        """
        with self._lock:
            new = self.corrections.merged(list(must_link), list(cannot_link), names)
            check_corrections(new, set(self.entry_ids()), "this gallery")
            self.corrections = new
            self._apply_names()
            return new

    def replace_corrections(self, corrections: Corrections) -> Corrections:
        """Make ``corrections`` this gallery's corrections (checked as ``add_corrections``; refused: nothing changes).

        For changes that also drop rows (a split, "not this person"); an entry whose name
        is dropped shows the label it was indexed with again, as a saved and reloaded gallery does.
        """
        with self._lock:
            check_corrections(corrections, set(self.entry_ids()), "this gallery")
            self.corrections = corrections
            self._apply_names()
            return corrections

    def _apply_names(self) -> None:
        """Each entry's label: its name among the corrections, else the label it was indexed with.

        An entry whose name was dropped (a split, "not this person") shows its own label
        again at once, as ``load`` shows it (``read_gallery`` puts the names over the shards' labels).
        """
        names = self.corrections.names
        ids = [e.entry_id or f"{e.content_hash}:{i}" for i, e in enumerate(self.entries)]  # as entry_ids() gives them
        shown = [names.get(k, own) for k, own in zip(ids, self._labels)]
        self.entries = [e if e.label == label else replace(e, label=label) for e, label in zip(self.entries, shown)]

    # ------------------------------------------------------------------ persistence

    def records(self) -> GalleryRecords:
        """The live entries as columns, with every backbone's raw embeddings.

        The labels are the entries' own (as indexed or read from the shards), not the
        corrections' names: the names live in the corrections only, so that a dropped name
        leaves nothing behind in a saved shard.
        """
        with self._lock:
            positions = self.positions
            records = gallery_records(self.entries, positions, self._backbones, self._emb, self._present)
            records.label[:] = [self._labels[i] for i in positions]
            return records

    def _saved(self) -> tuple[GalleryRecords, Corrections]:
        """What a save stores (lock held): the live records, and the corrections of their entries only."""
        records = self.records()
        return records, self.corrections.without_entries(self.corrections.entry_ids() - set(records.entry_id.tolist()))

    def derived_data(self) -> tuple[DerivedData, VectorIndex]:
        """This bundle's derived data for the live entries (what ``save`` stores beside the shards)."""
        with self._lock:
            return derive(self.bundle, self.vectors, self.positions)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the gallery to ``folder`` (format version 2) atomically.

        The raw embeddings of every backbone go to Parquet shards (the source of
        truth); this bundle's fused vectors, scores and index are stored beside them
        as derived data, and the corrections (``add_corrections``) beside them. Removed
        entries are dropped, with the corrections that mention them. The previous state is
        kept if writing fails.
        """
        with self._lock:
            records, corrections = self._saved()
            dest = write_gallery(folder, records, corrections=corrections)
            if len(self):
                derived, index = self.derived_data()
                write_derived(dest, derived, index)
        return dest

    def save_appended(self, folder: str | os.PathLike, since: int) -> Path:
        """Append the entries added since position ``since`` to the gallery saved at ``folder``.

        Only a new shard is written (``cmce.storage.write.append_entries``; the other
        shards stay as they are), with this gallery's corrections (as ``save`` stores them)
        listed in the same manifest write; then this bundle's derived data is rebuilt for
        the whole gallery.
        ``folder`` must hold what this gallery held before ``since``.
        """
        with self._lock:
            records, corrections = self._saved()
            append_entries(folder, records.take(self.positions >= since), corrections=corrections)
            if len(self):
                derived, index = self.derived_data()
                write_derived(folder, derived, index)
        return Path(folder)

    @classmethod
    def from_records(
        cls, records: GalleryRecords, engine: FaceEngine, limits: GalleryLimits = DEFAULT_GALLERY_LIMITS, *,
        source: str = "gallery", converted_from: int | None = None,
    ) -> Gallery:
        """A gallery over stored records, re-projected into ``engine``'s bundle.

        No photo is read and no backbone runs: the bundle's transformers map the raw
        embeddings into its query space and the members each entry has are fused.

        Raises:
            GalleryError: the records hold none of the bundle's members, or an
                embedding whose size does not fit the bundle; the message names the
                backbones on each side.
        """
        start = time.perf_counter()
        check_servable(engine.bundle, records.backbones, len(records), source)
        members = len(engine.bundle.gallery_models) + bool(engine.bundle.query_member)
        g = cls(engine, limits)
        for k, rec in records.backbones.items():
            g._backbones[k] = rec
            g._emb[k] = np.asarray(records.embeddings[k], np.float32)
            g._present[k] = np.asarray(records.present[k], bool)
        n = len(records)
        for k, rec in list(g._backbones.items()):
            if len(g._emb[k]) != n:  # a bundle backbone the records do not hold
                g._emb[k] = np.zeros((n, rec.dim), np.float32)
                g._present[k] = np.zeros(n, bool)
        g.entries = record_entries(records)
        g._labels = [e.label for e in g.entries]
        g._removed = np.zeros(n, bool)
        g._refuse()
        present = g._vectors.member_present if g._vectors is not None else np.zeros((0, members), bool)
        g.load_report = load_report(records, engine.bundle, present, time.perf_counter() - start, converted_from)
        return g

    @classmethod
    def load(cls, folder: str | os.PathLike, engine: FaceEngine, limits: GalleryLimits = DEFAULT_GALLERY_LIMITS) -> Gallery:
        """Open a saved gallery with any bundle that fuses at least one backbone it holds.

        The raw embeddings are re-projected into the bundle's space (no photo is
        read); ``load_report`` says which members each entry lacks. Version 1
        galleries are converted on reading.

        Raises:
            GalleryError: missing or corrupt folder, or no member of the bundle stored.
        """
        stored = read_gallery(folder, names_as_labels=False)
        g = cls.from_records(stored.records, engine, limits, source=str(folder), converted_from=stored.converted_from)
        g.corrections = stored.corrections or Corrections.empty()
        g._apply_names()
        return g

    def reproject(self, engine: FaceEngine) -> Gallery:
        """This gallery served by another engine's bundle: re-projected, no photo read.

        Returns:
            A new Gallery with the same entries; its ``load_report`` says how long it
            took and which members entries lack.
        """
        with self._lock:
            records, corrections = self._saved()
        g = Gallery.from_records(records, engine, self.limits, source="this gallery")
        g.corrections, g.photos = corrections, self.photos
        g._apply_names()
        return g

