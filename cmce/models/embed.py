"""Detect, align and embed the subject face of many image files, with an on-disk cache.

Used for training, evaluation and bulk indexing of labelled photos (one person per
image). Images are read in chunks, detected in one MTCNN batch per chunk, the subject
face is chosen (large and central), and every backbone embeds the whole chunk at
once. Results are cached in SQLite keyed by the file's content hash, the detector's
settings and the backbone, so a second run over the same files costs only reads.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from cmce.cache import cache_dir
from cmce.errors import CmceError
from cmce.faces.detector import FaceDetector
from cmce.faces.geometry import Face, pick_subject, too_small_face, too_small_image
from cmce.io.images import content_hash, load_image
from cmce.models.backbones import create_backbone
from cmce.models.backbones.base import FaceViews

logger = logging.getLogger(__name__)

__all__ = ["EmbeddedFiles", "EmbeddingCache", "embed_files", "detector_signature"]


def detector_signature(detector: FaceDetector) -> str:
    """A string that changes whenever detection settings would change the faces."""
    t = ",".join(f"{v:g}" for v in detector.thresholds)
    sig = (
        f"mtcnn:min{detector.min_face_size}:t{t}:side{detector.max_side}"
        f":p{detector.min_probability:g}:subject-v1"
    )
    if detector.landmark_check:
        sig += ":sane-v1"
    if detector.second_chance is not None:
        sig += ":" + detector.second_chance.signature()
    if not detector.edge_landmarks:
        # refined edge landmarks are the default and need no mark: faces cached before
        # them are refined when read (``embed_files``); only opting out changes the key
        sig += ":noedge"
    return sig


class EmbeddingCache:
    """SQLite cache of subject faces and their embeddings.

    Args:
        path: database file; default ``cache_dir()/embeddings.sqlite``.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else cache_dir() / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        with self._conn:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS faces (key TEXT PRIMARY KEY, face TEXT, error TEXT)"
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS vectors (key TEXT, model TEXT, vec BLOB, "
                "PRIMARY KEY (key, model))"
            )

    def get_face(self, key: str) -> tuple[bool, Face | None, str | None]:
        with self._lock:
            row = self._conn.execute("SELECT face, error FROM faces WHERE key=?", (key,)).fetchone()
        if row is None:
            return False, None, None
        face = Face.from_dict(json.loads(row[0])) if row[0] else None
        return True, face, row[1]

    def put_faces(self, rows: list[tuple[str, Face | None, str | None]]) -> None:
        data = [(k, json.dumps(f.to_dict()) if f else None, e) for k, f, e in rows]
        with self._lock, self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO faces VALUES (?, ?, ?)", data)

    def get_vectors(self, keys: list[str], model: str) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = ",".join("?" * len(chunk))
                for k, blob in self._conn.execute(
                    f"SELECT key, vec FROM vectors WHERE model=? AND key IN ({q})", (model, *chunk)
                ):
                    out[k] = np.frombuffer(blob, dtype=np.float32).copy()
        return out

    def put_vectors(self, model: str, rows: dict[str, np.ndarray]) -> None:
        data = [(k, model, np.asarray(v, np.float32).tobytes()) for k, v in rows.items()]
        with self._lock, self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", data)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


@dataclass(frozen=True)
class EmbeddedFiles:
    """Subject-face embeddings of a list of files.

    Attributes:
        paths: the files, in the order given.
        faces: the subject face per file, None where none was found or the file failed.
        errors: None per file that worked, else a plain-words reason.
        embeddings: backbone name -> (N, D) float32 unit vectors (zeros where no face).
    """

    paths: tuple[str, ...]
    faces: tuple[Face | None, ...]
    errors: tuple[str | None, ...]
    embeddings: dict[str, np.ndarray]

    @property
    def found(self) -> np.ndarray:
        """(N,) bool: a face was found and embedded."""
        return np.array([f is not None for f in self.faces], dtype=bool)

    @property
    def detection_probability(self) -> np.ndarray:
        """(N,) float: MTCNN probability of the subject face (0 where none)."""
        return np.array([f.probability if f else 0.0 for f in self.faces], dtype=np.float32)


def _view_name(model: str, flip: bool) -> str:
    return f"{model}|flip" if flip else model


def _cache_view(backbone, face: Face, flip: bool) -> str:
    """The cache's model column for ``face``: ``Backbone.face_cache_id``, ``|flip`` for the mirror."""
    view = backbone.face_cache_id(face)
    return f"{view}|flip" if flip else view


