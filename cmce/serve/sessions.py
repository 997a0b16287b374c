"""The demo's server state, without Gradio: shipped bundles, loaded engines, browser sessions
with their quotas and temporary folders, and the example galleries indexed once.

``app.py`` holds one of each and wires them to widgets; everything a public Space must
bound (sessions, engines, quotas, disk) lives here, where it can be tested alone.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmce.errors import CmceError
from cmce.gallery.ingest import GalleryLimits
from cmce.gallery.memory import Gallery
from cmce.gallery.persistence import bundle_keys
from cmce.gallery.source_photos import SourcePhotos
from cmce.io.images import content_hash
from cmce.io.limits import ServerLimits, SlidingQuota
from cmce.io.uploads import collect_uploads
from cmce.method.bundle import default_bundle_path, load_bundle
from cmce.method.engine import FaceEngine
from cmce.method.report import RiskCoverage
from cmce.method.scoreboard import Scoreboard
from cmce.serve.display.bundle_text import bundle_choice
from cmce.serve.fairness import ClientLimits
from cmce.serve.workdirs import TempFolders

logger = logging.getLogger(__name__)

__all__ = ["ExampleCache", "Engines", "Session", "SessionRegistry", "ShippedBundle", "photo_share", "shipped_bundles"]


def photo_share(client: ClientLimits, server: ServerLimits) -> int:
    """Bytes of source photos one session may keep (``Session.photos``): a client's sessions together
    stay within its upload bytes (``upload_bytes_per_client`` over ``sessions_per_client``), all
    sessions within the server's (``upload_bytes_total`` over ``max_sessions``).

    >>> round(photo_share(ClientLimits(), ServerLimits()) / 2**20, 2)  # the defaults: 4,096 MiB over 200 sessions
    20.48
    """
    return min(client.upload_bytes_per_client // client.sessions_per_client,
               client.upload_bytes_total // max(server.max_sessions or 1, 1))


@dataclass(frozen=True)
class ShippedBundle:
    """A bundle folder in ``assets/bundles/``: its name, folder, line in the picker (short enough for
    a phone's picker box: the name and query model) and what it is for (shown under the picker)."""

    name: str
    path: Path
    label: str
    description: str = ""


def shipped_bundles(root: Path) -> dict[str, ShippedBundle]:
    """The bundles shipped in ``root`` (sub-folders with a config.json), the default one first.

    Each is described by its config: ``info.purpose`` (what it is for) when present, then
    its query and gallery models. A folder whose config.json cannot be read is left out
    (and logged); loading it would fail anyway.
    """
    found = {}
    for folder in sorted(p for p in root.glob("*") if (p / "config.json").is_file()):
        try:
            cfg = json.loads((folder / "config.json").read_text())
            query, gallery = cfg["query_model"]["name"], [g["name"] for g in cfg["gallery_models"]]
            info = cfg.get("info")
            purpose = info.get("purpose") if isinstance(info, dict) else None
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("bundle %s left out of the picker: unreadable config.json (%s)", folder, e)
            continue
        found[folder.name] = ShippedBundle(folder.name, folder, f"{folder.name} · {query} queries",
                                           bundle_choice(folder.name, query, gallery, purpose))
    default = default_bundle_path().name
    return dict(sorted(found.items(), key=lambda item: item[0] != default))


class Engines:
    """Loaded bundles and their models, shared by all sessions: the default one and ``keep`` more.

    Args:
        keep: bundles kept loaded beside the default one (the least recently used goes).
        max_bundle_bytes: most bytes a bundle's files may hold (``load_bundle``'s ``max_bytes``).
        device: torch device of the models (None: CUDA when available, else CPU).
    """

    def __init__(self, keep: int = 2, max_bundle_bytes: int | None = None, device: str | None = None):
        self.keep = keep
        self.max_bundle_bytes = max_bundle_bytes
        self.device = device
        self._engines: OrderedDict[tuple[str, str | None], FaceEngine] = OrderedDict()
        self._lock = threading.Lock()
        self.default: FaceEngine | None = None
        self.default_error: str | None = None

    @staticmethod
    def _key(path_or_id: str | None, revision: str | None) -> tuple[str, str | None]:
        """One key per bundle: a folder by its resolved path (the default bundle picked by name
        is the default engine), a Hub id with its revision."""
        folder = (default_bundle_path() if path_or_id is None else Path(path_or_id)).expanduser()
        if folder.is_dir():
            return str(folder.resolve()), None
        return str(path_or_id if path_or_id is not None else folder), revision

    def cached(self, path_or_id: str | None, revision: str | None = None) -> bool:
        """Whether that bundle is loaded already (using it downloads nothing)."""
        with self._lock:
            return self._key(path_or_id, revision) in self._engines

    def load(self, path_or_id: str | None, revision: str | None = None) -> FaceEngine:
        """The engine of a bundle (folder or Hub id; None = default), loading it if needed.

        Raises:
            BundleError / HubError: the bundle cannot be loaded; nothing changes.
        """
        key = self._key(path_or_id, revision)
        with self._lock:
            if key in self._engines:
                self._engines.move_to_end(key)
                return self._engines[key]
            bundle = load_bundle(path_or_id, revision=revision, max_bytes=self.max_bundle_bytes)
            engine = FaceEngine(bundle, device=self.device)
            self._engines[key] = engine
            while len(self._engines) > self.keep + 1:
                old_key = next(k for k, e in self._engines.items() if e is not self.default)
                del self._engines[old_key]  # sessions using it keep their reference
            return engine

    def load_default(self, revision: str | None = None) -> FaceEngine | None:
        """Load the start-up bundle (``CMCE_BUNDLE`` or assets/, at ``revision``); on failure keep why."""
        try:
            self.default = self.load(None, revision)
        except CmceError as e:
            logger.error("no bundle at start-up: %s", e)
            self.default_error = str(e)
        return self.default


@dataclass(eq=False)
class Session:
    """One browser session: its gallery, a private temporary folder and its hourly quotas.

    Open one with ``Session.open``; ``close`` drops the gallery and deletes the folder.
    """

    engine: FaceEngine
    gallery: Gallery
    workdir: Path
    indexed_bytes: SlidingQuota
    added_faces: SlidingQuota
    bundle_loads: SlidingQuota
    limits: GalleryLimits = field(default_factory=GalleryLimits, repr=False)
    closed: bool = False
    # why the server dropped this session before its owner closed it (shown once when the owner returns)
    dropped: str | None = None
    client: str | None = None  # the address it was opened from (cmce.serve.fairness.client_address)
    last_used: float = field(default_factory=time.monotonic, repr=False)
    # (entries, live entries, its leave-one-out risk-coverage, its scoreboard): computed once per gallery state
    risk_cache: tuple[int, int, RiskCoverage, Scoreboard] | None = field(default=None, repr=False)
    # held while the gallery grows or is replaced (indexing, example, clearing, bundle switch): a switch
    # during indexing waits for it, so the re-projected gallery holds every photo
    busy: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # downscaled copies of the indexed photos (in workdir/photos), so that a match opens in its photo
    photos: SourcePhotos | None = field(default=None, repr=False)
    # the last search's matches: column -> entry ids, best first (what "open match r of column c" refers to)
    last_matches: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    # the People tab's last page (cmce.serve.people_view.PeoplePage): the rows its name boxes are drawn for
    people_page: object | None = field(default=None, repr=False)

    @classmethod
    def open(cls, engine: FaceEngine, limits: GalleryLimits, server: ServerLimits, temp: TempFolders,
             photo_bytes: int | None = None) -> Session:
        """A new session on ``engine``: an empty gallery under ``limits``, a folder from ``temp``,
        the per-session quotas of ``server`` (bytes indexed, faces added, bundle loads per hour), and
        room for ``photo_bytes`` of source photos (default ``photo_share`` of the default client limits)."""
        workdir = temp.mkdtemp("session")
        photo_bytes = photo_share(ClientLimits(), server) if photo_bytes is None else photo_bytes
        return cls(engine, Gallery(engine, limits), workdir,
                   SlidingQuota(server.quota_bytes_per_hour, what="bytes indexed"),
                   SlidingQuota(server.quota_entries_per_hour, what="faces added"),
                   SlidingQuota(server.bundle_loads_per_hour, what="bundle loads"), limits,
                   photos=SourcePhotos(workdir / "photos", photo_bytes))

    def __post_init__(self) -> None:
        self.gallery.photos = self.photos

    def use_gallery(self, gallery: Gallery, *, same_photos: bool = False) -> Gallery:
        """Make ``gallery`` the session's, its photos kept in the session's ``photos`` (so that removing
        its entries deletes the copies no face holds any more: ``Gallery.remove``).

        ``same_photos``: the gallery holds the old one's photos (re-projected for another bundle);
        else (cleared, an example, a restore) the old copies are deleted and the last search's
        matches forgotten. The caller holds ``busy``.
        """
        if not same_photos:
            self.forget_photos()
        gallery.photos = self.photos
        self.gallery, self.risk_cache = gallery, None
        return gallery

    def forget_photos(self) -> None:
        """The gallery was cleared or replaced: its kept photos deleted, the last search's matches forgotten."""
        if self.photos is not None:
            self.photos.clear()
        self.last_matches = {}

    def close(self) -> None:
        """Drop the gallery (embeddings, thumbnails) and delete the temporary folder."""
        if not self.closed:
            self.closed = True
            self.use_gallery(Gallery(self.engine, self.limits))
            self.people_page = None
            shutil.rmtree(self.workdir, ignore_errors=True)
            logger.info("session closed, %s removed", self.workdir)


class SessionRegistry:
    """The live sessions by browser session key, at most ``max_sessions`` of them.

    A session past the cap evicts the least recently used idle one (its gallery dropped, its
    ``dropped`` note set for when its owner returns); a client (``Session.client``) past
    ``per_client`` sessions evicts its own least recently used first, so one client opening
    sessions by the hundred never evicts anyone else's. ``expire_idle`` closes API sessions (those
    ``has_heartbeat`` does not know) idle for longer than a short timeout. ``clock``: seconds, monotonic.
    """

    def __init__(self, max_sessions: int | None = None, per_client: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions, self.per_client = max_sessions, per_client
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self._notes: OrderedDict[str, str] = OrderedDict()  # key -> why its session was dropped (10,000 kept)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def register(self, session: Session, key: str | None) -> Session:
        """Record ``session`` under ``key`` (none: not recorded); a session it replaces is closed, and
        past the cap the least recently used idle sessions are evicted."""
        if key:
            session.last_used = self.clock()
            with self._lock:
                old = self._sessions.pop(key, None)
                self._sessions[key] = session
                evicted = self._over_cap(keep=session)
            if old is not None and old is not session:
                old.close()
            for victim in evicted:
                victim.close()
        return session

    def _over_cap(self, keep: Session) -> list[Session]:
        """Sessions to evict (lock held): the client's own past ``per_client``, then anyone's past
        ``max_sessions``; least recently used first, busy ones (indexing) spared while an idle one remains."""
        victims = []
        if self.per_client is not None and keep.client is not None:
            victims += self._evict(lambda s: s.client == keep.client, self.per_client, keep,
                                   f"you have more than {self.per_client} sessions open at once")
        if self.max_sessions is not None:
            victims += self._evict(lambda s: True, self.max_sessions, keep,
                                   f"the server keeps {self.max_sessions} sessions at most")
        return victims

    def _evict(self, among: Callable[[Session], bool], cap: int, keep: Session, why: str) -> list[Session]:
        victims = []
        for busy_too in (False, True):
            for key, s in list(self._sessions.items()):
                if sum(among(x) for x in self._sessions.values()) <= cap:
                    return victims
                if s is keep or not among(s) or (not busy_too and s.busy.locked()):
                    continue
                del self._sessions[key]
                s.dropped = (f"Your gallery was dropped: {why}, and yours was the least recently used. "
                             f"Index your photos again to go on.")
                self._note(key, s.dropped)
                victims.append(s)
        return victims

    def _note(self, key: str, why: str) -> None:
        """Remember why ``key``'s session was dropped (lock held), for when Gradio no longer holds its state."""
        self._notes.pop(key, None)
        self._notes[key] = why
        while len(self._notes) > 10_000:
            self._notes.popitem(last=False)

    def take_note(self, key: str | None) -> str | None:
        """Why ``key``'s session was dropped, once (None: it was not, or it was said already)."""
        with self._lock:
            return self._notes.pop(key, None) if key else None

    def held(self, key: str | None, client: str | None) -> Session | None:
        """The open session recorded under ``key`` for ``client`` (None: none, closed, or another client's).

        Gradio's copy of a session's state can be pushed out of its store (``state_session_capacity``,
        least recently used first, with no callback) while the session itself is still here: this is
        how it is found again (:func:`cmce.serve.gate.restore_state`)."""
        if not key:
            return None
        with self._lock:
            session = self._sessions.get(key)
        if session is None or session.closed or (session.client is not None and session.client != client):
            return None
        return session

    def touch(self, key: str | None, session: Session) -> None:
        """``session`` (under ``key``) is in use now: the last to be evicted."""
        session.last_used = self.clock()
        if key:
            with self._lock:
                if self._sessions.get(key) is session:
                    self._sessions.move_to_end(key)

    def expire_idle(self, idle_s: float, has_heartbeat: Callable[[str], bool]) -> list[str]:
        """Close the sessions not used for ``idle_s`` seconds that no heartbeat holds (``has_heartbeat``: the
        page and ``gradio_client`` keep Gradio's heartbeat open; raw HTTP calls do not).

        Returns their keys."""
        cutoff = self.clock() - idle_s
        with self._lock:
            gone = [(k, s) for k, s in self._sessions.items()
                    if s.last_used <= cutoff and not has_heartbeat(k) and not s.busy.locked()]
            for key, s in gone:
                del self._sessions[key]
                s.dropped = (f"Your gallery was dropped after {idle_s:g} s without a request (API sessions are "
                             f"kept that long). Index your photos again to go on.")
                self._note(key, s.dropped)
        for _, s in gone:
            s.close()
        if gone:
            logger.info("closed %d idle API sessions", len(gone))
        return [k for k, _ in gone]

    def expire(self, session: Session | None) -> None:
        """Close ``session`` and forget every key it is recorded under."""
        if session is not None:
            session.close()
            with self._lock:
                for key in [k for k, s in self._sessions.items() if s is session]:
                    del self._sessions[key]

    def drop(self, key: str) -> None:
        """The tab of ``key`` was closed or reloaded: close its session now."""
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            session.close()


class ExampleCache:
    """Example galleries indexed once per set of backbones and saved; each session loads its own copy.

    A saved gallery keeps every backbone's raw embeddings, so one copy serves every bundle
    built on the same backbones (loading re-projects it into the session's bundle).

    Args:
        root: folder the saved galleries go to.
        limits: the galleries' caps.
    """

    def __init__(self, root: Path, limits: GalleryLimits):
        self._done: dict[tuple[tuple[str, ...], str], tuple[Path, Any, Any]] = {}
        self._photos: dict[str, dict[str, Path]] = {}
        self._lock = threading.Lock()
        self._root = root
        self._limits = limits

    def get(self, engine: FaceEngine, folder: Path, progress: Callable | None):
        """(saved gallery folder, ingest report, upload batch) of the example gallery in ``folder``."""
        key = (tuple(sorted(bundle_keys(engine.bundle).values())), str(folder))
        with self._lock:
            if key not in self._done:
                files = sorted(p for p in folder.rglob("*") if p.is_file())
                upload = collect_uploads([(p.relative_to(folder).as_posix(), p) for p in files], self._root / "x")
                gallery = Gallery(engine, self._limits)
                report = gallery.add_images(upload.items, progress=progress)
                saved = gallery.save(self._root / f"{len(self._done)}")
                self._done[key] = (saved, report, upload)
            return self._done[key]

    def shipped_photos(self, folder: Path) -> dict[str, Path]:
        """The example gallery's photos by content hash (shipped files: shown as they are, never copied)."""
        with self._lock:
            if str(folder) not in self._photos:
                self._photos[str(folder)] = {content_hash(p): p for p in sorted(folder.rglob("*")) if p.is_file()}
            return self._photos[str(folder)]

    def preload(self, engine: FaceEngine, folders: Iterable[Path]) -> None:
        """Index every example gallery now (start-up, background thread)."""
        for folder in folders:
            try:
                self.get(engine, folder, None)
            except CmceError as e:
                logger.warning("example gallery %s not indexed: %s", folder, e)
