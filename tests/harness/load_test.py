"""Load test of a running app: N gradio_client sessions at once, each on its own gallery.

Each client (one ``gradio_client.Client``, so one server session) indexes its own,
disjoint set of LFW identities (two images per person), then searches with other images
of its people. An ensemble match whose label or source file is not one of the client's
own is an isolation violation: another session's gallery leaked into this one (a second,
unlabelled face of one of its own files is fine).

Each client sends an ``X-Forwarded-For`` address of its own (``client_headers``): an app started
with ``CMCE_TRUSTED_PROXIES=127.0.0.1`` then applies its per-client limits to each client apart,
as it would behind a Space's proxy.

Loopback only (127.0.0.0/8, localhost, ::1), bounded in clients, images and time::

    python app.py &
    python tests/harness/load_test.py --clients 8 --pid $(pgrep -n -f app.py)

Prints requests, errors, isolation violations, latency percentiles per endpoint and,
with ``--pid``, the server's resident memory before and after. Exits 1 on any error or
isolation violation, 2 on bad arguments.

``--soak SECONDS`` runs a soak instead: every client loops until the time is up, each
cycle a new session (a new ``Client``) that indexes a small gallery of its own people,
searches it, switches the bundle (every other cycle) and searches again, then closes
the session. With ``--pid`` and ``--watch DIR`` (the app's temporary folders) the server's
memory and the disk use of those folders are sampled over time::

    python tests/harness/load_test.py --soak 600 --clients 32 --pid PID --watch /tmp --watch GRADIO_TEMP_DIR

``--json PATH`` (with ``--soak``) also writes every figure of the soak (``soak_json``; the docs'
soak table is rendered from it).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:7860/"
DEFAULT_LFW = Path(__file__).resolve().parents[3] / "shared" / "data" / "lfw-train"
MAX_CLIENTS = 32
MAX_IMAGES_PER_CLIENT = 40
MAX_SEARCHES_PER_CLIENT = 50
MAX_SECONDS = 1800
ENDPOINTS = ("/index_gallery", "/search")
SOAK_ENDPOINTS = ("/index_gallery", "/search", "/load_bundle", "close")
SWITCH_TO = ("facenet-query", "sface-query")


class LoadTestError(ValueError):
    """Bad arguments: a non-loopback URL, sizes out of bounds, too few LFW identities."""


def check_loopback(url: str) -> str:
    """The URL if its host is loopback (127.0.0.0/8, localhost or ::1).

    Raises:
        LoadTestError: any other host; the load test never leaves this machine.
    """
    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname or ""
    if parsed.scheme not in ("http", "https"):
        raise LoadTestError(f"URL must start with http:// or https://, got {url!r}")
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError
        except ValueError:
            raise LoadTestError(
                f"refusing host {host!r}: only 127.0.0.0/8, localhost or ::1 are allowed") from None
    return url


def client_headers(number: int) -> dict[str, str]:
    """Client ``number``'s own address, as a Space's proxy would forward it: an app that trusts loopback's
    ``X-Forwarded-For`` (``CMCE_TRUSTED_PROXIES=127.0.0.1``) counts each client apart; any other ignores it."""
    return {"X-Forwarded-For": f"10.50.{number // 250}.{number % 250 + 1}"}


def read_rss_kib(pid: int) -> int | None:
    """Resident memory of a process in KiB from /proc/PID/status (None: not readable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True)
class Person:
    """An LFW identity: the gallery images and the (other) images to query with."""

    name: str
    gallery: tuple[Path, ...]
    queries: tuple[Path, ...]


