"""Caps for a public server: upload sizes, per-session quotas, bundle loads, queues.

The library's own caps (:class:`~cmce.io.images.ImageLimits`,
:class:`~cmce.io.archives.ArchiveLimits`, :class:`~cmce.gallery.GalleryLimits`) say what one
image, archive or gallery may hold. A public Space needs more: the HTTP layer must cut
an oversized upload off while it streams, one request may not carry more than a total,
one session may index only so much per hour and switch bundles only so often, and the
Hub bundles it may load are listed by the operator. :class:`ServerLimits` gathers these,
read from ``CMCE_*`` environment variables (:meth:`ServerLimits.from_env`);
:class:`SlidingQuota` and :class:`BundleAllowList` apply them. Everything here is pure
(no I/O but the clock), so the app only wires it in.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from cmce.errors import LimitError
from cmce.io.archives import DEFAULT_ARCHIVE_LIMITS, ArchiveLimits
from cmce.io.images import DEFAULT_LIMITS, ImageLimits, format_bytes

__all__ = [
    "BundleAllowList",
    "ServerLimits",
    "SlidingQuota",
    "check_request_bytes",
    "env_positive_int",
    "upload_size_cap",
]

_MIB = 1024 * 1024
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]{0,95}/[\w.\-]{1,96}$")


def upload_size_cap(image: ImageLimits = DEFAULT_LIMITS, archive: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
                    request_bytes: int | None = None) -> int:
    """Largest single uploaded file worth receiving, in bytes: Gradio's ``max_file_size``.

    An image larger than ``image.max_bytes`` is refused by :func:`cmce.io.images.load_image`,
    and an archive cannot usefully be larger than what it may unpack to
    (``archive.max_total_bytes``: photos do not compress), so nothing above the larger of
    the two can ever be used; a request cap (``request_bytes``) lowers it further.

    >>> upload_size_cap(ImageLimits(max_bytes=25 * 2**20), ArchiveLimits(max_total_bytes=100 * 2**20)) // 2**20
    100
    >>> upload_size_cap(request_bytes=50 * 2**20) // 2**20
    50
    """
    cap = max(image.max_bytes, archive.max_total_bytes)
    return cap if request_bytes is None else min(cap, request_bytes)


def check_request_bytes(sizes: Iterable[int], cap: int) -> int:
    """Total bytes of one request's uploads; raises when it is over ``cap``.

    Raises:
        LimitError: the total is over the cap (says both, and what to do).

    >>> check_request_bytes([10, 20], 100)
    30
    """
    total = sum(int(s) for s in sizes)
    if total > cap:
        raise LimitError(f"this upload holds {format_bytes(total)}, over the {format_bytes(cap)} allowed per "
                         f"indexing request (CMCE_MAX_REQUEST_MB); upload fewer or smaller files at a time")
    return total


def env_positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    """``env[name]`` as a positive integer; ``default`` when unset or blank.

    Raises:
        LimitError: a value that is not a positive integer.
    """
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        number = int(raw)
    except ValueError:
        number = 0
    if number < 1:
        raise LimitError(f"{name}={raw!r}: must be a positive integer")
    return number


@dataclass(frozen=True)
class ServerLimits:
    """What one server allows strangers to do.

    Attributes:
        max_request_bytes: bytes of all files of one indexing request (``CMCE_MAX_REQUEST_MB``).
        max_file_bytes: largest single upload Gradio accepts while it streams; derived
            from the image, archive and request caps (:func:`upload_size_cap`).
        quota_bytes_per_hour: bytes one session may index in any hour (``CMCE_QUOTA_MB_PER_HOUR``).
        quota_entries_per_hour: faces one session may add in any hour (``CMCE_QUOTA_ENTRIES_PER_HOUR``);
            the size of one gallery is capped apart (``CMCE_MAX_ENTRIES``).
        bundle_loads_per_hour: bundle switches one session may make in any hour
            (``CMCE_BUNDLE_LOADS_PER_HOUR``).
        max_bundle_bytes: most bytes of a bundle's files, checked before a Hub download
            (``CMCE_MAX_BUNDLE_MB``).
        index_concurrency: indexing requests run at once (``CMCE_INDEX_CONCURRENCY``).
        search_concurrency: searches run at once, apart from indexing (``CMCE_SEARCH_CONCURRENCY``).
        queue_size: requests waiting at most, all events together; one more is told the
            server is busy (``CMCE_QUEUE_SIZE``).
        max_sessions: sessions whose state Gradio keeps (``state_session_capacity``), the
            least recently used dropped first (``CMCE_MAX_SESSIONS``). Gradio keeps a copy of
            the page's configuration per session, expired only by this capacity, so it
            bounds the server's memory.
    """

    max_request_bytes: int = 200 * _MIB
    max_file_bytes: int = 200 * _MIB
    quota_bytes_per_hour: int = 500 * _MIB
    quota_entries_per_hour: int = 3000
    bundle_loads_per_hour: int = 20
    max_bundle_bytes: int = 64 * _MIB
    index_concurrency: int = 1
    search_concurrency: int = 2
    queue_size: int = 64
    max_sessions: int = 200

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LimitError(f"ServerLimits.{name} must be a positive integer, got {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, image: ImageLimits = DEFAULT_LIMITS,
                 archive: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS) -> ServerLimits:
        """Defaults overridden by the ``CMCE_*`` variables named on each attribute.

        Sizes are in MiB (``CMCE_MAX_REQUEST_MB=50``). ``max_file_bytes`` is derived:
        the smaller of the request cap and the larger of ``image.max_bytes`` and
        ``archive.max_total_bytes``.

        Raises:
            LimitError: a value that is not a positive integer.
        """
        base = cls()
        value = partial(env_positive_int, os.environ if environ is None else environ)  # (name, default) -> int

        request = value("CMCE_MAX_REQUEST_MB", base.max_request_bytes // _MIB) * _MIB
        return cls(
            max_request_bytes=request,
            max_file_bytes=upload_size_cap(image, archive, request),
            quota_bytes_per_hour=value("CMCE_QUOTA_MB_PER_HOUR", base.quota_bytes_per_hour // _MIB) * _MIB,
            quota_entries_per_hour=value("CMCE_QUOTA_ENTRIES_PER_HOUR", base.quota_entries_per_hour),
            bundle_loads_per_hour=value("CMCE_BUNDLE_LOADS_PER_HOUR", base.bundle_loads_per_hour),
            max_bundle_bytes=value("CMCE_MAX_BUNDLE_MB", base.max_bundle_bytes // _MIB) * _MIB,
            index_concurrency=value("CMCE_INDEX_CONCURRENCY", base.index_concurrency),
            search_concurrency=value("CMCE_SEARCH_CONCURRENCY", base.search_concurrency),
            queue_size=value("CMCE_QUEUE_SIZE", base.queue_size),
            max_sessions=value("CMCE_MAX_SESSIONS", base.max_sessions),
        )

    def describe(self) -> list[tuple[str, str]]:
        """``(what, value)`` rows for the README and the logs."""
        return [
            ("largest upload (streamed; cut off above)", format_bytes(self.max_file_bytes)),
            ("bytes per indexing request", format_bytes(self.max_request_bytes)),
            ("bytes indexed per session per hour", format_bytes(self.quota_bytes_per_hour)),
            ("faces added per session per hour", str(self.quota_entries_per_hour)),
            ("bundle loads per session per hour", str(self.bundle_loads_per_hour)),
            ("bundle size (checked before download)", format_bytes(self.max_bundle_bytes)),
            ("indexing requests at once", str(self.index_concurrency)),
            ("searches at once", str(self.search_concurrency)),
            ("requests waiting in the queue", str(self.queue_size)),
            ("sessions kept (least recently used dropped)", str(self.max_sessions)),
        ]


@dataclass
class SlidingQuota:
    """Amounts used in a sliding time window, e.g. bytes indexed in the last hour.

    Thread-safe. ``charge`` records a use, ``check`` says whether another would fit;
    ``clock`` is injectable for tests (seconds, monotonic).

    Args:
        limit: most units in any window.
        window_s: the window's length in seconds.
        what: how the unit is named in messages (``"bytes indexed"``).
    """

    limit: int
    window_s: float = 3600.0
    what: str = "units"
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _uses: deque = field(default_factory=deque, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def used(self) -> int:
        """Units used within the window ending now."""
        with self._lock:
            return self._expire(self.clock())

    def _expire(self, now: float) -> int:
        while self._uses and self._uses[0][0] <= now - self.window_s:
            self._uses.popleft()
        return sum(amount for _, amount in self._uses)

    def check(self, amount: int, *, format_amount: Callable[[int], str] = str) -> None:
        """Raise if ``amount`` more would go over the limit within the window.

        Raises:
            LimitError: says how much is left and when the oldest use leaves the window.
        """
        with self._lock:
            now = self.clock()
            used = self._expire(now)
            if used + amount > self.limit:
                wait = (self._uses[0][0] + self.window_s - now) if self._uses else 0.0
                left = max(0, self.limit - used)
                raise LimitError(
                    f"quota reached: {format_amount(amount)} more {self.what} would make "
                    f"{format_amount(used + amount)} within {self.window_s / 60:.0f} min; this session may use "
                    f"{format_amount(self.limit)} ({format_amount(left)} left); try again in {max(1, round(wait))} s"
                )

    def charge(self, amount: int) -> None:
        """Record ``amount`` units used now (no check: the work has been done)."""
        if amount > 0:
            with self._lock:
                self._uses.append((self.clock(), int(amount)))

    def take(self, amount: int, *, format_amount: Callable[[int], str] = str) -> None:
        """``check`` then ``charge`` in one step (for uses that are counted before they run)."""
        with self._lock:
            now = self.clock()
            used = self._expire(now)
            if used + amount > self.limit:
                wait = (self._uses[0][0] + self.window_s - now) if self._uses else 0.0
                raise LimitError(
                    f"quota reached: {format_amount(used)} {self.what} within {self.window_s / 60:.0f} min, "
                    f"{format_amount(self.limit)} allowed per session; try again in {max(1, round(wait))} s"
                )
            self._uses.append((now, int(amount)))


def _is_dir(text: str) -> bool:
    """Whether ``text`` names a folder; False for what cannot be a path (too long, a NUL, an unknown ``~user``)."""
    try:
        return Path(text).expanduser().is_dir()
    except (OSError, ValueError, RuntimeError):
        return False


@dataclass(frozen=True)
class BundleAllowList:
    """Which bundles a session may load (``CMCE_BUNDLES``).

    The shipped bundles are always allowed. ``CMCE_BUNDLES`` adds a comma-separated list
    of Hub ids (``org/name``), bundle folders, and ``hub:*`` for any Hub id. A folder
    given by path is allowed only when listed (or, as before, with
    ``CMCE_ALLOW_LOCAL_BUNDLES=1``).

    Attributes:
        hub_ids: Hub ids allowed by name.
        folders: resolved bundle folders allowed.
        any_hub: every Hub id is allowed.
        any_folder: every local folder is allowed.
    """

    hub_ids: frozenset[str] = frozenset()
    folders: frozenset[str] = frozenset()
    any_hub: bool = False
    any_folder: bool = False

    @classmethod
    def parse(cls, spec: str | None, *, any_folder: bool = False) -> BundleAllowList:
        """Read a ``CMCE_BUNDLES`` value.

        Raises:
            LimitError: an entry that is neither a Hub id, a folder nor ``hub:*``.

        >>> allow = BundleAllowList.parse("org/a, hub:*")
        >>> allow.any_hub, sorted(allow.hub_ids)
        (True, ['org/a'])
        """
        hub, folders, any_hub = set(), set(), False
        for raw in (spec or "").split(","):
            entry = raw.strip()
            if not entry:
                continue
            if entry in ("hub:*", "*"):
                any_hub = True
            elif Path(entry).expanduser().is_dir():
                folders.add(str(Path(entry).expanduser().resolve()))
            elif _HUB_ID.match(entry) and not entry.startswith((".", "/", "~")):
                hub.add(entry)
            else:
                raise LimitError(f"CMCE_BUNDLES entry {entry!r} is neither a Hub id (org/name), an existing "
                                 f"bundle folder, nor hub:* (any Hub id)")
        return cls(frozenset(hub), frozenset(folders), any_hub, any_folder)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BundleAllowList:
        """``CMCE_BUNDLES``, plus any folder when ``CMCE_ALLOW_LOCAL_BUNDLES`` is set."""
        env = os.environ if environ is None else environ
        return cls.parse(env.get("CMCE_BUNDLES"), any_folder=bool(env.get("CMCE_ALLOW_LOCAL_BUNDLES")))

    def allows_folder(self, folder: str | os.PathLike) -> bool:
        return self.any_folder or str(Path(folder).expanduser().resolve()) in self.folders

    def allows_hub(self, repo_id: str) -> bool:
        return self.any_hub or repo_id in self.hub_ids

    def refusal(self, target: str) -> str | None:
        """Why ``target`` (a Hub id or folder, not a shipped bundle) may not be loaded; None if it may.

        Every refused target gets the same answer, whether or not a folder of that name exists on
        the server (no oracle for the server's files); the target is repeated, cut to 100 characters.

        >>> allow = BundleAllowList.parse("org/a")
        >>> allow.refusal("org/a") is None
        True
        >>> allow.refusal("/etc").replace("/etc", "X") == allow.refusal("/no/such").replace("/no/such", "X")
        True
        """
        if _is_dir(target) and self.allows_folder(target):
            return None
        if _HUB_ID.match(target) and not target.startswith((".", "/", "~")) and self.allows_hub(target):
            return None
        shown = target if len(target) <= 100 else target[:99] + "…"
        return (f"{shown!r} is not among the bundles this server may load: the shipped ones, and the Hub ids "
                f"or folders the operator lists in CMCE_BUNDLES (hub:* allows any Hub id; CMCE_ALLOW_LOCAL_BUNDLES=1 "
                f"any folder)")
