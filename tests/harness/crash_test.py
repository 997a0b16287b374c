"""Crash safety of the gallery store: kill -9 ``cmce index`` and ``cmce upgrade`` at random points.

A tiny gallery (a few LFW photos copied to a temporary folder) is built once with the
``facenet-dlib`` bundle. Each trial restores it, starts one command and kills it with
SIGKILL at a seeded random moment, then checks the gallery folder:

* ``index``: ``python -m cmce index MORE_PHOTOS --out GALLERY`` (appends a shard);
  old state = the first photos' entries, new state = old + the new photos' entries.
* ``upgrade``: ``python -m cmce upgrade GALLERY --bundle sface-query`` (re-projection
  in place); old state = derived data of ``facenet-dlib``, new = of ``sface-query``, the
  stored entries and embeddings unchanged.

After every kill the gallery must load (``read_gallery``: manifest, every shard and its
CRCs), hold exactly the old or the new state (entry ids, and embeddings equal to an
uninterrupted reference run), open with ``Gallery.load`` under the state's bundle, and
find a gallery photo's own person at rank 1. Anything else is a *mix* or a failure.
Half the trials kill at a uniform moment of the command's measured run time (most fall
while it loads its models), the other half at a random moment up to 0.1 s after the
command first writes into the gallery folder (0.1 s x U^3: most within a few
milliseconds), which is where a torn write could happen.
``--resume`` trials also re-run the command to completion after the kill: it must reach
the new state and leave no stray temporary file (the next write replaces or removes what
a killed one left).

    CMCE_TORCH_THREADS=1 PYTHONPATH=. python tests/harness/crash_test.py --trials 20 --seed 0

Prints each trial and the counts per operation (``--json PATH`` also writes every figure and
trial: ``report_json``; the docs' crash table is rendered from it); exits 1 on any mix or failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LFW = ROOT.parent / "shared" / "data" / "lfw-train"
OLD_BUNDLE = ROOT / "assets" / "bundles" / "facenet-dlib"
NEW_BUNDLE = ROOT / "assets" / "bundles" / "sface-query"
OPERATIONS = ("index", "upgrade")
MAX_TRIALS = 100


@dataclass(frozen=True)
class State:
    """What a gallery folder holds: entry ids, raw embeddings per backbone, the derived data's bundle."""

    ids: tuple[str, ...]
    embeddings: dict = field(compare=False, hash=False)
    derived: str | None

    @classmethod
    def read(cls, folder: Path) -> State:
        from cmce.storage.read import read_gallery

        stored = read_gallery(folder)
        records = stored.records
        order = np.argsort(records.entry_id)
        embeddings = {}
        for key in records.backbones:
            embeddings[key] = (np.asarray(records.embeddings[key])[order], np.asarray(records.present[key])[order])
        derived = stored.derived
        return cls(tuple(np.asarray(records.entry_id)[order]), embeddings,
                   None if not derived else derived["bundle"]["source"])

    def same_data(self, other: State) -> bool:
        if self.ids != other.ids or set(self.embeddings) != set(other.embeddings):
            return False
        for key, (vectors, present) in self.embeddings.items():
            o_vectors, o_present = other.embeddings[key]
            if not np.array_equal(present, o_present):
                return False
            if not np.allclose(vectors, o_vectors, atol=1e-5):
                return False
        return True


@dataclass
class Trial:
    operation: str
    number: int
    mode: str
    kill_after_s: float | None
    outcome: str = ""  # "old", "new" (or "new (finished)"), or a failure
    detail: str = ""
    leftovers: int = 0
    resumed: bool = False  # re-run to completion after the kill (``--resume``)


def _command(operation: str, work: Path) -> list[str]:
    base = [sys.executable, "-m", "cmce"]
    if operation == "index":
        return base + ["index", str(work / "more"), "--out", str(work / "gallery"), "--bundle", str(OLD_BUNDLE)]
    return base + ["upgrade", str(work / "gallery"), "--bundle", str(NEW_BUNDLE)]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1",
                CMCE_TORCH_THREADS=os.environ.get("CMCE_TORCH_THREADS", "1"))