def assign_people(lfw_dir: Path, clients: int, people_per_client: int,
                  images_per_person: int = 2) -> list[list[Person]]:
    """Disjoint identities for each client: ``people_per_client`` each, in sorted order.

    Only people with at least ``images_per_person + 1`` images are used, so every person
    has a query image that is not in the gallery.

    Raises:
        LoadTestError: the folder holds too few such people.
    """
    need = clients * people_per_client
    people: list[Person] = []
    for folder in sorted(p for p in Path(lfw_dir).iterdir() if p.is_dir()):
        images = sorted(folder.glob("*.jpg"))
        if len(images) > images_per_person:
            people.append(Person(folder.name, tuple(images[:images_per_person]),
                                 tuple(images[images_per_person:])))
            if len(people) == need:
                break
    if len(people) < need:
        raise LoadTestError(f"{lfw_dir} has {len(people)} people with more than {images_per_person} "
                            f"images; {clients} clients x {people_per_client} people need {need}")
    return [people[i * people_per_client:(i + 1) * people_per_client] for i in range(clients)]


@dataclass
class ClientOutcome:
    """What one client saw: its requests, failures and search answers."""

    client: int
    labels: frozenset[str]
    sources: frozenset[str]
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    results: int = 0
    correct: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: {e: [] for e in ENDPOINTS})


