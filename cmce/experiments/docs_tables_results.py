"""Tables of README.md, docs/results.md, docs/mixed-quality.md, docs/upgrades.md and docs/method.md,
rendered from the JSON they were measured into (``cmce.experiments.docs_tables`` registers them:
``RESULTS_TABLES`` joins its ``JSON_TABLES``).

Each renderer is pure: the JSON documents of a marker's files, in order -> the Markdown table
(ending in a newline). An evaluation's JSON (``evaluate --json``) is read through
``cmce.metrics.results.Evaluation``; a bundle's ``config.json`` through its ``info`` (what
``train`` and ``evaluate --record`` wrote there).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cmce.errors import CmceError
from cmce.metrics.intervals import format_interval, format_with_interval
from cmce.experiments.docs_tables_base import bundle_name, evaluations_in, one_doc, one_evaluation, row_named, whole_points
from cmce.metrics.results import Evaluation, ResultError

__all__ = [
    "RESULTS_TABLES",
    "render_ablations",
    "render_answer_summary",
    "render_app_answers",
    "render_lfw_verification",
    "render_score_differences",
    "render_bundle_summary",
    "render_cv_fusion",
    "render_cv_rejection",
    "render_degrade_sweep",
    "render_demo_examples",
    "render_gallery_kinds",
    "render_rejection_by_score",
    "render_upgrade_speed",
]

#: The gallery kinds of the answers tables, in the order the pages show them.
KIND_ORDER = ("clean", "mix:0.6", "crop", "tiny", "blur", "lowres", "jpeg", "dark", "noise", "occlusion")

#: A quality score's name as the tables write it (``combined`` was the shipped bundles' score before ``learned``).
SCORE_TITLES = {"detection": "detection doubt", "combined": "combined (shipped before)"}

#: The quality scores in the order the tables show them (any other after these).
SCORE_ORDER = ("learned", "combined", "disagreement", "detection", "random")


def _r1(value: float, ci, *, digits: int = 2, interval_digits: int = 1, bold: bool = False) -> str:
    """``99.55 (98.9 to 100.0)``, the figure in bold when ``bold``."""
    figure = f"{100 * value:.{digits}f}"
    return f"{f'**{figure}**' if bold else figure} {format_interval(*ci, digits=interval_digits)}".rstrip()


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def render_bundle_summary(docs: Sequence[Mapping]) -> str:
    """Per evaluation (a bundle on a clean or degraded gallery, in the files' order): Recall@1
    of the query model alone, the paper's plain mean and the served ensemble (95% intervals),
    the served TAR@FAR=1e-3, and the gallery models' own ensemble.

    Example:
        >>> def row(name, r1):
        ...     return {"name": name, "kind": "ensemble", "query": "q", "gallery": ["q"], "recall_at_1": r1,
        ...             "recall_at_5": r1, "map": r1, "tar_at_far_1e-3": r1 - 0.01, "recall_at_1_ci95": [r1 - 0.02, r1]}
        >>> names = ["query model symmetric", "CMCE ensemble, plain mean (the paper)", "CMCE ensemble",
        ...          "CMCE ensemble without query member"]
        >>> doc = {"bundle": {"query": "q", "gallery": ["g"], "source": "assets/bundles/b"},
        ...        "rows": [row(n, 0.9 + i / 100) for i, n in enumerate(names)]}
        >>> print(render_bundle_summary([doc]), end="")
        | bundle | gallery | query model alone | plain mean (the paper) | **served** | served TAR@1e-3 | gallery models' own |
        |---|---|---:|---:|---:|---:|---:|
        | `b` | clean | 90.00 (88.0 to 90.0) | 91.00 (89.0 to 91.0) | **92.00** (90.0 to 92.0) | 91.00 | 93.00 |
    """
    lines = ["| bundle | gallery | query model alone | plain mean (the paper) | **served** | served TAR@1e-3 "
             "| gallery models' own |", "|---|---|---:|---:|---:|---:|---:|"]
    for doc in docs:
        e = one_evaluation(doc)
        alone, mean = row_named(e.rows, "query model symmetric"), row_named(e.rows, "CMCE ensemble, plain mean (the paper)")
        served, own = row_named(e.rows, "CMCE ensemble"), row_named(e.rows, "CMCE ensemble without query member")
        lines.append(f"| `{bundle_name(e)}` | {'mixed' if e.degrade_spec else 'clean'} | "
                     f"{_r1(alone.recall_at_1, alone.recall_at_1_ci95)} | {_r1(mean.recall_at_1, mean.recall_at_1_ci95)} | "
                     f"{_r1(served.recall_at_1, served.recall_at_1_ci95, bold=True)} | "
                     f"{100 * served.tar_at_far_1e3:.2f} | {100 * own.recall_at_1:.2f} |")
    return "\n".join(lines) + "\n"


def render_gallery_kinds(docs: Sequence[Mapping]) -> str:
    """One bundle on several gallery kinds (one evaluation per file, ``--detection index``):
    how many degraded copies kept a face, Recall@1 of the query model alone (95% interval),
    of each gallery model through its transformer, of the served ensemble (95% interval) and
    of the paper's plain mean.

    Example:
        >>> def row(name, kind, r1):
        ...     return {"name": name, "kind": kind, "query": "q", "gallery": ["g"], "recall_at_1": r1,
        ...             "recall_at_5": r1, "map": r1, "tar_at_far_1e-3": r1, "recall_at_1_ci95": [r1 - 0.01, 1.0]}
        >>> doc = {"bundle": {"query": "q", "gallery": ["g"], "source": "b"},
        ...        "gallery_degrade": {"spec": "crop", "gallery_photos": 10, "degraded": 9},
        ...        "rows": [row("query model symmetric", "symmetric", 0.95), row("g -> q (transformer)", "asymmetric", 0.9),
        ...                 row("CMCE ensemble", "ensemble", 0.97),
        ...                 row("CMCE ensemble, plain mean (the paper)", "ensemble", 0.96)]}
        >>> print(render_gallery_kinds([doc]), end="")
        | gallery | copies with a face | q alone | g -> q | **served ensemble** | plain mean |
        |---|---:|---:|---:|---:|---:|
        | `crop` | 9 of 10 | 95.00 (94.00 to 100.00) | 90.00 | **97.00** (96.00 to 100.00) | 96.00 |
    """
    evaluations = [one_evaluation(d) for d in docs]
    if not evaluations:
        raise CmceError("this table reads at least one evaluation")
    q = evaluations[0].bundle.query if evaluations[0].bundle else "query model"
    members = [r.name.removesuffix(" (transformer)") for r in evaluations[0].rows
               if r.kind == "asymmetric" and r.name.endswith(" (transformer)")]
    lines = [f"| gallery | copies with a face | {q} alone | " + " | ".join(members)
             + " | **served ensemble** | plain mean |", "|---|" + "---:|" * (len(members) + 4)]
    for e in evaluations:
        rep = e.gallery_degrade
        kind = f"`{e.degrade_spec}`" if e.degrade_spec else "clean"
        copies = f"{rep['degraded']} of {rep['gallery_photos']}" if rep else "-"
        alone, served = row_named(e.rows, "query model symmetric"), row_named(e.rows, "CMCE ensemble")
        cells = [f"{100 * row_named(e.rows, f'{m} (transformer)').recall_at_1:.2f}" for m in members]
        lines.append(f"| {kind} | {copies} | {_r1(alone.recall_at_1, alone.recall_at_1_ci95, interval_digits=2)} | "
                     + " | ".join(cells)
                     + f" | {_r1(served.recall_at_1, served.recall_at_1_ci95, interval_digits=2, bold=True)} | "
                     f"{100 * row_named(e.rows, 'CMCE ensemble, plain mean (the paper)').recall_at_1:.2f} |")
    return "\n".join(lines) + "\n"


def _sweep_label(spec: str) -> str:
    """A sweep's gallery as the table writes it: ``blur:0.6`` -> ``blur`` (every single kind
    degrades the same share), ``mix:0.6`` and ``clean`` as they are."""
    return spec if spec == "clean" or spec.startswith("mix") else spec.split(":")[0]


def render_degrade_sweep(study: Mapping) -> str:
    """The table of ``scripts/degrade_sweep.py``'s JSON: per gallery kind, Recall@1 of the query
    model alone, of each gallery model through its transformer and of the served ensemble, and
    the error cut at 10% rejected by the learned score and the combined one.

    Example:
        >>> def row(name, kind, r1):
        ...     return {"name": name, "kind": kind, "query": "q", "gallery": ["g"], "recall_at_1": r1}
        >>> def steps(cut):
        ...     return [{"rate": 0.1, "recall_at_1": 0.9, "error_cut": cut}]
        >>> print(render_degrade_sweep({"results": {"blur:0.6": {
        ...     "rows": [row("query model symmetric", "symmetric", 0.95), row("g -> q (transformer)", "asymmetric", 0.8),
        ...              row("CMCE ensemble", "ensemble", 0.97)],
        ...     "rejection_by_quality": {"learned": steps(0.5), "combined": steps(-0.048)}}}}), end="")
        | gallery | q alone | g → q | **served** | error cut at 10% rejected: learned (shipped) · combined |
        |---|---:|---:|---:|---:|
        | blur | 95.00 | 80.00 | **97.00** | 50.0% · -4.8% |
    """
    results = study["results"]
    if not results:
        raise CmceError("the sweep holds no gallery kind")
    first = next(iter(results.values()))["rows"]
    q = row_named(first, "query model symmetric")["query"]
    members = [r["name"].removesuffix(" (transformer)") for r in first
               if r["kind"] == "asymmetric" and r["name"].endswith(" (transformer)")]
    lines = [f"| gallery | {q} alone | " + " | ".join(m.replace(" -> ", " → ") for m in members)
             + " | **served** | error cut at 10% rejected: learned (shipped) · combined |",
             "|---|" + "---:|" * (len(members) + 3)]
    for spec, res in results.items():
        rows = res["rows"]

        def cut(score: str) -> str:
            steps = [s for s in res["rejection_by_quality"][score] if abs(s["rate"] - 0.1) < 1e-9]
            return f"{100 * steps[0]['error_cut']:.1f}%" if steps else "—"

        cells = [f"{100 * row_named(rows, f'{m} (transformer)')['recall_at_1']:.2f}" for m in members]
        lines.append(f"| {_sweep_label(spec)} | {100 * row_named(rows, 'query model symmetric')['recall_at_1']:.2f} | "
                     + " | ".join(cells) + f" | **{100 * row_named(rows, 'CMCE ensemble')['recall_at_1']:.2f}** | "
                     f"{cut('learned')} · {cut('combined')} |")
    return "\n".join(lines) + "\n"


#: The quality scores of the rejection table, in its column order, with their titles.
REJECTION_COLUMNS = (("learned", "learned (shipped)"), ("combined", SCORE_TITLES["combined"]),
                     ("disagreement", "disagreement"), ("detection", SCORE_TITLES["detection"]))


def render_rejection_by_score(docs: Sequence[Mapping]) -> str:
    """Per evaluation (one bundle each) and rejection rate: the relative error cut of the
    served ensemble by each quality score (95% interval, whole points), and random's (mean of
    its draws). The shipped (learned) score is in bold.

    Example:
        >>> step = {"rate": 0.1, "recall_at_1": 0.9, "error_cut": 0.374, "error_cut_ci95": [0.03, 0.67]}
        >>> doc = {"bundle": {"query": "q", "gallery": ["g"], "source": "assets/bundles/b"}, "rows": [],
        ...        "rejection": [{"rate": 0.1, "recall_at_1": 0.9, "random_error_cut": -0.003}],
        ...        "rejection_by_quality": {k: [step] for k in ("learned", "combined", "disagreement", "detection")}}
        >>> print(render_rejection_by_score([doc]), end="")
        | bundle | rejected | learned (shipped) | combined (shipped before) | disagreement | detection doubt | random |
        |---|---:|---:|---:|---:|---:|---:|
        | `b` | 10% | **37.4%** (3 to 67) | 37.4% (3 to 67) | 37.4% (3 to 67) | 37.4% (3 to 67) | -0.3% |
    """
    lines = ["| bundle | rejected | " + " | ".join(t for _, t in REJECTION_COLUMNS) + " | random |",
             "|---|---:|" + "---:|" * (len(REJECTION_COLUMNS) + 1)]
    for doc in docs:
        e = one_evaluation(doc)
        for i, step in enumerate(e.rejection):
            cells = []
            for score, _ in REJECTION_COLUMNS:
                s = e.rejection_by_quality[score][i]
                figure = f"{100 * s.error_cut:.1f}%"
                cells.append(f"{f'**{figure}**' if score == 'learned' else figure} {whole_points(s.error_cut_ci95)}".rstrip())
            lines.append(f"| {f'`{bundle_name(e)}` ' if i == 0 else ''}| {100 * step.rate:.0f}% | "
                         + " | ".join(cells) + f" | {100 * step.random_error_cut:.1f}% |")
    return "\n".join(lines) + "\n"


def render_ablations(doc: Mapping) -> str:
    """The paper's ablations (``evaluate --ablations``' JSON): per group and variant, Recall@1
    on the clean and the mixed gallery (95% intervals); the method's row in bold.

    Example:
        >>> cell = {"recall_at_1": 0.9809, "recall_at_1_ci95": [0.967, 0.991]}
        >>> print(render_ablations({"ablations": {"rows": [{"group": "ensemble", "name": "x (the method)",
        ...                                                  "clean": cell, "mix:0.6": cell}]}}), end="")
        | group | variant | R@1, clean gallery | R@1, mixed gallery |
        |---|---|---:|---:|
        | ensemble | **x (the method)** | **98.09** (96.7 to 99.1) | **98.09** (96.7 to 99.1) |
    """
    lines = ["| group | variant | R@1, clean gallery | R@1, mixed gallery |", "|---|---|---:|---:|"]
    for r in doc["ablations"]["rows"]:
        method = "(the method)" in r["name"]
        mixed = next(v for k, v in r.items() if k.startswith("mix"))
        name = f"**{r['name']}**" if method else r["name"]
        lines.append(f"| {r['group']} | {name} | "
                     f"{_r1(r['clean']['recall_at_1'], r['clean']['recall_at_1_ci95'], bold=method)} | "
                     f"{_r1(mixed['recall_at_1'], mixed['recall_at_1_ci95'], bold=method)} |")
    return "\n".join(lines) + "\n"


def _cross_validation(config: Mapping) -> tuple[str, Mapping, str]:
    """A bundle config's name, its cross-validation record and the side of it the bundle took
    (``with`` or ``without`` the query model's own gallery member)."""
    try:
        cv = config["info"]["training"]["cross_validation"]
    except KeyError as e:
        raise CmceError("this table reads a bundle's config.json with info.training.cross_validation") from e
    return _bundle_from_config(config), cv, "with" if config.get("query_member") else "without"


#: The shipped bundles' names by (query model, gallery models): a config.json does not hold its folder's name.
SHIPPED_BUNDLES = {("sface", ("dlib-resnet34", "facenet-casia")): "sface-query",
                   ("facenet-casia", ("dlib-resnet34", "sface")): "facenet-query",
                   ("facenet-casia", ("dlib-resnet34",)): "facenet-dlib"}


def _bundle_from_config(config: Mapping) -> str:
    """A bundle's name as the docs write it (a shipped one's folder name), else ``query <model>``."""
    query = config["query_model"]["name"]
    gallery = tuple(sorted(m["name"] for m in config.get("gallery_models", ())))
    return SHIPPED_BUNDLES.get((query, gallery), f"query {query}")


def render_cv_fusion(configs: Sequence[Mapping]) -> str:
    """Cross-validated Recall@1 of each fusion on the clean and the mixed folds, per bundle
    (its ``config.json``); the fusion each bundle chose in bold, marked shipped.

    Example:
        >>> cv = {"queries": 10, "chosen_fusion": {"with": "weighted"},
        ...       "fusion_recall_at_1": {"with": {"mean": {"clean": 0.99, "mixed": 0.95},
        ...                                       "weighted": {"clean": 0.996, "mixed": 0.9645}}}}
        >>> config = {"query_model": {"name": "sface"}, "query_member": True,
        ...           "gallery_models": [{"name": "dlib-resnet34"}, {"name": "facenet-casia"}],
        ...           "info": {"training": {"cross_validation": cv}}}
        >>> print(render_cv_fusion([config]), end="")
        | fusion | `sface-query` clean / mixed |
        |---|---:|
        | mean (the paper) | 99.00 / 95.00 |
        | weighted | **99.60 / 96.45** (shipped) |
    """
    bundles = [_cross_validation(c) for c in configs]
    fusions = list(dict.fromkeys(f for _, cv, side in bundles for f in cv["fusion_recall_at_1"][side]))
    lines = ["| fusion | " + " | ".join(f"`{name}` clean / mixed" for name, _, _ in bundles) + " |",
             "|---|" + "---:|" * len(bundles)]
    for f in fusions:
        cells = []
        for _, cv, side in bundles:
            r = cv["fusion_recall_at_1"][side].get(f)
            if r is None:
                cells.append("—")
                continue
            text = f"{100 * r['clean']:.2f} / {100 * r['mixed']:.2f}"
            cells.append(f"**{text}** (shipped)" if cv["chosen_fusion"][side] == f else text)
        lines.append(f"| {'mean (the paper)' if f == 'mean' else f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_cv_rejection(configs: Sequence[Mapping]) -> str:
    """Cross-validated Recall@1 of the served ensemble on the mixed folds after rejecting each
    rate of the gallery by each quality score, per bundle (its ``config.json``).

    Example:
        >>> cv = {"rates": [0.05, 0.1], "mixed_rejection_recall_at_1": {"with": {
        ...     "learned": [0.9735, 0.9803], "random": [0.9645, 0.9648]}}}
        >>> config = {"query_model": {"name": "sface"}, "query_member": True,
        ...           "gallery_models": [{"name": "dlib-resnet34"}, {"name": "facenet-casia"}],
        ...           "info": {"training": {"cross_validation": cv, "chosen_quality": "learned"}}}
        >>> print(render_cv_rejection([config]), end="")
        | score | `sface-query` |
        |---|---|
        | learned (shipped) | 97.35 / 98.03 |
        | random | 96.45 / 96.48 |
    """
    bundles = [_cross_validation(c) for c in configs]
    shipped = {c["info"]["training"].get("chosen_quality") for c in configs}
    found = {s for _, cv, side in bundles for s in cv["mixed_rejection_recall_at_1"][side]}
    scores = [s for s in SCORE_ORDER if s in found] + sorted(found - set(SCORE_ORDER))
    lines = ["| score | " + " | ".join(f"`{name}`" for name, _, _ in bundles) + " |", "|---|" + "---|" * len(bundles)]
    for s in scores:
        title = SCORE_TITLES.get(s, s)
        if shipped == {s}:
            title += " (shipped by both)" if len(configs) == 2 else " (shipped)"
        cells = [" / ".join(f"{100 * x:.2f}" for x in cv["mixed_rejection_recall_at_1"][side].get(s, []))
                 or "—" for _, cv, side in bundles]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_answer_summary(docs: Sequence[Mapping]) -> str:
    """Per bundle and gallery kind (``scripts/eval_gallery_kinds.py``'s evaluations, one per
    file): the ensemble's answers (right / wrong / unknown) under the raw threshold, with
    rejected faces removed and by default; the default's share of "Unknown" (and whether the
    coverage guard lowered its threshold); the default's accuracy of answered queries against
    top-1 similarity at its coverage; strangers named by the raw threshold and by default.

    Example:
        >>> rules = {"answer_all": {"right": 8, "wrong": 1, "unknown": 1, "queries": 10, "answered_accuracy": 0.889},
        ...          "removed": {"right": 7, "wrong": 0, "unknown": 3, "queries": 10, "answered_accuracy": 1.0}}
        >>> doc = {"bundle": {"query": "q", "gallery": ["g"], "source": "assets/bundles/b"}, "rows": [],
        ...        "answers": {"rules": rules, "gallery": {"unknown_threshold_lowered": True},
        ...                    "strangers": {"raw_threshold": {"share": 0.5}, "default": {"share": 0.1}}}}
        >>> print(render_answer_summary([doc]).splitlines()[-1])
        | `b` | clean | 8 / 1 / 1 | 7 / 0 / 3 | **8 / 1 / 1** | 10.0% (guard) | 88.9 / 88.9 | 50.0% / **10.0%** |
    """
    by_bundle: dict[str, dict[str, Evaluation]] = defaultdict(dict)
    for doc in docs:
        for e in evaluations_in(doc):
            if e.answers is None:
                raise ResultError("this table reads evaluations with answers (evaluate's 'answers' section)")
            by_bundle[bundle_name(e)][e.degrade_spec or "clean"] = e
    out = ["| bundle | gallery | raw threshold, nothing rejected | rejected removed | **default** | "
           "unknown, default | accuracy of answered: default / top-1 similarity at its coverage | "
           "strangers named: raw threshold / default |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]

    def rwu(x: Mapping) -> str:
        return f"{x['right']} / {x['wrong']} / {x['unknown']}"

    def strangers(answers: Mapping) -> str:
        st = answers.get("strangers")
        if not st:
            return "–"
        raw = st["raw_threshold"]
        return f"{_pct(raw['share'])}% / **{_pct(st.get('default', raw)['share'])}%**"

    for name, kinds in sorted(by_bundle.items()):
        for kind in [k for k in KIND_ORDER if k in kinds] + sorted(set(kinds) - set(KIND_ORDER)):
            answers = kinds[kind].answers
            r = answers["rules"]
            pol = r.get("policy", r["answer_all"])
            sim = r.get("similarity_at_policy_coverage", r["answer_all"])
            guard = " (guard)" if answers.get("gallery", {}).get("unknown_threshold_lowered") else ""
            out.append(f"| `{name}` | {kind} | {rwu(r.get('answer_all_raw_threshold', r['answer_all']))} | "
                       f"{rwu(r['removed'])} | **{rwu(pol)}** | {_pct(pol['unknown'] / pol['queries'])}%{guard} | "
                       f"{_pct(pol['answered_accuracy'])} / {_pct(sim['answered_accuracy'])} | {strangers(answers)} |")
    return "\n".join(out) + "\n"


def _about(x: float) -> str:
    """A ratio to two significant figures, with thousands separators: ``1908.4`` -> ``1,900``."""
    return f"{float(f'{x:.2g}'):,.0f}"


def render_upgrade_speed(bench: Mapping) -> str:
    """The upgrade table of ``cmce bench --only upgrade --json``: per precision, the whole
    upgrade's seconds, the projection's seconds and entries per second, and how much faster
    than re-embedding every entry at the measured indexing speed.

    Example:
        >>> print(render_upgrade_speed({"indexing": {"faces_per_s": 20.9}, "upgrade": {"entries": 1000000,
        ...     "precision": {"float32": {"seconds": 25.08, "projection_seconds": 19.14,
        ...                               "projection_entries_per_s": 52233.2}}}}), end="")
        | precision | whole upgrade (read 2.5 GB of shards, transformers, fusion, scores, index, write) | projection alone (transformers + fusion + scores) | vs re-embedding at the measured 20.9 faces/s (13.3 h) |
        |---|---:|---:|---:|
        | float32 (default) | 25.1 s | 19.1 s = 52,200 entries/s | 1,900x faster |
    """
    up = bench["upgrade"]
    faces_per_s = bench["indexing"]["faces_per_s"]
    reembed_s = up["entries"] / faces_per_s
    lines = ["| precision | whole upgrade (read 2.5 GB of shards, transformers, fusion, scores, index, write) | "
             "projection alone (transformers + fusion + scores) | "
             f"vs re-embedding at the measured {faces_per_s:.1f} faces/s ({reembed_s / 3600:.1f} h) |",
             "|---|---:|---:|---:|"]
    titles = {"float32": "float32 (default)", "int8": "int8 (`--precision int8`)"}
    for precision, r in up["precision"].items():
        lines.append(f"| {titles.get(precision, precision)} | {r['seconds']:.1f} s | {r['projection_seconds']:.1f} s = "
                     f"{round(r['projection_entries_per_s'], -2):,.0f} entries/s | {_about(reembed_s / r['seconds'])}x faster |")
    return "\n".join(lines) + "\n"


#: Renderer name -> (the JSON documents of the marker's files, in order -> the Markdown table).
def render_app_answers(docs: Sequence[Mapping]) -> str:
    """The answers as the app gives them (``scripts/app_path_answers.py --json``, one file per
    bundle and gallery): right / wrong / "Unknown" of the queries under the default, ``strict``
    (no coverage guard) and the raw similarity threshold without the answer rule. "(guard)"
    marks a gallery where the coverage guard spoke.

    Example:
        >>> c = {"right": 880, "wrong": 1, "unknown": 8, "no face in query": 0}
        >>> doc = {"bundle": "sface-query", "gallery_degrade": None, "guard_note": None,
        ...        "counts": {"default": c, "strict": c, "raw threshold, no rule": c}}
        >>> print(render_app_answers([doc]), end="")
        | bundle | gallery | default | strict | raw threshold, no rule |
        |---|---|---:|---:|---:|
        | `sface-query` | clean | 880 / 1 / 8 | 880 / 1 / 8 | 880 / 1 / 8 |
    """
    columns = ("default", "strict", "raw threshold, no rule")
    lines = [f"| bundle | gallery | {' | '.join(columns)} |", "|---|---|" + "---:|" * len(columns)]
    for doc in docs:
        kind = doc.get("gallery_degrade")
        gallery = (f"`{kind}`" if kind else "clean") + (" (guard)" if doc.get("guard_note") else "")
        cells = []
        for name in columns:
            c = doc["counts"][name]
            missed = f", no face {c['no face in query']}" if c.get("no face in query") else ""
            cells.append(f"{c['right']} / {c['wrong']} / {c['unknown']}{missed}")
        lines.append(f"| `{doc['bundle']}` | {gallery} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def render_score_differences(docs: Sequence[Mapping]) -> str:
    """The paired comparison of quality scores (``evaluate --compare-scores --json``, one file per
    bundle): the shipped score's error cut minus each other score's, in points, per rejection rate,
    with the 95% interval of the difference (both scores resampled over the same identities).

    Example:
        >>> cmp = {"score": "learned", "recall_at_1": 0.9, "errors": 10, "queries": 100,
        ...        "rates": [{"rate": 0.1, "error_cut": [0.3, 0.1, 0.5],
        ...                   "minus": {"detection": [0.106, -0.07, 0.36]}}]}
        >>> doc = {"bundle": {"query": "q", "gallery": ["g"], "source": "assets/bundles/b"}, "rows": [],
        ...        "score_comparison": cmp}
        >>> print(render_score_differences([doc]), end="")
        | bundle | rejected | minus detection doubt |
        |---|---:|---:|
        | `b` | 10% | +10.6 (-7 to +36) |
    """
    from cmce.experiments.score_comparison import ScoreComparison

    comparisons = []
    for doc in docs:
        e = one_evaluation(doc)
        if e.score_comparison is None:
            raise ResultError(f"{bundle_name(e)}: no 'score_comparison' (evaluate --compare-scores)")
        comparisons.append((bundle_name(e), ScoreComparison.from_dict(e.score_comparison)))
    others = list(dict.fromkeys(k for _, c in comparisons for k in c.others))
    lines = ["| bundle | rejected | " + " | ".join(f"minus {SCORE_TITLES.get(k, k).split(' (')[0]}" for k in others)
             + " |", "|---|---:|" + "---:|" * len(others)]
    for name, c in comparisons:
        for i, step in enumerate(c.steps):
            cells = [format_with_interval(step.minus[k][0], step.minus[k][1:], digits=1, interval_digits=0,
                                          signed=True).replace("(-0 ", "(0 ").replace("(+0 ", "(0 ")
                     if k in step.minus else "—" for k in others]  # a bound that rounds to 0 is 0
            lines.append(f"|{f' `{name}` ' if i == 0 else ' '}| {100 * step.rate:.0f}% | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


#: The published LFW accuracy of each backbone (its authors' figure, not measured here).
PUBLISHED_LFW = {"sface": "~99.4%", "dlib-resnet34": "99.38%", "facenet-casia": "~99.0%"}


def render_lfw_verification(docs: Sequence[Mapping]) -> str:
    """Each backbone's LFW 1:1 verification accuracy (``scripts/lfw_verification.py --json``),
    beside its published figure.

    Example:
        >>> doc = {"pairs": 600, "pairs_file": "pairsDevTrain.txt",
        ...        "backbones": {"sface": {"accuracy": 0.99667, "threshold": 0.3}}}
        >>> print(render_lfw_verification([doc]), end="")
        | backbone | LFW verification accuracy, 600 pairs of pairsDevTrain | published LFW |
        |---|---:|---:|
        | `sface` | 99.67% | ~99.4% |
    """
    doc = one_doc(docs)
    lines = [f"| backbone | LFW verification accuracy, {doc['pairs']} pairs of "
             f"{Path(doc['pairs_file']).stem} | published LFW |", "|---|---:|---:|"]
    for name, b in doc["backbones"].items():
        lines.append(f"| `{name}` | {100 * b['accuracy']:.2f}% | {PUBLISHED_LFW.get(name, '—')} |")
    return "\n".join(lines) + "\n"


#: ``check_examples.py --json``'s marks -> the table's (null: the query has no label to judge by).
_EXAMPLE_MARKS = {"right": "✓", "wrong": "✗", "unknown": "?", None: "·"}


def render_demo_examples(docs: Sequence[Mapping]) -> str:
    """The demo's examples (``tests/harness/check_examples.py --json``, then the examples manifest
    ``assets/examples/examples.json``): one row per example the manifest lists for a bundle, in its
    order, with each column's mark (✓ right, ✗ wrong, ? unknown), top similarity and threshold. The
    gallery is named as the app's example buttons name it (the manifest's name before " (").

    Example:
        >>> def col(mark, sim, thr):
        ...     return {"mark": mark, "similarity": sim, "threshold": thr}
        >>> check = {"bundles": {"b": {"query_model": "q", "galleries": {"archive": {"queries": {"G_05.jpg": {
        ...     "columns": {"ensemble": col("right", 0.8012, 0.6205), "s": col("wrong", 0.5701, 0.5649),
        ...                 "d": col("unknown", 0.6371, 0.664), "query": col("right", 0.9123, 0.6001)}}}}}}}}
        >>> manifest = {"galleries": [{"name": "Mixed-quality archive (9 photos)", "folder": "archive"}],
        ...             "bundles": {"b": [{"gallery": "Mixed-quality archive (9 photos)", "query": "queries/G_05.jpg"}]}}
        >>> print(render_demo_examples([check, manifest]), end="")
        | bundle | gallery | query | CMCE ensemble | gallery model → query model | query model alone |
        |---|---|---|---|---|---|
        | `b` | Mixed-quality archive | `G_05` | ✓ 0.80 / 0.62 | s ✗ 0.57 / 0.56, d ? 0.64 / 0.66 | ✓ 0.91 / 0.60 |
    """
    if len(docs) != 2:
        raise CmceError(f"the examples table reads check_examples.py's JSON and examples.json, not {len(docs)} files")
    check, manifest = docs
    folders = {g["name"]: g["folder"] for g in manifest["galleries"]}

    def cell(c: Mapping) -> str:
        sim = "-" if c["similarity"] is None else f"{c['similarity']:.2f}"
        return f"{_EXAMPLE_MARKS[c['mark']]} {sim} / {c['threshold']:.2f}"

    lines = ["| bundle | gallery | query | CMCE ensemble | gallery model → query model | query model alone |",
             "|---|---|---|---|---|---|"]
    for bundle, examples in manifest.get("bundles", {}).items():
        for ex in examples:
            query = Path(ex["query"]).name
            try:
                answer = check["bundles"][bundle]["galleries"][folders[ex["gallery"]]]["queries"][query]
            except KeyError as e:
                raise CmceError(f"check_examples.py's JSON has no answer for {bundle} / {ex['gallery']} / {query} "
                                f"(missing {e}): run python tests/harness/check_examples.py --json ...") from e
            row = f"| `{bundle}` | {ex['gallery'].split(' (')[0]} | `{Path(query).stem}` | "
            if "error" in answer:
                lines.append(row + f"{answer['error']} | – | – |")
                continue
            cols = answer["columns"]
            members = ", ".join(f"{view} {cell(c)}" for view, c in cols.items() if view not in ("ensemble", "query"))
            lines.append(row + f"{cell(cols['ensemble'])} | {members} | {cell(cols['query'])} |")
    return "\n".join(lines) + "\n"


RESULTS_TABLES: dict[str, Callable[[Sequence[Mapping]], str]] = {
    "bundle-summary": render_bundle_summary,
    "gallery-kinds": render_gallery_kinds,
    "degrade-sweep": lambda docs: render_degrade_sweep(one_doc(docs)),
    "rejection-by-score": render_rejection_by_score,
    "ablations": lambda docs: render_ablations(one_doc(docs)),
    "cv-fusion": render_cv_fusion,
    "cv-rejection": render_cv_rejection,
    "answer-summary": render_answer_summary,
    "upgrade-speed": lambda docs: render_upgrade_speed(one_doc(docs)),
    "app-answers": render_app_answers,
    "score-differences": render_score_differences,
    "lfw-verification": render_lfw_verification,
    "demo-examples": render_demo_examples,
}
