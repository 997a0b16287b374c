"""Fairness per client, not per session: who a request comes from, and what one client may hold.

Anyone can call a public Space's API with a new ``session_hash`` on every request, so quotas
per session do not bind one client. This module names a client by its network address
(:func:`client_address`, honouring a proxy's ``X-Forwarded-For`` only when the proxy is
trusted) and bounds, per client:

* the jobs it has queued or running in each of Gradio's concurrency groups (index, search,
  bundle, the rest), counted in Gradio's own queue (:func:`jobs_in_queue`);
* its requests per minute (:class:`RateWindow`);
* the upload bytes it may keep on disk, and the bytes all clients together may keep
  (:class:`UploadLedger`; an upload older than the retention is deleted by :meth:`UploadLedger.sweep`).

:class:`ClientGate` holds these; :class:`cmce.serve.gate.ClientGateMiddleware` applies them to
every request before Gradio queues it, so a refused request never takes a queue slot.
:class:`TakeTurns` lets a long indexing job give its slot to a waiting one between chunks.
Pure but for the clock and the files the ledger deletes; thread-safe.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from cmce.errors import LimitError
from cmce.io.images import format_bytes
from cmce.io.limits import env_positive_int

logger = logging.getLogger(__name__)

__all__ = ["ClientGate", "ClientLimits", "TooManyRequests", "RateWindow", "TakeTurns", "UploadLedger",
           "client_address", "jobs_in_queue", "parse_networks"]

_MIB = 1024 * 1024
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Addresses a Space's own proxies use (never a visitor's): skipped when reading X-Forwarded-For on a Space.
PRIVATE_NETWORKS: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10",
    "::1/128", "fc00::/7", "fe80::/10"))


class TooManyRequests(LimitError):
    """One client asked for more than its share; ``retry_after_s`` says when to try again.

    ``status`` is the HTTP status the gate answers with: 429 for this client's own limits,
    503 when the server-wide upload space is full.
    """

    def __init__(self, message: str, retry_after_s: float, status: int = 429) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        self.status = status


def parse_networks(spec: str | None) -> tuple[Network, ...]:
    """``CMCE_TRUSTED_PROXIES``: comma-separated addresses or networks (``127.0.0.1, 10.0.0.0/8``).

    Raises:
        LimitError: an entry that is neither.

    >>> [str(n) for n in parse_networks("127.0.0.1, 10.0.0.0/8")]
    ['127.0.0.1/32', '10.0.0.0/8']
    """
    out = []
    for raw in (spec or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            out.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise LimitError(f"CMCE_TRUSTED_PROXIES entry {entry[:60]!r} is not an IP address or network "
                             f"(e.g. 127.0.0.1 or 10.0.0.0/8)") from None
    return tuple(out)


@dataclass(frozen=True)
class ClientLimits:
    """What one client (one address) may hold at once, and what uploads may keep on disk.

    Attributes:
        jobs_per_kind: jobs one client may have queued or running in each concurrency group
            (index, search, bundle, the rest) (``CMCE_CLIENT_JOBS``).
        requests_per_minute: queue joins and API calls per client in any minute
            (``CMCE_CLIENT_REQUESTS_PER_MINUTE``).
        upload_bytes_per_client: upload bytes one client may keep on disk; an upload stays for
            ``upload_retention_s`` (``CMCE_UPLOAD_MB_PER_CLIENT``).
        upload_bytes_total: upload bytes all clients together may keep on disk (``CMCE_UPLOAD_MB_TOTAL``).
        upload_retention_s: seconds an uploaded file is kept before it is deleted
            (``CMCE_UPLOAD_RETENTION_S``); indexing copies what it needs at once.
        sessions_per_client: sessions one client may keep; past it, its own least recently used
            one is dropped (``CMCE_SESSIONS_PER_CLIENT``).
        api_session_idle_s: seconds an API session is kept without a request: one that never opened
            Gradio's heartbeat (raw HTTP calls; the page and ``gradio_client`` keep it open, and Gradio
            drops their sessions when it closes) (``CMCE_API_SESSION_IDLE_S``).
        trusted_proxies: peers whose ``X-Forwarded-For`` is believed (``CMCE_TRUSTED_PROXIES``).
        behind_space_proxy: running on a Hugging Face Space (``SPACE_ID`` set): the peer is the
            Space's proxy, and the visitor is the right-most public address it forwarded.
    """

    jobs_per_kind: int = 2
    requests_per_minute: int = 240
    upload_bytes_per_client: int = 400 * _MIB
    upload_bytes_total: int = 4096 * _MIB
    upload_retention_s: int = 900
    sessions_per_client: int = 8
    api_session_idle_s: int = 600
    trusted_proxies: tuple[Network, ...] = ()
    behind_space_proxy: bool = False

    def __post_init__(self) -> None:
        for name in ("jobs_per_kind", "requests_per_minute", "upload_bytes_per_client", "upload_bytes_total",
                     "upload_retention_s", "sessions_per_client", "api_session_idle_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LimitError(f"ClientLimits.{name} must be a positive integer, got {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientLimits:
        """Defaults overridden by the ``CMCE_*`` variables named on each attribute (sizes in MiB).

        Raises:
            LimitError: a value that is not a positive integer, or a bad proxy address.
        """
        env = os.environ if environ is None else environ
        base, value = cls(), partial(env_positive_int, env)
        return cls(
            jobs_per_kind=value("CMCE_CLIENT_JOBS", base.jobs_per_kind),
            requests_per_minute=value("CMCE_CLIENT_REQUESTS_PER_MINUTE", base.requests_per_minute),
            upload_bytes_per_client=value("CMCE_UPLOAD_MB_PER_CLIENT", base.upload_bytes_per_client // _MIB) * _MIB,
            upload_bytes_total=value("CMCE_UPLOAD_MB_TOTAL", base.upload_bytes_total // _MIB) * _MIB,
            upload_retention_s=value("CMCE_UPLOAD_RETENTION_S", base.upload_retention_s),
            sessions_per_client=value("CMCE_SESSIONS_PER_CLIENT", base.sessions_per_client),
            api_session_idle_s=value("CMCE_API_SESSION_IDLE_S", base.api_session_idle_s),
            trusted_proxies=parse_networks(env.get("CMCE_TRUSTED_PROXIES")),
            behind_space_proxy=bool(env.get("SPACE_ID")),
        )

    def describe(self) -> list[tuple[str, str]]:
        """``(what, value)`` rows for the logs."""
        proxies = ("the Space's proxy" if self.behind_space_proxy else
                   ", ".join(map(str, self.trusted_proxies)) or "none (X-Forwarded-For ignored)")
        return [("jobs queued or running per client, per kind", str(self.jobs_per_kind)),
                ("requests per client per minute", str(self.requests_per_minute)),
                ("upload bytes kept per client", format_bytes(self.upload_bytes_per_client)),
                ("upload bytes kept, all clients", format_bytes(self.upload_bytes_total)),
                ("uploads kept for", f"{self.upload_retention_s} s"),
                ("sessions kept per client", str(self.sessions_per_client)),
                ("idle API sessions kept for", f"{self.api_session_idle_s} s"),
                ("trusted proxies", proxies)]


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address((text or "").strip().strip("[]"))
    except ValueError:
        return None


def client_address(peer: str | None, headers: Mapping[str, str], limits: ClientLimits) -> str:
    """The address a request is charged to.

    A peer that is not a trusted proxy is the client itself: its ``X-Forwarded-For`` and
    ``X-Real-IP`` are ignored (anyone can write them). Behind a trusted proxy, the client is
    the right-most ``X-Forwarded-For`` entry that is not itself a proxy (entries to its left
    were written by the client and may be forged), else ``X-Real-IP``, else the peer.
    ``headers`` must be keyed in lower case (as Starlette's are).

    >>> space = ClientLimits(behind_space_proxy=True)
    >>> client_address("10.16.3.80", {"x-forwarded-for": "6.6.6.6, 81.2.69.160, 10.16.0.1"}, space)
    '81.2.69.160'
    >>> client_address("127.0.0.1", {"x-forwarded-for": "81.2.69.160"}, ClientLimits())
    '127.0.0.1'
    """
    peer_ip = _ip(peer)
    proxies = (*limits.trusted_proxies, *(PRIVATE_NETWORKS if limits.behind_space_proxy else ()))
    trusted = limits.behind_space_proxy or (peer_ip is not None and any(peer_ip in n for n in limits.trusted_proxies))
    if not trusted:
        return str(peer_ip) if peer_ip is not None else (peer or "unknown")
    for entry in reversed((headers.get("x-forwarded-for") or "").split(",")):
        ip = _ip(entry)
        if ip is not None and not any(ip in n for n in proxies):
            return str(ip)
    real = _ip(headers.get("x-real-ip"))
    if real is not None:
        return str(real)
    return str(peer_ip) if peer_ip is not None else (peer or "unknown")


def jobs_in_queue(queue: Any, concurrency_id: str, client_of: Callable[[Any], str]) -> dict[str, int]:
    """Jobs per client waiting or running in one of Gradio's concurrency groups.

    Reads Gradio 6's queue (``Queue.event_queue_per_concurrency_id[id].queue`` for waiting
    events, ``Queue.active_jobs`` for running ones); ``client_of`` names an event's client
    from its ``request``. A queue of another shape counts nothing (logged once).
    """
    counts: dict[str, int] = {}
    try:
        waiting = list(queue.event_queue_per_concurrency_id[concurrency_id].queue) \
            if concurrency_id in queue.event_queue_per_concurrency_id else []
        running = [e for job in list(queue.active_jobs) if job for e in job if e.concurrency_id == concurrency_id]
    except (AttributeError, TypeError) as e:  # another Gradio: the other limits still hold
        if not getattr(jobs_in_queue, "_warned", False):
            logger.warning("cannot read Gradio's queue to count jobs per client (%s)", e)
            jobs_in_queue._warned = True  # type: ignore[attr-defined]
        return counts
    for event in waiting + running:
        key = client_of(event)
        counts[key] = counts.get(key, 0) + 1
    return counts


@dataclass
class RateWindow:
    """Requests per client in a sliding window; the least recently seen clients are forgotten
    past ``max_clients``.

    >>> w = RateWindow(2, 60.0, clock=lambda: 0.0)
    >>> w.take("a"); w.take("a")
    >>> try:
    ...     w.take("a")
    ... except TooManyRequests as e:
    ...     print(e.retry_after_s)
    60
    """

    limit: int
    window_s: float = 60.0
    max_clients: int = 50_000
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _seen: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, client: str) -> None:
        """Count one request of ``client``.

        Raises:
            TooManyRequests: ``limit`` requests within the window already (not counted then).
        """
        with self._lock:
            now = self.clock()
            times = self._seen.pop(client, None) or deque()
            self._seen[client] = times
            while times and times[0] <= now - self.window_s:
                times.popleft()
            while len(self._seen) > self.max_clients:
                self._seen.popitem(last=False)
            if len(times) >= self.limit:
                raise TooManyRequests(
                    f"too many requests from you ({self.limit} a minute are allowed); retry in "
                    f"{max(1, math.ceil(times[0] + self.window_s - now))} s", times[0] + self.window_s - now)
            times.append(now)


@dataclass
class _Upload:
    time: float
    client: str
    nbytes: int
    paths: list[str] = field(default_factory=list)


class UploadLedger:
    """Upload bytes per client and in total, kept on disk for ``retention_s`` at most.

    ``reserve`` charges an upload before it is received (its announced length), ``record``
    names the files it became, ``release`` refunds a refused one, and ``sweep`` deletes the
    files of uploads older than the retention. So the bytes a client keeps on disk are at
    most what it was charged within the retention: at most ``per_client``.

    >>> ledger = UploadLedger(per_client=100, total=150, retention_s=60, clock=lambda: 0.0)
    >>> ticket = ledger.reserve("a", 80)
    >>> try:
    ...     ledger.reserve("a", 30)
    ... except TooManyRequests as e:
    ...     print(e)
    too many uploads from you: 80 bytes kept of the 100 bytes allowed per client for 60 s; this one is 30 bytes; retry in 60 s
    """

    def __init__(self, per_client: int, total: int, retention_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_client, self.total, self.retention_s, self.clock = per_client, total, retention_s, clock
        self._uploads: deque[_Upload] = deque()
        self._lock = threading.Lock()

    def held(self, client: str | None = None) -> int:
        """Bytes charged within the retention, to ``client`` (None: everyone)."""
        with self._lock:
            return sum(u.nbytes for u in self._uploads if client is None or u.client == client)

    def reserve(self, client: str, nbytes: int) -> _Upload:
        """Charge ``nbytes`` to ``client`` now.

        Raises:
            TooManyRequests: over the client's share (429) or the server's total (503), with when
                the oldest charge leaves the retention.
        """
        with self._lock:
            now = self.clock()
            mine = [u for u in self._uploads if u.client == client]
            held = sum(u.nbytes for u in mine)
            if held + nbytes > self.per_client:
                wait = (mine[0].time + self.retention_s - now) if mine else self.retention_s
                raise TooManyRequests(
                    f"too many uploads from you: {format_bytes(held)} kept of the {format_bytes(self.per_client)} "
                    f"allowed per client for {self.retention_s:g} s; this one is {format_bytes(nbytes)}; retry in "
                    f"{max(1, math.ceil(wait))} s", wait)
            everyone = sum(u.nbytes for u in self._uploads)
            if everyone + nbytes > self.total:
                wait = (self._uploads[0].time + self.retention_s - now) if self._uploads else self.retention_s
                raise TooManyRequests(
                    f"the server's upload space is full ({format_bytes(everyone)} of {format_bytes(self.total)}); "
                    f"retry in {max(1, math.ceil(wait))} s", wait, status=503)
            upload = _Upload(now, client, int(nbytes))
            self._uploads.append(upload)
            return upload

    def record(self, upload: _Upload, paths: Iterable[str]) -> None:
        """The files ``upload`` was stored as (deleted by ``sweep`` once it is old)."""
        with self._lock:
            upload.paths.extend(str(p) for p in paths)

    def release(self, upload: _Upload) -> None:
        """Refund an upload that was refused (nothing of it kept)."""
        with self._lock:
            try:
                self._uploads.remove(upload)
            except ValueError:
                pass

    def sweep(self) -> list[str]:
        """Delete the files of uploads older than the retention (a file a younger upload also
        names is kept) and forget them. Returns the paths deleted."""
        with self._lock:
            cutoff = self.clock() - self.retention_s
            old = []
            while self._uploads and self._uploads[0].time <= cutoff:
                old.append(self._uploads.popleft())
            young = {p for u in self._uploads for p in u.paths}
        deleted = []
        for path in {p for u in old for p in u.paths} - young:
            try:
                os.unlink(path)
                deleted.append(path)
            except FileNotFoundError:
                continue
            except OSError as e:
                logger.warning("could not delete the old upload %s: %s", path, e)
                continue
            try:
                Path(path).parent.rmdir()  # Gradio keeps each upload in a folder of its own
            except OSError:
                pass
        if deleted:
            logger.info("deleted %d uploads older than %g s", len(deleted), self.retention_s)
        return deleted


class TakeTurns:
    """``slots`` jobs at once, served in arrival order, and a running job can pass its turn on.

    A long job calls :meth:`Turn.pass_on` between chunks of its work: if another job waits, it
    goes to the back of the line and the waiting one runs; otherwise it keeps going. So one
    300-photo indexing job cannot hold the indexing slot while a 4-photo job waits.
    """

    def __init__(self, slots: int = 1) -> None:
        if slots < 1:
            raise LimitError(f"TakeTurns needs at least one slot, got {slots}")
        self.slots = slots
        self._line: deque[object] = deque()
        self._running = 0
        self._cond = threading.Condition()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._line)

    def _acquire(self) -> None:
        ticket = object()
        with self._cond:
            self._line.append(ticket)
            self._cond.wait_for(lambda: self._running < self.slots and self._line[0] is ticket)
            self._line.popleft()
            self._running += 1
            self._cond.notify_all()

    def _release(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    @contextmanager
    def turn(self) -> Iterator[Turn]:
        """Hold a slot for the block (waiting for it in arrival order)."""
        self._acquire()
        turn = Turn(self)
        try:
            yield turn
        finally:
            self._release()


class Turn:
    """A held slot of :class:`TakeTurns`."""

    def __init__(self, owner: TakeTurns) -> None:
        self._owner = owner
        self.passed = 0

    def pass_on(self) -> None:
        """Let a waiting job run first, if there is one; returns once this job holds a slot again."""
        if self._owner.waiting:
            self._owner._release()
            self._owner._acquire()
            self.passed += 1


@dataclass
class ClientGate:
    """The per-client limits of one server: request rate, upload ledger, and the sessions seen
    with Gradio's heartbeat open (the page's and ``gradio_client``'s; not expired as idle API sessions)."""

    limits: ClientLimits
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    rate: RateWindow = field(init=False)
    uploads: UploadLedger = field(init=False)
    _heartbeats: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.rate = RateWindow(self.limits.requests_per_minute, 60.0, clock=self.clock)
        self.uploads = UploadLedger(self.limits.upload_bytes_per_client, self.limits.upload_bytes_total,
                                    self.limits.upload_retention_s, clock=self.clock)

    def client(self, peer: str | None, headers: Mapping[str, str]) -> str:
        return client_address(peer, headers, self.limits)

    def check_jobs(self, held: int, kind: str) -> None:
        """Raise when a client already holds ``jobs_per_kind`` jobs of ``kind`` (queued or running)."""
        if held >= self.limits.jobs_per_kind:
            raise TooManyRequests(f"too many requests from you: {held} {kind} jobs of yours are queued or running "
                                  f"({self.limits.jobs_per_kind} allowed at once); retry in 5 s when one has "
                                  f"finished", 5)

    def saw_heartbeat(self, session_hash: str) -> None:
        """Gradio's heartbeat opened for ``session_hash`` (a page or ``gradio_client``; 10,000 kept at most)."""
        with self._lock:
            self._heartbeats.pop(session_hash, None)
            self._heartbeats[session_hash] = True
            while len(self._heartbeats) > 10_000:
                self._heartbeats.popitem(last=False)

    def has_heartbeat(self, session_hash: str | None) -> bool:
        with self._lock:
            return bool(session_hash) and session_hash in self._heartbeats