def _listing(folder: Path) -> set[str]:
    try:
        return {str(p.relative_to(folder)) for p in folder.rglob("*")}
    except OSError:  # a folder renamed while listed: that is a write
        return set()


def _run(cmd: list[str], timeout: float = 600) -> None:
    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed ({done.returncode}): {done.stderr[-2000:]}")


def pick_photos(lfw: Path, first: int = 3, more: int = 2) -> tuple[list[Path], list[Path]]:
    """Two photos each of ``first`` people (the gallery) and of ``more`` others (added by ``index``)."""
    people = []
    for folder in sorted(p for p in lfw.iterdir() if p.is_dir()):
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) >= 2:
            people.append(photos[:2])
        if len(people) == first + more:
            break
    return [p for ps in people[:first] for p in ps], [p for ps in people[first:] for p in ps]


class CrashTest:
    """Set-up (base gallery, reference runs, engines) shared by every trial of one run."""

    def __init__(self, lfw: Path, workdir: Path):
        from cmce.method.bundle import load_bundle
        from cmce.method.engine import FaceEngine

        self.work = workdir
        first, more = pick_photos(lfw)
        for name, photos in (("photos", first), ("more", more)):
            (workdir / name).mkdir(parents=True, exist_ok=True)
            for p in photos:  # a folder per person: the label
                (workdir / name / p.parent.name).mkdir(exist_ok=True)
                shutil.copy2(p, workdir / name / p.parent.name / p.name)
        self.query = first[0]
        self.query_label = first[0].parent.name
        self.base = workdir / "base"
        _run([sys.executable, "-m", "cmce", "index", str(workdir / "photos"), "--out", str(self.base),
              "--bundle", str(OLD_BUNDLE)])
        self.old = State.read(self.base)
        self.new: dict[str, State] = {}
        self.seconds: dict[str, float] = {}
        for operation in OPERATIONS:  # uninterrupted reference runs
            self._restore()
            start = time.monotonic()
            _run(_command(operation, workdir))
            self.seconds[operation] = time.monotonic() - start
            self.new[operation] = State.read(workdir / "gallery")
        self.engines = {str(OLD_BUNDLE): FaceEngine(load_bundle(OLD_BUNDLE)),
                        str(NEW_BUNDLE): FaceEngine(load_bundle(NEW_BUNDLE))}

    def _restore(self) -> None:
        shutil.rmtree(self.work / "gallery", ignore_errors=True)
        shutil.copytree(self.base, self.work / "gallery")

    def trial(self, operation: str, number: int, rng: random.Random, resume: bool = False,
              mode: str = "uniform", write_delay: float = 0.1) -> Trial:
        self._restore()
        gallery = self.work / "gallery"
        before = _listing(gallery)
        proc = subprocess.Popen(_command(operation, self.work), env=_env(), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = time.monotonic()
        if mode == "uniform":
            kill_at = start + rng.uniform(0, 1.1 * self.seconds[operation])
        else:
            delay, kill_at = write_delay * rng.random() ** 3, None  # most within a few ms of the first write
            while proc.poll() is None and kill_at is None:
                if _listing(gallery) != before:
                    kill_at = time.monotonic() + delay
                else:
                    time.sleep(0.001)
            kill_at = kill_at or time.monotonic()
        while proc.poll() is None and time.monotonic() < kill_at:
            time.sleep(0.002)
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        trial = Trial(operation, number, mode, None if finished else round(time.monotonic() - start, 3))
        trial.outcome, trial.detail = self.check(operation)
        if finished and trial.outcome == "new":
            trial.outcome = "new (finished)"
        trial.leftovers = len(_listing(gallery) - _known(gallery))
        if resume and not trial.outcome.startswith(("MIX", "FAIL")):
            trial.resumed = True
            _run(_command(operation, self.work))
            outcome, detail = self.check(operation)
            if outcome != "new":
                trial.outcome, trial.detail = f"FAIL after resume: {outcome}", detail
            else:
                stray = len(_listing(gallery) - _known(gallery))
                trial.detail += f"; re-run: new, {stray} stray files"
                if stray:
                    trial.outcome = f"FAIL re-run left {stray} stray files"
        return trial

    def check(self, operation: str) -> tuple[str, str]:
        """Classify the gallery folder: "old", "new", "MIX ..." or "FAIL ..."."""
        from cmce.errors import CmceError
        from cmce.gallery.memory import Gallery

        gallery = self.work / "gallery"
        try:
            state = State.read(gallery)
        except (CmceError, OSError, ValueError, KeyError) as e:
            return "FAIL unreadable", f"{type(e).__name__}: {e}"
        new = self.new[operation]
        if operation == "index":
            kind = "old" if state.same_data(self.old) else "new" if state.same_data(new) else None
            bundle = str(OLD_BUNDLE)
        else:
            if not state.same_data(self.old):
                return "MIX data changed", f"{len(state.ids)} entries"
            kind = {self.old.derived: "old", new.derived: "new"}.get(state.derived)
            bundle = str(NEW_BUNDLE) if kind == "new" else str(OLD_BUNDLE)
        if kind is None:
            return "MIX", f"{len(state.ids)} entries, derived {state.derived}"
        try:
            loaded = Gallery.load(gallery, self.engines[bundle])
            top = loaded.search_image(self.query).views["ensemble"].matches[0].label
        except (CmceError, OSError, ValueError, KeyError, IndexError) as e:
            return f"FAIL {kind} but unusable", f"{type(e).__name__}: {e}"
        if top != self.query_label:
            return f"FAIL {kind} but searched wrong", f"top-1 {top!r}, expected {self.query_label!r}"
        return kind, f"{len(loaded)} entries, derived {Path(state.derived or '-').name}"


def _known(folder: Path) -> set[str]:
    """Paths the manifest accounts for (shards, the derived folder and its files, the manifest, lock)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return set()
    known = {"manifest.json", "shards", "derived", ".lock"}
    known |= {s["file"] for s in manifest.get("shards", [])}
    known |= {"skipped"} | {s["file"] for s in manifest.get("skipped", [])} if manifest.get("skipped") else set()
    derived = (manifest.get("derived") or {}).get("path")
    if derived:
        known |= {derived} | {str(p.relative_to(folder)) for p in (folder / derived).rglob("*")}
    return known


def run(lfw: Path, trials: int, seed: int = 0, resume: int = 0, operations: Sequence[str] = OPERATIONS,
        modes: Sequence[str] = ("uniform", "write"), log=print, write_delay: float = 0.1,
        setup: dict | None = None) -> dict[str, list[Trial]]:
    """``trials`` kill -9 trials per operation, taking ``modes`` in turn; the first ``resume`` of each
    also re-run to completion. ``write`` trials kill within ``write_delay`` seconds of the first write.
    ``setup``, when given, receives the set-up's figures (seconds, uninterrupted run times, gallery sizes)."""
    if not 1 <= trials <= MAX_TRIALS:
        raise ValueError(f"--trials must be in 1..{MAX_TRIALS}, got {trials}")
    results: dict[str, list[Trial]] = {}
    with tempfile.TemporaryDirectory(prefix="cmce-crash-") as tmp:
        start = time.monotonic()
        test = CrashTest(lfw, Path(tmp))
        if setup is not None:
            setup.update(setup_s=round(time.monotonic() - start, 1),
                         uninterrupted_s={op: round(s, 1) for op, s in test.seconds.items()},
                         gallery_entries=len(test.old.ids),
                         index_adds=len(test.new["index"].ids) - len(test.old.ids))
        log(f"set-up {time.monotonic() - start:.1f} s; uninterrupted runs: "
            + ", ".join(f"{op} {s:.1f} s" for op, s in test.seconds.items())
            + f"; gallery {len(test.old.ids)} entries, index adds {len(test.new['index'].ids) - len(test.old.ids)}")
        for operation in operations:
            rng = random.Random(f"{seed}:{operation}")
            results[operation] = []
            for number in range(trials):
                trial = test.trial(operation, number, rng, resume=number < resume, mode=modes[number % len(modes)],
                                   write_delay=write_delay)
                results[operation].append(trial)
                log(f"{operation:<8} #{number:<3} {trial.mode:<8} killed at "
                    f"{'-' if trial.kill_after_s is None else f'{trial.kill_after_s:.2f} s':<9} -> {trial.outcome}"
                    f" ({trial.detail}){f'; {trial.leftovers} stray files' if trial.leftovers else ''}")
    return results


def summary(results: dict[str, list[Trial]]) -> str:
    lines = []
    for operation, trials in results.items():
        counts = Counter(t.outcome.split(" (")[0] if not t.outcome.startswith(("MIX", "FAIL")) else t.outcome
                         for t in trials)
        stray = sum(t.leftovers > 0 for t in trials)
        lines.append(f"{operation}: {len(trials)} trials: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                     + f"; trials leaving stray files: {stray}")
    return "\n".join(lines)


def operation_counts(trials: Sequence[Trial]) -> dict:
    """One operation's figures: trials, killed (the rest finished before the kill), the state each killed
    trial's gallery held (old / new), mixed or unusable (any ``MIX`` or ``FAIL``), trials that left stray
    temporary files, and the re-run trials (``--resume``) with those that reached the new state clean."""
    killed = [t for t in trials if t.kill_after_s is not None]
    resumed = [t for t in trials if t.resumed]
    return {
        "trials": len(trials), "killed": len(killed),
        "killed_old": sum(t.outcome == "old" for t in killed), "killed_new": sum(t.outcome == "new" for t in killed),
        "finished": len(trials) - len(killed),
        "finished_new": sum(t.outcome == "new (finished)" for t in trials if t.kill_after_s is None),
        "mixed_or_failed": len(failures({"": list(trials)})),
        "trials_with_stray_files": sum(t.leftovers > 0 for t in trials),
        "resumed": len(resumed),
        "resumed_new_clean": sum(not t.outcome.startswith(("MIX", "FAIL")) for t in resumed),
    }


def report_json(results: dict[str, list[Trial]], setup: dict, *, seed: int, resume: int, wall_s: float,
                started_utc: str, load_before: float, load_after: float) -> dict:
    """Every figure of a run, for ``--json``: the set-up's, the counts per operation, every trial, and
    when and under what load (1-minute load average, CPUs) it ran."""
    return {
        "harness": "crash_test", "seed": seed, "resume": resume, **setup, "wall_s": round(wall_s, 1),
        "operations": {op: operation_counts(trials) for op, trials in results.items()},
        "trials": {op: [asdict(t) for t in trials] for op, trials in results.items()},
        "run": {"started_utc": started_utc, "cpus": os.cpu_count(), "load_1min_before": round(load_before, 2),
                "load_1min_after": round(load_after, 2),
                "torch_threads": os.environ.get("CMCE_TORCH_THREADS", "1")},
    }


def failures(results: dict[str, list[Trial]]) -> list[Trial]:
    return [t for ts in results.values() for t in ts if t.outcome.startswith(("MIX", "FAIL"))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="per operation (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", type=int, default=2, help="trials per operation also re-run to completion")
    parser.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure and trial to PATH")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.INFO)
    start, setup = time.monotonic(), {}
    started, load_before = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), os.getloadavg()[0]
    results = run(args.lfw, args.trials, args.seed, args.resume, setup=setup)
    print(summary(results))
    print(f"wall {time.monotonic() - start:.0f} s")
    if args.json:
        doc = report_json(results, setup, seed=args.seed, resume=args.resume, wall_s=time.monotonic() - start,
                          started_utc=started, load_before=load_before, load_after=os.getloadavg()[0])
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 1 if failures(results) else 0


if __name__ == "__main__":
    sys.exit(main())
