"""The targets table of ``docs/mixed-quality.md`` ("Targets of the mixed-quality work, measured
here"), rendered from the shipped bundles' held-out evaluations (``evaluate --json``: a clean and
a mixed gallery per bundle).

Every figure and every verdict comes from the data; the targets' thresholds are the constants
below. A figure is read the way the page's other tables read it (``docs_tables_results``: Recall@1
and TAR@1e-3 as ``bundle-summary`` writes them, error cuts as ``rejection-by-score`` does), and a
verdict compares the figures as the table shows them, so that a reader can check it by eye.
``TARGETS_TABLES`` maps the marker's renderer name to it; ``cmce.experiments.docs_tables``
registers it in its ``JSON_TABLES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cmce.experiments.docs_tables_base import bundle_name, one_evaluation, whole_points
from cmce.experiments.docs_tables_results import SCORE_TITLES
from cmce.metrics.results import Evaluation, QualityStep, ResultError

__all__ = ["BEAT_RATES", "CUT_RATE", "MIXED_CUT", "MIXED_GAIN_POINTS", "PAPER_DISAGREEMENT_CUT", "TARGETS_TABLES",
           "render_targets"]

#: Mixed gallery: the served ensemble beats the query model alone by at least this many points of Recall@1.
MIXED_GAIN_POINTS = 1.0
#: The rejection rate the error-cut targets are measured at.
CUT_RATE = 0.10
#: Mixed gallery: rejecting ``CUT_RATE`` by the shipped score cuts the served ensemble's error at least this much.
MIXED_CUT = 0.30
#: Mixed gallery: the rates at which the shipped score must beat random and detection doubt.
BEAT_RATES = (0.05, 0.10, 0.20, 0.30)
#: The paper's error cut at 10% rejected by disagreement (the gallery models' own ensemble).
PAPER_DISAGREEMENT_CUT = 0.174


@dataclass(frozen=True)
class _Outcome:
    """One bundle against one target: ``why`` it misses (None: met), and whether it only ties."""

    why: str | None = None
    ties: bool = False


def _points(fraction: float, digits: int) -> float:
    """A fraction in points, as the table writes it (``0.97072`` -> ``97.07``)."""
    return float(f"{100 * fraction:.{digits}f}")


def _percentages(values: Sequence[float], bold: int | None = None) -> str:
    """``34.6 / 37.4 / 67.3 / 73.0%``, the figure at index ``bold`` in bold."""
    cells = [f"{100 * v:.1f}" for v in values]
    if bold is not None:
        cells[bold] = f"**{cells[bold]}**"
    return " / ".join(cells) + "%"


def _randoms(values: Sequence[float], *, first: bool) -> str:
    """Random's error cuts: named in the first bundle's cell (``random's 1.0 / 4.8%``), bare after it."""
    return f"random's {_percentages(values)}" if first else _percentages(values)


def _rate_label(rates: Sequence[float]) -> str:
    return "/".join(f"{100 * r:.0f}" for r in rates) + "%"


def _at(steps: Sequence, rate: float, where: str):
    """The step at ``rate`` (a rejection step, a quality score's or the gallery ensemble's)."""
    for s in steps:
        if s.rate is not None and abs(s.rate - rate) < 1e-9:
            return s
    raise ResultError(f"{where}: no rejection step at {100 * rate:g}%")


def _shipped(e: Evaluation) -> tuple[QualityStep, ...]:
    """The served ensemble's rejection steps by the bundle's shipped quality score."""
    score = (e.bundle.quality if e.bundle else None) or "learned"
    if score not in e.rejection_by_quality:
        raise ResultError(f"{bundle_name(e)}: no rejection by its shipped score {score!r}")
    return e.rejection_by_quality[score]


def _who(names: Sequence[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _verdict(outcomes: Mapping[str, _Outcome]) -> str:
    """``met``, ``met (`a` ties)``, ``met for `a`; `b` 0.2 short`` or ``not met: `a` ...; `b` ...``."""
    missed = {n: o.why for n, o in outcomes.items() if o.why}
    met = [n for n in outcomes if n not in missed]
    if not missed:
        tied = [n for n, o in outcomes.items() if o.ties]
        return "met" + (f" ({_who(tied)} {'ties' if len(tied) == 1 else 'tie'})" if tied else "")
    misses = "; ".join(f"`{n}` {why}" for n, why in missed.items())
    return f"met for {_who(met)}; {misses}" if met else f"not met: {misses}"


def _compare(a: float, b: float) -> str:
    return ">" if a > b else "=" if a == b else "<"


def _short(target: float, figure: float, digits: int) -> str:
    return f"{target - figure:.{digits}f} short"


def _clean_served(bundles: Mapping[str, tuple[Evaluation, Evaluation]]) -> tuple[str, dict[str, _Outcome]]:
    cells, outcomes = [], {}
    for name, (clean, _) in bundles.items():
        served, alone = clean.row("CMCE ensemble"), clean.row("query model symmetric")
        pairs = {"R@1": (_points(served.recall_at_1, 2), _points(alone.recall_at_1, 2)),
                 "TAR@1e-3": (_points(served.tar_at_far_1e3, 2), _points(alone.tar_at_far_1e3, 2))}
        cells.append(f"`{name}` " + " and ".join(f"{s:.2f} {_compare(s, a)} {a:.2f}" for s, a in pairs.values()))
        below = [k for k, (s, a) in pairs.items() if s < a]
        outcomes[name] = _Outcome(f"below the query model alone in {' and '.join(below)}" if below else None,
                                  ties=any(s == a for s, a in pairs.values()))
    return "; ".join(cells), outcomes


def _mixed_gain(bundles: Mapping[str, tuple[Evaluation, Evaluation]]) -> tuple[str, dict[str, _Outcome]]:
    cells, outcomes = [], {}
    for name, (_, mixed) in bundles.items():
        served = _points(mixed.row("CMCE ensemble").recall_at_1, 2)
        alone = _points(mixed.row("query model symmetric").recall_at_1, 2)
        gain = round(served - alone, 2)  # the gain of the figures shown
        cells.append(f"`{name}` {gain:+.2f} ({served:.2f} vs {alone:.2f})")
        outcomes[name] = _Outcome(None if gain >= MIXED_GAIN_POINTS else _short(MIXED_GAIN_POINTS, gain, 2))
    return "; ".join(cells), outcomes


def _mixed_cut(bundles: Mapping[str, tuple[Evaluation, Evaluation]]) -> tuple[str, dict[str, _Outcome]]:
    cells, outcomes = [], {}
    for name, (_, mixed) in bundles.items():
        step = _at(_shipped(mixed), CUT_RATE, name)
        cut = _points(step.error_cut, 1)
        cells.append(f"`{name}` {cut:.1f}% {whole_points(step.error_cut_ci95)}".rstrip())
        outcomes[name] = _Outcome(None if cut >= _points(MIXED_CUT, 1) else _short(_points(MIXED_CUT, 1), cut, 1))
    return "; ".join(cells), outcomes


def _mixed_beats(bundles: Mapping[str, tuple[Evaluation, Evaluation]]) -> tuple[str, dict[str, _Outcome]]:
    cells, outcomes = [], {}
    for i, (name, (_, mixed)) in enumerate(bundles.items()):
        shipped = [_at(_shipped(mixed), r, name).error_cut for r in BEAT_RATES]
        detection = [_at(mixed.rejection_by_quality.get("detection", ()), r, f"{name}, detection").error_cut
                     for r in BEAT_RATES]
        random = [_at(mixed.rejection, r, f"{name}, random").random_error_cut for r in BEAT_RATES]
        against = (f"against {SCORE_TITLES['detection']}'s {_percentages(detection)} and random's {_percentages(random)}"
                   if i == 0 else f"against {_percentages(detection)} and {_percentages(random)}")
        cells.append(f"`{name}` {_percentages(shipped)} {against}")
        misses = [f"not above {title} at {100 * r:.0f}%" for title, others in
                  ((SCORE_TITLES["detection"], detection), ("random", random))
                  for r, s, o in zip(BEAT_RATES, shipped, others) if _points(s, 1) <= _points(o, 1)]
        outcomes[name] = _Outcome(", ".join(misses) or None)
    return "; ".join(cells), outcomes


def _paper_setting(bundles: Mapping[str, tuple[Evaluation, Evaluation]]) -> tuple[str, dict[str, _Outcome]]:
    cells, outcomes = [], {}
    for i, (name, (_, mixed)) in enumerate(bundles.items()):
        if mixed.rejection_gallery_ensemble is None:
            raise ResultError(f"{name}: the mixed evaluation has no 'rejection_gallery_ensemble' (the paper's setting)")
        rates = mixed.rejection_gallery_ensemble.rates
        if not rates or any("disagreement" not in s.scores for s in rates):
            raise ResultError(f"{name}: no rejection by disagreement on the gallery models' own ensemble")
        cuts = [s.scores["disagreement"].error_cut for s in rates]
        random = [s.random_error_cut for s in rates]
        at = [j for j, s in enumerate(rates) if abs(s.rate - CUT_RATE) < 1e-9]
        if not at:
            raise ResultError(f"{name}: the paper's setting has no rejection step at {100 * CUT_RATE:g}%")
        cells.append(f"`{name}` {_percentages(cuts, bold=at[0])} against {_randoms(random, first=i == 0)}")
        misses = []
        cut, target = _points(cuts[at[0]], 1), _points(PAPER_DISAGREEMENT_CUT, 1)
        if cut < target:
            misses.append(_short(target, cut, 1))
        misses += [f"not above random at {100 * s.rate:.0f}%" for s, c, r in zip(rates, cuts, random)
                   if _points(c, 1) <= _points(r, 1)]
        outcomes[name] = _Outcome(", ".join(misses) or None)
    return "; ".join(cells), outcomes


def _clean_random(bundles: Mapping[str, tuple[Evaluation, Evaluation]]) -> tuple[str, dict[str, _Outcome]]:
    cells, outcomes = [], {}
    for i, (name, (clean, _)) in enumerate(bundles.items()):
        rates = [s.rate for s in clean.rejection]
        shipped = [_at(_shipped(clean), r, name).error_cut for r in rates]
        random = [s.random_error_cut for s in clean.rejection]
        cells.append(f"`{name}` {_percentages(shipped)} against {_randoms(random, first=i == 0)}")
        pairs = [(r, _points(s, 1), _points(o, 1)) for r, s, o in zip(rates, shipped, random)]
        below = [f"{100 * r:.0f}%" for r, s, o in pairs if s < o]
        outcomes[name] = _Outcome(f"below random at {', '.join(below)}" if below else None,
                                  ties=any(s == o for _, s, o in pairs))
    return "; ".join(cells), outcomes


#: The targets in the table's order: what the target says, and (the bundles -> its figures and outcomes).
_TARGETS: tuple[tuple[str, Callable[[Mapping[str, tuple[Evaluation, Evaluation]]],
                                    tuple[str, dict[str, _Outcome]]]], ...] = (
    ("clean: served ≥ query model alone, R@1 and TAR@1e-3", _clean_served),
    (f"mixed: served beats query model alone by ≥ {MIXED_GAIN_POINTS:g} point R@1", _mixed_gain),
    (f"mixed: rejecting {100 * CUT_RATE:.0f}% by the shipped score cuts the error ≥ {100 * MIXED_CUT:.0f}%",
     _mixed_cut),
    (f"mixed: shipped score beats random and {SCORE_TITLES['detection']} at {_rate_label(BEAT_RATES)}", _mixed_beats),
    ((f"paper's setting, mixed: disagreement at {100 * CUT_RATE:.0f}% cuts ≥ {100 * PAPER_DISAGREEMENT_CUT:.1f}% "
      "and beats random at every rate"), _paper_setting),
    ("clean: shipped score at every rejection rate at least as good as random", _clean_random),
)


def _bundles(docs: Sequence[Mapping]) -> dict[str, tuple[Evaluation, Evaluation]]:
    """Bundle name -> (its clean evaluation, its mixed one), in the order the files name the bundles."""
    found: dict[str, dict[str, Evaluation]] = {}
    for doc in docs:
        e = one_evaluation(doc)
        side = "mixed" if e.degrade_spec else "clean"
        sides = found.setdefault(bundle_name(e), {})
        if side in sides:
            raise ResultError(f"{bundle_name(e)}: two {side} evaluations; the targets read one clean and one mixed")
        sides[side] = e
    if not found:
        raise ResultError("the targets table reads each bundle's clean and mixed evaluations, got none")
    for name, sides in found.items():
        if set(sides) != {"clean", "mixed"}:
            raise ResultError(f"{name}: the targets table reads a clean and a mixed evaluation, got only {set(sides)}")
    return {name: (sides["clean"], sides["mixed"]) for name, sides in found.items()}


def render_targets(docs: Sequence[Mapping]) -> str:
    """Per target of the mixed-quality work: the measured figures of each bundle (a clean and a
    mixed evaluation each, any order) and the verdict against the target's threshold.

    Example:
        >>> def ev(source, mixed, served, alone, cut):
        ...     row = lambda name, r1: {"name": name, "kind": "ensemble", "query": "q", "gallery": ["g"],
        ...                             "recall_at_1": r1, "tar_at_far_1e-3": r1}
        ...     step = lambda r: {"rate": r, "error_cut": cut, "error_cut_ci95": [cut - 0.2, cut + 0.2]}
        ...     rates = (0.05, 0.1, 0.2, 0.3)
        ...     return {"bundle": {"query": "q", "gallery": ["g"], "quality": "learned", "source": source},
        ...             "gallery_degrade": {"spec": "mix:0.6"} if mixed else None,
        ...             "rows": [row("CMCE ensemble", served), row("query model symmetric", alone)],
        ...             "rejection": [{"rate": r, "random_error_cut": 0.01} for r in rates],
        ...             "rejection_by_quality": {"learned": [step(r) for r in rates],
        ...                                      "detection": [{"rate": r, "error_cut": 0.05} for r in rates]},
        ...             "rejection_gallery_ensemble": {"recall_at_1": 0.8, "rates": [
        ...                 {"rate": r, "random_error_cut": 0.02, "disagreement_recall_at_1": 0.9,
        ...                  "disagreement_error_cut": 0.2} for r in rates]}}
        >>> docs = [ev("b/a", False, 0.99, 0.99, 0.2), ev("b/a", True, 0.96, 0.95, 0.35),
        ...         ev("b/b", False, 0.95, 0.92, 0.1), ev("b/b", True, 0.84, 0.831, 0.28)]
        >>> table = render_targets(docs).splitlines()
        >>> print(table[3])
        | mixed: served beats query model alone by ≥ 1 point R@1 | `a` +1.00 (96.00 vs 95.00); `b` +0.90 (84.00 vs 83.10) | met for `a`; `b` 0.10 short |
        >>> for line in table[2:]:
        ...     print(line.split(" | ")[-1].removesuffix(" |"))
        met (`a` ties)
        met for `a`; `b` 0.10 short
        met for `a`; `b` 2.0 short
        met
        met
        met
    """
    bundles = _bundles(docs)
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    for target, measure in _TARGETS:
        figures, outcomes = measure(bundles)
        lines.append(f"| {target} | {figures} | {_verdict(outcomes)} |")
    return "\n".join(lines) + "\n"


#: Renderer name -> (the JSON documents of the marker's files, in order -> the Markdown table).
TARGETS_TABLES: dict[str, Callable[[Sequence[Mapping]], str]] = {"targets": render_targets}