def embed_files(
    paths: Sequence[str | os.PathLike],
    models: Sequence[str],
    *,
    detector: FaceDetector | None = None,
    cache: EmbeddingCache | None = None,
    chunk_size: int = 32,
    flip: bool = False,
    progress: bool = False,
    device: str | None = None,
) -> EmbeddedFiles:
    """Embed the subject face of each file with every backbone in ``models``.

    Args:
        paths: image files.
        models: backbone names.
        detector: MTCNN settings; default ``FaceDetector()`` (``create_detector("plain")``
            of ``cmce.faces.second_chance``; ``"index"`` is what galleries are indexed with).
        cache: where to read/write results; None disables caching.
        chunk_size: images per detection/embedding batch.
        flip: also embed the horizontally mirrored crop, stored as ``"<model>|flip"``.
        progress: show a tqdm progress bar.
        device: torch device for torch backbones.

    Returns:
        EmbeddedFiles in the order of ``paths``. Unreadable files, files without a
        face and files whose subject face (or whole image) is under
        ``faces.MIN_FACE_PIXELS`` are reported in ``errors``, never dropped.
    """
    detector = detector or FaceDetector()
    sig = detector_signature(detector)
    backbones = {m: create_backbone(m, device) for m in models}
    n = len(paths)
    faces: list[Face | None] = [None] * n
    errors: list[str | None] = [None] * n
    keys: list[str | None] = [None] * n
    views = [_view_name(m, f) for m in models for f in ((False, True) if flip else (False,))]
    out = {v: np.zeros((n, backbones[v.split("|")[0]].embedding_size), np.float32) for v in views}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="embedding faces", unit="img")
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        for start in range(0, n, chunk_size):
            idx = list(range(start, min(n, start + chunk_size)))
            images = _process_chunk(idx, paths, detector, sig, cache, faces, errors, keys, pool)
            have = [i for i in idx if faces[i] is not None]
            for view in views:
                model, _, flag = view.partition("|")
                bb = backbones[model]
                cviews = {i: _cache_view(bb, faces[i], flag == "flip") for i in have}  # type: ignore[arg-type]
                todo = have
                if cache is not None and have:
                    todo = []
                    for cview in dict.fromkeys(cviews.values()):  # faces at the image's edge have their own key
                        rows = [i for i in have if cviews[i] == cview]
                        got = cache.get_vectors([keys[i] for i in rows], cview)  # type: ignore[misc]
                        for i in rows:
                            if keys[i] in got:
                                out[view][i] = got[keys[i]]
                            else:
                                todo.append(i)
                    todo.sort()
                if not todo:
                    continue
                aligned = FaceViews.concat([bb.align_views(images[i], [faces[i]]) for i in todo])  # type: ignore[list-item]
                emb = bb.embed_views(aligned.mirrored() if flag == "flip" else aligned)
                for j, i in enumerate(todo):
                    out[view][i] = emb[j]
                if cache is not None:
                    for cview in dict.fromkeys(cviews[i] for i in todo):
                        cache.put_vectors(cview, {keys[i]: emb[j] for j, i in enumerate(todo)  # type: ignore[misc]
                                                  if cviews[i] == cview})
            if bar is not None:
                bar.update(len(idx))
    finally:
        pool.shutdown(wait=True)
        if bar is not None:
            bar.close()
    missing = sum(f is None for f in faces)
    if missing:
        logger.info("%d of %d files gave no face embedding", missing, n)
    return EmbeddedFiles(
        tuple(str(p) for p in paths), tuple(faces), tuple(errors), out
    )


def _process_chunk(idx, paths, detector, sig, cache, faces, errors, keys, pool) -> dict[int, np.ndarray]:
    """Read the chunk's images and find each one's subject face (cache first)."""

    def read(i: int):
        try:
            data = Path(paths[i]).read_bytes()
            return i, content_hash(data), load_image(data, name=str(paths[i])), None
        except CmceError as e:
            return i, None, None, str(e)
        except OSError as e:
            return i, None, None, f"{paths[i]}: cannot read file ({e.strerror or e})"

    images: dict[int, np.ndarray] = {}
    to_detect: list[int] = []
    for i, digest, img, err in pool.map(read, idx):
        if err is None:
            err = None if (why := too_small_image(img.shape)) is None else f"{paths[i]}: {why}"
        if err is not None:
            errors[i] = err
            continue
        keys[i] = f"{digest}:{sig}"
        images[i] = img
        if cache is not None:
            hit, face, cerr = cache.get_face(keys[i])
            if hit:
                if face is not None and detector.edge_landmarks and face.at_image_edge:
                    # stored before edge landmarks existed, or after: refining gives the same face
                    face = detector.refine_edge_landmarks(img, [face])[0]
                faces[i] = face
                errors[i] = cerr
                continue
        to_detect.append(i)
    if to_detect:
        # one batch per image size: the detector pads images of different sizes onto one
        # canvas, whose margin changes what MTCNN finds (a tight face crop is found with its
        # landmarks off the face); the cache is keyed by content, so a file's face must not
        # depend on the files it was read with. (Every LFW photo is 250x250: one batch.)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i in to_detect:
            by_size.setdefault(images[i].shape, []).append(i)
        found_by = {}
        for group in by_size.values():
            found_by.update(zip(group, detector.detect_batch([images[i] for i in group],
                                                             [str(paths[i]) for i in group])))
        found = [found_by[i] for i in to_detect]
        rows = []
        for i, fs in zip(to_detect, found):
            k = pick_subject(fs)
            faces[i] = fs[k] if k is not None else None
            errors[i] = None if k is not None else f"{paths[i]}: no face found"
            rows.append((keys[i], faces[i], errors[i]))
        if cache is not None:
            cache.put_faces(rows)
    # after the cache: it holds the subject face as detected, whatever its size
    for i in idx:
        if faces[i] is not None and (why := too_small_face(faces[i])) is not None:
            faces[i], errors[i] = None, f"{paths[i]}: {why}"
    return images