@dataclass(frozen=True)
class LoadReport:
    """The whole run: per-client outcomes, wall time, server memory (KiB) before and after."""

    outcomes: tuple[ClientOutcome, ...]
    seconds: float
    timed_out: bool
    rss_before_kib: int | None = None
    rss_after_kib: int | None = None

    @property
    def requests(self) -> int:
        return sum(o.requests for o in self.outcomes)

    @property
    def errors(self) -> list[str]:
        timeout = ["run stopped at --max-seconds with clients still busy"] if self.timed_out else []
        return [e for o in self.outcomes for e in o.errors] + timeout

    @property
    def violations(self) -> list[str]:
        return [v for o in self.outcomes for v in o.violations]

    def latencies(self, endpoint: str) -> list[float]:
        return sorted(t for o in self.outcomes for t in o.latencies[endpoint])

    @property
    def ok(self) -> bool:
        return not self.errors and not self.violations


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` in [0, 100] of sorted values (nan if empty).

    E.g. percentile([1, 2, 3, 4], 50) == 2.5.
    """
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _timed(client, outcome: ClientOutcome, endpoint: str, deadline: float, **kwargs):
    """One request, counted and timed; waits no longer than the deadline."""
    outcome.requests += 1
    start = time.monotonic()
    job = client.submit(api_name=endpoint, **kwargs)
    result = job.result(timeout=max(0.1, deadline - time.monotonic()))
    outcome.latencies[endpoint].append(time.monotonic() - start)
    return result


def run_client(number: int, url: str, people: Sequence[Person], searches: int, k: int,
               deadline: float, outcome: ClientOutcome) -> None:
    """Index this client's people, then search; fills ``outcome`` (never raises)."""
    from gradio_client import Client, handle_file

    client = None
    try:
        client = Client(url, verbose=False, headers=client_headers(number))
        files = [handle_file(str(f)) for p in people for f in p.gallery]
        _, report = _timed(client, outcome, "/index_gallery", deadline, files=files)
        if report.get("added", 0) < len(files) or set(report.get("labels", {})) != outcome.labels:
            outcome.errors.append(f"client {number}: index report {report}")
        for s in range(searches):
            if time.monotonic() > deadline:
                outcome.errors.append(f"client {number}: out of time after {s} of {searches} searches")
                break
            person = people[s % len(people)]
            query = person.queries[(s // len(people)) % len(person.queries)]
            _, _, _, result = _timed(client, outcome, "/search", deadline, image=handle_file(str(query)), k=k)
            if "error" in result:
                outcome.errors.append(f"client {number}: search {query.name}: {result['error']}")
                continue
            matches = result["views"]["ensemble"]["matches"]
            if not matches:
                outcome.errors.append(f"client {number}: search {query.name}: no matches")
                continue
            outcome.results += 1
            foreign = sorted({m["source"] for m in matches} - outcome.sources
                             | {m["label"] for m in matches if m["label"] is not None} - outcome.labels)
            if foreign:
                outcome.violations.append(f"client {number}: search {query.name} matched {foreign}")
            outcome.correct += matches[0]["label"] == person.name
    except Exception as e:  # noqa: BLE001 - every failure is counted, none stops the others
        outcome.errors.append(f"client {number}: {type(e).__name__}: {e}")
    finally:
        if client is not None:
            client.close()


def run_load(url: str, lfw_dir: Path, clients: int = 8, images_per_client: int = 6,
             searches_per_client: int = 3, max_seconds: float = 120, k: int = 5,
             pid: int | None = None) -> LoadReport:
    """Run ``clients`` sessions at once, one thread each, for at most ``max_seconds``.

    Raises:
        LoadTestError: non-loopback URL, sizes out of bounds, too few LFW people.
    """
    check_loopback(url)
    if not 1 <= clients <= MAX_CLIENTS:
        raise LoadTestError(f"--clients must be in 1..{MAX_CLIENTS}, got {clients}")
    if not 2 <= images_per_client <= MAX_IMAGES_PER_CLIENT or images_per_client % 2:
        raise LoadTestError(f"--images-per-client must be even, in 2..{MAX_IMAGES_PER_CLIENT}, "
                            f"got {images_per_client}")
    if not 1 <= searches_per_client <= MAX_SEARCHES_PER_CLIENT:
        raise LoadTestError(f"--searches-per-client must be in 1..{MAX_SEARCHES_PER_CLIENT}, "
                            f"got {searches_per_client}")
    if not 0 < max_seconds <= MAX_SECONDS:
        raise LoadTestError(f"--max-seconds must be in (0, {MAX_SECONDS}], got {max_seconds}")
    groups = assign_people(lfw_dir, clients, images_per_client // 2)
    outcomes = [ClientOutcome(i, frozenset(p.name for p in g), frozenset(f.name for p in g for f in p.gallery))
                for i, g in enumerate(groups)]
    rss_before = read_rss_kib(pid) if pid else None
    start = time.monotonic()
    deadline = start + max_seconds
    threads = [threading.Thread(target=run_client, name=f"load-client-{i}", daemon=True,
                                args=(i, url, g, searches_per_client, k, deadline, outcomes[i]))
               for i, g in enumerate(groups)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline + 5 - time.monotonic()))  # requests time out at the deadline
    timed_out = any(t.is_alive() for t in threads)
    return LoadReport(tuple(outcomes), time.monotonic() - start, timed_out,
                      rss_before, read_rss_kib(pid) if pid else None)


def _mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.0f} MiB"


def format_report(report: LoadReport) -> str:
    """The printed summary: counts, latency percentiles per endpoint, memory, failures."""
    lines = [
        f"clients: {len(report.outcomes)}  wall: {report.seconds:.1f} s"
        + ("  (stopped at --max-seconds)" if report.timed_out else ""),
        (f"requests: {report.requests}  errors: {len(report.errors)}  "
         f"isolation violations: {len(report.violations)}"),
        (f"searches with a result: {sum(o.results for o in report.outcomes)}  "
         f"top-1 correct: {sum(o.correct for o in report.outcomes)}"),
    ]
    lines += [_latency_line(endpoint, report.latencies(endpoint), 4) for endpoint in ENDPOINTS]
    if report.rss_before_kib is not None or report.rss_after_kib is not None:
        before, after = report.rss_before_kib, report.rss_after_kib
        growth = f" (+{(after - before) / 1024:.0f} MiB)" if before is not None and after is not None else ""
        lines.append(f"server RSS: before {_mib(before)}, after {_mib(after)}{growth}")
    lines += [f"error: {e}" for e in report.errors[:20]]
    lines += [f"isolation violation: {v}" for v in report.violations[:20]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- soak


def disk_bytes(folders: Sequence[Path]) -> int:
    """Bytes of the files below ``folders`` (files that vanish while counted are skipped)."""
    total = 0
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    continue
    return total


@dataclass
class SoakReport:
    """A soak: per-client outcomes, and (seconds, RSS KiB, temp-disk bytes) samples over time."""

    outcomes: tuple[ClientOutcome, ...]
    seconds: float
    cycles: int
    samples: list[tuple[float, int | None, int | None]]
    warmup_s: float

    @property
    def requests(self) -> int:
        return sum(o.requests for o in self.outcomes)

    @property
    def errors(self) -> list[str]:
        return [e for o in self.outcomes for e in o.errors]

    @property
    def violations(self) -> list[str]:
        return [v for o in self.outcomes for v in o.violations]

    def latencies(self, endpoint: str) -> list[float]:
        return sorted(t for o in self.outcomes for t in o.latencies.get(endpoint, []))

    def growth(self, column: int) -> tuple[float | None, float | None, float | None]:
        """(value at the end of warm-up, largest value after it, relative growth) of RSS (1) or disk (2)."""
        after = [s[column] for s in self.samples if s[0] >= self.warmup_s and s[column] is not None]
        if not after:
            return None, None, None
        base = after[0]
        return base, max(after), (max(after) - base) / base if base else None

    @property
    def ok(self) -> bool:
        return not self.errors and not self.violations


def _soak_client(number: int, url: str, people: Sequence[Person], deadline: float, k: int,
                 outcome: ClientOutcome, cycles: list[int]) -> None:
    """Cycles of: new session, index 2 of this client's people, search, (switch bundle, search), close."""
    from gradio_client import Client, handle_file

    cycle = 0
    while time.monotonic() < deadline - 5:
        client = None
        try:
            client = Client(url, verbose=False, headers=client_headers(number))
            pair = [people[(2 * cycle + i) % len(people)] for i in range(2)]
            files = [handle_file(str(f)) for p in pair for f in p.gallery]
            _, report = _timed(client, outcome, "/index_gallery", deadline, files=files)
            if report.get("added", 0) < len(files) or set(report.get("labels", {})) != {p.name for p in pair}:
                outcome.errors.append(f"client {number} cycle {cycle}: index report {report}")
            steps = [None, SWITCH_TO[(cycle // 2) % 2]] if cycle % 2 else [None]
            for step, switch in enumerate(steps):
                if switch is not None:
                    _, note, *_ = _timed(client, outcome, "/load_bundle", deadline, repo_id=switch, revision="")
                    if "Not loaded" in note or "Not switched" in note:
                        outcome.errors.append(f"client {number} cycle {cycle}: switch to {switch}: {note}")
                person = pair[step % 2]
                query = person.queries[cycle % len(person.queries)]
                _, _, _, result = _timed(client, outcome, "/search", deadline, image=handle_file(str(query)), k=k)
                if "error" in result:
                    outcome.errors.append(f"client {number} cycle {cycle}: search {query.name}: {result['error']}")
                    continue
                matches = result["views"]["ensemble"]["matches"]
                outcome.results += 1
                mine_labels = {p.name for p in pair}
                mine_sources = {f.name for p in pair for f in p.gallery}
                foreign = sorted({m["source"] for m in matches} - mine_sources
                                 | {m["label"] for m in matches if m["label"] is not None} - mine_labels)
                if foreign:
                    outcome.violations.append(f"client {number} cycle {cycle}: {query.name} matched {foreign}")
                outcome.correct += bool(matches) and matches[0]["label"] == person.name
        except Exception as e:  # noqa: BLE001 - counted, the loop goes on with a new session
            if time.monotonic() < deadline:
                outcome.errors.append(f"client {number} cycle {cycle}: {type(e).__name__}: {e}")
        finally:
            if client is not None:
                start = time.monotonic()
                client.close()  # ends the heartbeat: the app drops the session and its folder
                outcome.latencies.setdefault("close", []).append(time.monotonic() - start)
        cycle += 1
    cycles[number] = cycle


def run_soak(url: str, lfw_dir: Path, clients: int = 32, seconds: float = 600, k: int = 5,
             pid: int | None = None, watch: Sequence[Path] = (), sample_s: float = 10.0,
             warmup: float = 0.25, people_per_client: int = 4) -> SoakReport:
    """``clients`` threads cycling sessions for ``seconds``; memory and disk sampled every ``sample_s``.

    Raises:
        LoadTestError: non-loopback URL, sizes out of bounds, too few LFW people.
    """
    check_loopback(url)
    if not 1 <= clients <= MAX_CLIENTS:
        raise LoadTestError(f"--clients must be in 1..{MAX_CLIENTS}, got {clients}")
    if not 10 <= seconds <= MAX_SECONDS:
        raise LoadTestError(f"--soak must be in [10, {MAX_SECONDS}] seconds, got {seconds}")
    groups = assign_people(lfw_dir, clients, people_per_client)
    outcomes = [ClientOutcome(i, frozenset(p.name for p in g), frozenset(f.name for p in g for f in p.gallery))
                for i, g in enumerate(groups)]
    for o in outcomes:
        o.latencies = {e: [] for e in SOAK_ENDPOINTS}
    cycles = [0] * clients
    samples: list[tuple[float, int | None, int | None]] = []
    start = time.monotonic()
    deadline = start + seconds
    stop = threading.Event()

    def sample() -> None:
        while True:
            samples.append((time.monotonic() - start, read_rss_kib(pid) if pid else None,
                            disk_bytes(watch) if watch else None))
            if stop.wait(sample_s):
                return

    sampler = threading.Thread(target=sample, name="soak-sampler", daemon=True)
    sampler.start()
    threads = [threading.Thread(target=_soak_client, name=f"soak-client-{i}", daemon=True,
                                args=(i, url, g, deadline, k, outcomes[i], cycles))
               for i, g in enumerate(groups)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline + 60 - time.monotonic()))
    for o, t in zip(outcomes, threads):
        if t.is_alive():
            o.errors.append(f"client {o.client}: still busy 60 s after the end")
    stop.set()
    sampler.join(30)
    return SoakReport(tuple(outcomes), time.monotonic() - start, sum(cycles), samples, warmup * seconds)


def _latency_line(endpoint: str, t: list[float], count_width: int) -> str:
    """``endpoint n=.. p50=.. p95=.. max=..`` for one endpoint's latencies (seconds)."""
    return (f"{endpoint:<15} n={len(t):<{count_width}} p50={percentile(t, 50):6.2f} s  "
            f"p95={percentile(t, 95):6.2f} s  max={max(t, default=float('nan')):6.2f} s")


def format_soak(report: SoakReport) -> str:
    lines = [
        f"soak: {len(report.outcomes)} clients, {report.seconds:.0f} s, {report.cycles} sessions opened and closed",
        f"requests: {report.requests}  errors: {len(report.errors)}  isolation violations: {len(report.violations)}",
        (f"searches with a result: {sum(o.results for o in report.outcomes)}  "
         f"top-1 correct: {sum(o.correct for o in report.outcomes)}"),
    ]
    lines += [_latency_line(endpoint, report.latencies(endpoint), 5) for endpoint in SOAK_ENDPOINTS]
    for column, what, unit in ((1, "server RSS", 1024), (2, "temp disk", 1)):
        base, top, growth = report.growth(column)
        if base is not None:
            lines.append(f"{what}: {base * unit / 2**20:.0f} MiB after warm-up ({report.warmup_s:.0f} s), "
                         f"max after {top * unit / 2**20:.0f} MiB ({100 * (growth or 0):+.1f}%)")
            series = [s[column] for s in report.samples if s[column] is not None]
            step = max(1, len(series) // 12)
            lines.append(f"  {what} over time (MiB): "
                         + " ".join(f"{v * unit / 2**20:.0f}" for v in series[::step]))
    lines += [f"error: {e}" for e in report.errors[:20]]
    lines += [f"isolation violation: {v}" for v in report.violations[:20]]
    return "\n".join(lines)


def _mib_or_none(value: int | None, unit: int) -> float | None:
    return None if value is None else round(value * unit / 2**20, 1)


def soak_json(report: SoakReport, *, url: str, sample_s: float, photos_per_index: int = 4,
              started_utc: str = "", load_before: float | None = None, load_after: float | None = None) -> dict:
    """Every figure of a soak, for ``--json``: counts, latency n / p50 / p95 / max per endpoint (seconds),
    the memory (RSS) and temporary-disk samples over time (MiB) with their growth after warm-up, the
    first errors and violations, and when and under what load (1-minute load average, CPUs) it ran."""
    def growth(column: int, unit: int) -> dict:
        base, top, rel = report.growth(column)
        series = [s[column] for s in report.samples if s[column] is not None]
        return {"start_mib": _mib_or_none(series[0] if series else None, unit),
                "after_warmup_mib": _mib_or_none(base, unit), "max_after_warmup_mib": _mib_or_none(top, unit),
                "growth_after_warmup": None if rel is None else round(rel, 4),
                "end_mib": _mib_or_none(series[-1] if series else None, unit)}

    def stats(t: list[float]) -> dict:
        return {"n": len(t), "p50_s": round(percentile(t, 50), 3) if t else None,
                "p95_s": round(percentile(t, 95), 3) if t else None, "max_s": round(max(t), 3) if t else None}

    return {
        "harness": "load_test --soak", "url": url, "clients": len(report.outcomes),
        "seconds": round(report.seconds, 1), "sessions": report.cycles, "requests": report.requests,
        "errors": len(report.errors), "violations": len(report.violations),
        "searches_with_result": sum(o.results for o in report.outcomes),
        "top1_correct": sum(o.correct for o in report.outcomes), "photos_per_index": photos_per_index,
        "endpoints": {e: stats(report.latencies(e)) for e in SOAK_ENDPOINTS},
        "warmup_s": round(report.warmup_s, 1), "sample_s": sample_s,
        "rss": growth(1, 1024), "disk": growth(2, 1),
        "samples": [{"t_s": round(t, 1), "rss_mib": _mib_or_none(r, 1024), "disk_mib": _mib_or_none(d, 1)}
                    for t, r, d in report.samples],
        "first_errors": report.errors[:20], "first_violations": report.violations[:20],
        "run": {"started_utc": started_utc, "cpus": os.cpu_count(),
                "load_1min_before": None if load_before is None else round(load_before, 2),
                "load_1min_after": None if load_after is None else round(load_after, 2)},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("CMCE_LOAD_URL", DEFAULT_URL),
                        help="app URL on this machine (default %(default)s)")
    parser.add_argument("--clients", type=int, default=8, help="sessions at once (default 8)")
    parser.add_argument("--images-per-client", type=int, default=6,
                        help="gallery images per client, two per person (default 6)")
    parser.add_argument("--searches-per-client", type=int, default=3, help="default 3")
    parser.add_argument("--max-seconds", type=float, default=120, help="hard time bound (default 120)")
    parser.add_argument("--k", type=int, default=5, help="matches per view (default 5)")
    parser.add_argument("--lfw", type=Path, default=DEFAULT_LFW, help="LFW folder (default %(default)s)")
    parser.add_argument("--pid", type=int, help="server process id, to report its memory")
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="soak for this long instead (10-1800)")
    parser.add_argument("--watch", type=Path, action="append", default=[],
                        help="with --soak: a folder whose disk use is sampled (repeatable)")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="with --soak (default 10)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="with --soak: also write every figure to PATH")
    args = parser.parse_args(argv)
    if args.json is not None and args.soak is None:
        print("load_test: --json goes with --soak", file=sys.stderr)
        return 2
    if args.soak is not None:
        started, load_before = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), os.getloadavg()[0]
        try:
            soak = run_soak(args.url, args.lfw, args.clients, args.soak, args.k, args.pid, args.watch,
                            args.sample_seconds)
        except LoadTestError as e:
            print(f"load_test: {e}", file=sys.stderr)
            return 2
        print(format_soak(soak))
        if args.json:
            doc = soak_json(soak, url=args.url, sample_s=args.sample_seconds, started_utc=started,
                            load_before=load_before, load_after=os.getloadavg()[0])
            args.json.write_text(json.dumps(doc, indent=1) + "\n")
        return 0 if soak.ok else 1
    try:
        report = run_load(args.url, args.lfw, args.clients, args.images_per_client,
                          args.searches_per_client, args.max_seconds, args.k, args.pid)
    except LoadTestError as e:
        print(f"load_test: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
