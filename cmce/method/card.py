"""The model card (README.md) written into every bundle."""

from __future__ import annotations

from collections.abc import Sequence

from cmce.method.ensemble import FUSION_DESCRIPTIONS
from cmce.metrics.intervals import format_interval, format_with_interval
from cmce.metrics.results import Evaluation, EvaluationRow, QualityStep, UpgradeResult
from cmce.models.backbones import PRETRAINED

__all__ = ["render_model_card", "render_rejection_tables", "render_table", "render_upgrade_table"]


def render_table(rows: Sequence[EvaluationRow]) -> str:
    """Markdown table of the paper's rows (``Evaluation.rows``), each figure with its 95% interval."""
    if not rows:
        return "_not evaluated_\n"
    out = [
        "| row | kind | query | gallery | R@1 | R@5 | mAP | TAR@FAR=1e-3 |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r.name} | {r.kind} | {r.query} | {' + '.join(r.gallery)} | "
            f"{format_with_interval(r.recall_at_1, r.recall_at_1_ci95)} | {100 * r.recall_at_5:.2f} | "
            f"{100 * r.map:.2f} | {format_with_interval(r.tar_at_far_1e3, r.tar_at_far_1e3_ci95)} |"
        )
    return "\n".join(out) + "\n"


def _quality_cell(step: QualityStep) -> str:
    """``R@1 (interval) · error cut% (interval)``; ``—`` for an error cut where there is no error to cut."""
    return (f"{format_with_interval(step.recall_at_1, step.recall_at_1_ci95)} · "
            f"{format_with_interval(step.error_cut, step.error_cut_ci95, unit='%')}")


def render_rejection_tables(evaluation: Evaluation, shipped: str | None = None) -> str:
    """Markdown: Recall@1 and error cut after rejection by every quality score, with 95% intervals.

    One table for the ensemble the bundle serves, one for the gallery models' own
    ensemble (the paper's setting). An error cut is ``—`` where there is no error to cut.

    Args:
        evaluation: the evaluation.
        shipped: the bundle's quality score (default the one the evaluation records).
    """
    shipped = shipped or (evaluation.bundle.quality if evaluation.bundle else None)
    by_q = evaluation.rejection_by_quality
    kinds = [k for k in by_q if k != "bundle"]
    head = "| rejected | " + " | ".join(f"{k}{' (shipped)' if k == shipped else ''}: R@1 · error cut" for k in kinds)
    out = ["**CMCE ensemble as served**", "", head + " | random: R@1 · error cut |",
           "|---:|" + "---:|" * (len(kinds) + 1)]
    for i, r in enumerate(evaluation.rejection):
        rand = f"{100 * r.random_recall_at_1:.2f} · {format_with_interval(r.random_error_cut, unit='%')}"
        out.append(f"| {100 * r.rate:.0f}% | " + " | ".join(_quality_cell(by_q[k][i]) for k in kinds) + f" | {rand} |")
    go = evaluation.rejection_gallery_ensemble
    if go:
        gk = [k for k in kinds if k in go.rates[0].scores]
        out += ["", f"**Gallery models' own ensemble (the paper's setting)**: R@1 "
                    f"{format_with_interval(go.recall_at_1, go.recall_at_1_ci95)} with nothing rejected", "",
                "| rejected | " + " | ".join(f"{k}: R@1 · error cut" for k in gk) + " | random: R@1 · error cut |",
                "|---:|" + "---:|" * (len(gk) + 1)]
        for r in go.rates:
            rand = f"{100 * r.random_recall_at_1:.2f} · {format_with_interval(r.random_error_cut, unit='%')}"
            out.append(f"| {100 * r.rate:.0f}% | " + " | ".join(_quality_cell(r.scores[k]) for k in gk) + f" | {rand} |")
    return "\n".join(out) + "\n"


def render_upgrade_table(upgrade: UpgradeResult) -> str:
    """Markdown table of an upgrade experiment's stages (``evaluate --upgrade-from``)."""
    out = [
        "| stage | query | members | R@1 (95% CI) | TAR@FAR=1e-2 | TAR@FAR=1e-3 | s per 1k entries | photos read |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in upgrade.rows:
        cost = r.seconds_per_1k_entries
        out.append(
            f"| {r.stage} | {r.query} | {' + '.join(r.members)} | {format_with_interval(r.recall_at_1, r.recall_at_1_ci95)} "
            f"| {100 * r.tar_at_far_1e2:.2f} | {100 * r.tar_at_far_1e3:.2f} | "
            f"{'' if cost is None else f'{cost:.3g}'} | {r.photos_read} |"
        )
    return "\n".join(out) + "\n"


def render_model_card(config: dict) -> str:
    """Model card for a bundle's ``config.json`` content."""
    q = config["query_model"]["name"]
    gallery = [g["name"] for g in config["gallery_models"]]
    info = config.get("info", {})
    lines = _intro_lines(q, gallery, info) + _backbone_lines(q, gallery)
    train = info.get("training", {})
    evaluation = Evaluation.from_dict(info.get("evaluation", {}), where="evaluation")
    lines += [*_training_lines(train), *_calibration_lines(config, train), "",
              "## Evaluation (identities never used in training)", "", render_table(evaluation.rows)]
    shipped = config["calibration"]["quality"]["kind"]
    lines += _rejection_lines(evaluation, shipped)
    if info.get("evaluation_mixed"):
        lines += _mixed_evaluation_lines(Evaluation.from_dict(info["evaluation_mixed"], where="evaluation_mixed"),
                                         shipped)
    lines += _upgrades(config)
    lines.append("")
    return "\n".join(lines)


def _intro_lines(q: str, gallery: list[str], info: dict) -> list[str]:
    """Card lines: the Hub metadata, the title, what the bundle is and what it is for."""
    return [
        "---",
        "library_name: cmce",
        "license: other",
        "tags: [face-recognition, image-retrieval, asymmetric-retrieval, cmce]",
        "---",
        "",
        f"# CMCE bundle: query `{q}`, gallery {', '.join(f'`{g}`' for g in gallery)}",
        "",
        "Embedding transformation networks of *Asymmetric Image Retrieval with Cross Model "
        "Compatible Ensembles* (Shoshan, Linial et al., WACV 2024): each gallery model's "
        f"embedding is mapped into the space of the query model `{q}`; a gallery image is "
        "stored as the mean of its transformed embeddings, and its uncertainty is how much "
        "they disagree. Load with `cmce.load_bundle(...)`.",
        "",
        *([f"**Use it for:** {info['purpose']}", ""] if info.get("purpose") else []),
    ]


def _backbone_lines(q: str, gallery: list[str]) -> list[str]:
    """Card lines: the backbones' table (package, role, licence, training data)."""
    lines = [
        "## Backbones (weights come from the packages below, verified by sha256)",
        "",
        "| model | role here | licence | trained on |",
        "|---|---|---|---|",
    ]
    for name, role in [(q, "query")] + [(g, "gallery") for g in gallery]:
        s = PRETRAINED[name]
        lines.append(f"| `{name}` ({s.package or 'download'}) | {role} | {s.license} | {s.training_data} |")
    return lines


def _training_lines(train: dict) -> list[str]:
    """Card lines: the transformers' licence and their training data."""
    return [
        "",
        "The transformers in this bundle (a few MB of safetensors) are released under the "
        "project's licence; using the backbones is subject to their own licences above.",
        "",
        "## Training data",
        "",
        train.get(
            "data_description",
            "Not recorded.",
        ),
        "",
        f"Images: {train.get('images', '?')}, identities: {train.get('identities', '?')}; "
        f"identity loss: {train.get('identity_loss', '?')}; seed {train.get('seed', '?')}. "
        "No training image is included in this repository.",
    ]


def _calibration_lines(config: dict, train: dict) -> list[str]:
    """Card lines: doubtful faces, the answer rule, "Unknown", the ensemble's members and fusion."""
    calibration = config["calibration"]
    return [
        "",
        "## Calibration",
        "",
        f"- doubtful gallery faces (marked, still searched; rejected only when asked): quality score "
        f"`{calibration['quality']['kind']}` above {calibration['rejection_threshold']:.4g}, "
        f"{100 * calibration['rejection_rate']:.0f}% of the calibration gallery",
        *_answer_lines(calibration, train),
        *_unknown_lines(calibration, train),
        f"- query model's own gallery embedding is an ensemble member: {config.get('query_member', False)}",
        f"- fusion: `{config.get('fusion', {}).get('kind', 'mean')}` "
        f"({FUSION_DESCRIPTIONS[config.get('fusion', {}).get('kind', 'mean')]})",
        *_quality_choice(train, bool(config.get("query_member", False))),
        *_predictor_lines(calibration["quality"]),
    ]


def _rejection_lines(evaluation: Evaluation, shipped: str) -> list[str]:
    """Card lines: rejection by quality with intervals, or the older table where the evaluation has none."""
    if (evaluation.rejection_by_quality.get("disagreement") or [QualityStep()])[0].error_cut_ci95:
        return ["Rejection (95% intervals from a bootstrap over query identities):", "",
                render_rejection_tables(evaluation, shipped)]
    if not evaluation.rejection:
        return []
    lines = [
        "| rejected | R@1 (quality) | R@1 (random) | R@1 (lowest detection prob.) |",
        "|---:|---:|---:|---:|",
    ]
    for r in evaluation.rejection:
        lines.append(
            f"| {100 * r.rate:.0f}% | {100 * r.recall_at_1:.2f} | {100 * r.random_recall_at_1:.2f} | "
            f"{100 * r.detection_recall_at_1:.2f} |"
        )
    return lines


def _mixed_evaluation_lines(mixed: Evaluation, shipped: str) -> list[str]:
    """Card lines: the evaluation on a mixed-quality gallery (``info.evaluation_mixed``)."""
    d = mixed.gallery_degrade or {}
    return [
        "",
        "## Evaluation on a mixed-quality gallery (identities never used in training)",
        "",
        f"The same held-out identities, with `{d.get('spec', '?')}` (seed {d.get('seed', '?')}): "
        f"{d.get('degraded', '?')} of {d.get('gallery_photos', '?')} gallery photos degraded "
        f"({', '.join(f'{k} {v}' for k, v in d.get('by_kind', {}).items())}); queries unchanged. "
        "`python -m cmce evaluate DATA --heldout --gallery-degrade mix:0.6`.",
        "",
        render_table(mixed.rows),
        render_rejection_tables(mixed, shipped),
    ]


def _unknown_lines(calibration: dict, train: dict) -> list[str]:
    """When the bundle answers "Unknown": the normalised threshold (where calibrated) and the raw one."""
    raw = (f"similarity thresholds at FAR={calibration['open_set_far']:g}: "
           + ", ".join(f"{k} {v:.3f}" for k, v in calibration["similarity_thresholds"].items()))
    norm = calibration.get("cohort_norm")
    if not norm:
        return [f"- open set: {raw}"]
    named = train.get("answers", {}).get("strangers_named", {}).get("ensemble", {})
    by_kind = "; ".join(f"{k} {100 * v['default']:.1f}% (raw threshold {100 * v['raw_threshold']:.1f}%)"
                        for k, v in named.items())
    return [f"- open set: \"Unknown\" when the best match stands out from the query's scores against the next "
            f"{norm['cohort']} people of the gallery by less than "
            + ", ".join(f"{k} {v:.2f}" for k, v in norm["thresholds"].items())
            + f" spreads (adaptive Z-norm), set to name {100 * norm['strangers_named']:.1f}% of strangers on the "
            f"clean cross-validation galleries" + (f"; strangers named out of fold: {by_kind}" if by_kind else "")
            + (f"; per gallery size (entries {', '.join(str(n) for n in norm['sizes'])}; interpolated in log size), "
               f"ensemble " + ", ".join(f"{t:.2f}" for t in norm["by_size"].get("ensemble", ())) if norm.get("sizes")
               else ""),
            *_guard_lines(norm),
            f"- galleries with fewer than {norm['cohort']} other people: {raw}"]


def _guard_lines(norm: dict) -> list[str]:
    """The coverage guard of the normalised threshold, in one line (none for bundles without it)."""
    doubt, caps = norm.get("guard_doubt"), norm.get("guard", {}).get("ensemble")
    if not doubt or not caps:
        return []
    share = norm.get("guard_share", {})
    steps = [(d, c) for i, (d, c) in enumerate(zip(doubt, caps)) if i == 0 or c != caps[i - 1]]  # where it changes
    points = ", ".join(f"{d:.3f} -> {c:.2f}" for d, c in steps)
    return [f"- coverage guard: on a gallery of poorer photos the ensemble's normalised threshold is at most "
            f"(mean quality score -> threshold) {points}, so that the threshold alone said \"Unknown\" to at most "
            f"{100 * share.get('clean', 0):.0f}% of a clean and {100 * share.get('any', 0):.0f}% of any other "
            f"calibration gallery's queries; there it names more strangers (out of fold, above)"]


def _answer_lines(calibration: dict, train: dict) -> list[str]:
    """The answer rule in one line, with the cross-validated comparison that chose it."""
    rule = calibration.get("answer_rule")
    if not rule:
        return ["- answer rule: none (calibrated before answer rules existed): every match over the threshold is named"]
    ans = train.get("answers", {})
    decisions = "; ".join(
        f"`{d['to']}` vs `{d['from']}` {100 * d['accuracy_gain']:+.2f} points "
        f"{format_interval(*d['ci95'], signed=True)}" for d in ans.get("decisions", []))
    ens = calibration.get("answer_policies", {}).get("ensemble", {}).get(rule, {})
    override = train.get("answer_rule_from", {}).get("override")
    chosen = (f"cross-validation on {', '.join(ans.get('queries', {}))} galleries chose "
              f"`{override['chosen_by_cross_validation']}`" if override else
              f"chosen by cross-validation on {', '.join(ans.get('queries', {}))} galleries")
    return [f"- answer rule `{rule}`: \"Unknown\" where the predicted chance of a right answer is below "
            f"{ens.get('threshold', ans.get('abstain_below', 0.5)):.3g} (ensemble column); {chosen}, a richer rule "
            f"only where it answers more accurately at 10% abstention on mixed galleries by more than its interval"
            + (f" ({decisions})" if decisions else "")
            + (f"; served instead: `{rule}`, because {override['because']}" if override else "")]


def _upgrades(config: dict) -> list[str]:
    """Card lines: which galleries this bundle serves, and the measured upgrades into it."""
    q = config["query_model"]["name"]
    members = [g["name"] for g in config["gallery_models"]] + ([f"{q} (own)"] if config.get("query_member") else [])
    lines = [
        "",
        "## Upgrading galleries to this bundle",
        "",
        "A gallery keeps every backbone's raw embedding, keyed by weights checksum. This bundle "
        f"serves any gallery holding at least one of its members ({', '.join(f'`{m}`' for m in members)}) "
        "with these weights: `python -m cmce upgrade GALLERY --bundle THIS` re-projects it without "
        "reading a photo; `--backfill` then embeds the members entries lack, where the photo is still there.",
    ]
    sources = config.get("info", {}).get("upgrade_from", [])
    if sources:
        lines += ["", "Galleries built by these shipped bundles can be upgraded to this one:", ""]
        lines += [f"- `{s['bundle']}` (query `{s['query']}`): shares {', '.join(f'`{q} (own)`' if m == 'query' else f'`{m}`' for m in s['shared'])}"
                  + ("" if s.get("complete") else "; entries lack the other members until a backfill")
                  for s in sources]
    for recorded in config.get("info", {}).get("upgrades", []):
        up = UpgradeResult.from_dict(recorded, where="upgrades")
        src = up.old
        lines += [
            "",
            f"From `{src.source or src.query}` (query `{src.query}`, gallery "
            f"{' + '.join(src.gallery)}), on {up.counts['queries']} queries of identities never "
            f"used in training ({up.counts['gallery']} gallery entries):",
            "",
            render_upgrade_table(up),
        ]
    return lines


def _predictor_lines(quality: dict) -> list[str]:
    """Card lines: what the learned quality score weighs, when the bundle carries one."""
    pred = quality.get("predictor")
    if not pred:
        return []
    names, members = [], pred["members"]
    for group in pred["groups"]:
        if group == "pairs":
            names += [f"agreement {a}·{b}" for i, a in enumerate(members) for b in members[i + 1:]]
        elif group == "typicality":
            names += [f"typicality of {m}" for m in members]
        else:
            names.append({"disagreement": "disagreement", "doubt": "detector doubt"}[group])
    weights = ", ".join(f"{n} {c:+.2f}" for n, c in zip(names, pred["coef"]))
    return ["", "The `learned` score is a logistic regression fitted on the cross-validation folds' out-of-fold "
                "gallery entries, clean and degraded: it predicts the share of an entry's queries that miss at "
                "rank 1. Its weights on the standardised inputs (positive = more likely to miss): "
                f"{weights}. Typicality is a member's cosine to the centre of all its training vectors; "
                "unrecognisable faces crowd towards it."]


def _quality_choice(train: dict, query_member: bool) -> list[str]:
    """Card lines: how the quality scores did in cross-validation on the served ensemble."""
    cv = train.get("cross_validation", {})
    side = "with" if query_member else "without"
    mixed = cv.get("mixed_rejection_recall_at_1", {}).get(side)
    curves = mixed or cv.get("rejection_recall_at_1", {}).get(side)
    if not isinstance(curves, dict) or "random" not in curves:
        return []
    rates = ", ".join(f"{100 * r:.0f}" for r in cv.get("rates", []))
    where = ("mixed-quality validation galleries (a share of each fold's gallery photos degraded: "
             + str(train.get("mixed_quality_validation", {}).get("degraded", "?")) + " copies in all)"
             if mixed else "the ensemble this bundle serves")
    lines = [
        "",
        f"The quality score was chosen by {cv.get('folds', '?')}-fold identity cross-validation "
        f"({cv.get('queries', '?')} queries) on {where}: "
        f"Recall@1 after rejecting {rates}% of the gallery,",
        "",
        "| quality score | " + " | ".join(f"{100 * r:.0f}%" for r in cv.get("rates", [])) + " |",
        "|---|" + "---:|" * len(cv.get("rates", [])),
    ]
    for kind, values in curves.items():
        lines.append(f"| {kind} | " + " | ".join(f"{100 * v:.2f}" for v in values) + " |")
    chosen = train.get("chosen_quality")
    if chosen:
        lines += ["", f"Shipped: `{chosen}`, the best mean Recall@1 over these rates"
                      + (" on galleries of mixed photo quality, the ones people have (on clean LFW folds every "
                         "score's errors are too few to rank)." if mixed else ".")]
    fus = cv.get("fusion_recall_at_1", {}).get(side)
    if fus:
        conds = cv.get("conditions", ["clean"])
        lines += ["", "The fusion was chosen by the same cross-validation (learned fusions are fitted on the other "
                      "folds' out-of-fold member vectors): Recall@1 with nothing rejected,", "",
                  "| fusion | " + " | ".join(f"{c} gallery" for c in conds) + " |", "|---|" + "---:|" * len(conds)]
        for kind, fig in fus.items():
            lines.append(f"| {kind} | " + " | ".join(f"{100 * fig[c]:.2f}" for c in conds) + " |")
        chosen_fusion = cv.get("chosen_fusion", {}).get(side)
        if chosen_fusion:
            lines += ["", f"Shipped: `{chosen_fusion}`, the best mean over the galleries measured; the paper's plain "
                          "mean is kept unless another fusion beats it by more than 0.1 point."]
    return lines
