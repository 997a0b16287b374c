"""Command line: ``python -m cmce {info,train,evaluate,index,build-index,search,upgrade,bench}``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cmce.errors import CmceError
from cmce.experiments.degrade import DEGRADATIONS, MIX_KINDS, TRAIN_KINDS
from cmce.faces.detector import DETECTORS
from cmce.method.ensemble import QUALITY_SCORES
from cmce.method.unknown import UNKNOWN_BY

logger = logging.getLogger("cmce")


def _cmd_info(args: argparse.Namespace) -> int:
    from cmce.models.backbones import list_backbones

    rows = list_backbones()
    head = f"{'backbone':<18} {'role':<8} {'dim':>4} {'input':>6}  {'available':<10} licence / training data"
    print(head)
    print("-" * len(head))
    for r in rows:
        avail = "yes" if r.available else "no"
        print(f"{r.name:<18} {r.role:<8} {r.embedding_size:>4} {r.input_size:>4}px  {avail:<10} {r.license}; {r.training_data}")
        if not r.available:
            print(f"{'':<18} why not: {r.reason}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from cmce.experiments.splits import SplitConfig
    from cmce.experiments.train import train_bundle
    from cmce.models.embed import EmbeddingCache
    from cmce.models.transform import TrainConfig

    bundle = train_bundle(
        args.data_dir,
        args.out,
        query_model=args.query,
        gallery_models=args.gallery,
        train_config=TrainConfig(
            identity_loss=args.identity_loss, identity_weight=args.identity_weight,
            epochs=args.epochs, lr=args.lr, seed=args.seed,
        ),
        hidden=args.hidden,
        split=SplitConfig(args.val_fraction, args.test_fraction, args.seed),
        query_member=args.query_member,
        quality=args.quality,
        rejection_rate=args.rejection_rate,
        cache=None if args.no_cache else EmbeddingCache(),
        progress=not args.quiet,
        data_description=args.data_description,
        refit=args.refit,
        query_adapters=args.query_adapters,
        cv_folds=args.cv_folds,
        mixed_share=args.mixed_share,
        degrade_augment=args.degrade_augment,
        fusion=args.fusion,
        abstain_below=args.abstain_below,
        answer_kinds=tuple(args.answer_galleries),
        augment_kinds=None if args.augment_galleries is None else tuple(args.augment_galleries),
        strangers_named=None if args.strangers_named <= 0 else args.strangers_named,
        guard_kinds=tuple(args.guard_galleries),
    )
    t = bundle.info["training"]
    print(
        f"saved {args.out}: query {bundle.query_model}, gallery {', '.join(bundle.gallery_models)}; "
        f"trained on {t['images']} images / {t['identities']} identities; "
        f"query member: {bundle.query_member}; fusion: {bundle.fusion.kind}; quality score: {bundle.calibration.quality.kind}"
    )
    return 0


def _json_safe(value):
    """``value`` with every NaN float replaced by None (JSON has no NaN; it reads as null)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from cmce.experiments.evaluate import evaluate_embedded, plot_risk_coverage
    from cmce.method.bundle import load_bundle

    if args.ablations and not args.heldout:
        raise CmceError("--ablations trains on the bundle's training identities and measures on the held-out ones: "
                        "add --heldout")
    spec = None
    if args.gallery_degrade:
        from cmce.experiments.degrade import DegradeSpec

        spec = DegradeSpec.parse(args.gallery_degrade)  # a bad spec fails before anything is embedded
    bundle = load_bundle(args.bundle, revision=args.revision)
    old = _upgrade_source(args.upgrade_from) if args.upgrade_from else None
    ds, models, cache, embedded, clean, degrade_report = _evaluation_photos(args, bundle, old, spec)
    result = evaluate_embedded(embedded, ds.labels, bundle, ci_resamples=args.ci_resamples)
    if degrade_report is not None:
        result["gallery_degrade"] = degrade_report
        print(f"gallery degraded ({degrade_report['spec']}, seed {degrade_report['seed']}): "
              f"{degrade_report['degraded']} of {degrade_report['gallery_photos']} photos "
              f"({', '.join(f'{k} {v}' for k, v in degrade_report['by_kind'].items())}); "
              f"{sum(degrade_report['kept_clean_no_face'].values())} kept clean (no face found in the degraded copy"
              f"{_too_small_note(degrade_report)})")
    if old is not None:
        from cmce.experiments.evaluate import evaluate_upgrade, upgrade_costs

        old_models = (old,) if isinstance(old, str) else old.models
        costs = upgrade_costs(embedded, ds.labels, bundle, old_models)
        result["upgrade"] = evaluate_upgrade(embedded, ds.labels, bundle, old, seconds_per_1k_entries=costs)
        result["upgrade"]["from"]["source"] = args.upgrade_from
    result["data"] = {"dir": str(Path(args.data_dir).resolve().name), "heldout_only": bool(args.heldout),
                      "detection": args.detection}
    _print_evaluation(result, args)
    if args.ablations:
        _evaluation_ablations(result, args, bundle, ds, cache, clean, embedded, degrade_report)
    if args.json:
        Path(args.json).write_text(json.dumps(_json_safe(result), indent=2) + "\n")
    if args.plot:
        plot_risk_coverage(result, args.plot)
    if args.record:
        _record_evaluation(result, args, bundle, degrade_report)
    return 0


def _evaluation_photos(args: argparse.Namespace, bundle, old, spec):
    """The photos ``evaluate`` measures on, embedded (and their gallery degraded by ``spec``).

    Returns:
        (dataset, models, cache, embedded, the clean embedding, the degradation report or None).
    """
    from cmce.experiments.splits import heldout_subset
    from cmce.faces.detector import create_detector
    from cmce.io.datasets import list_labelled_images
    from cmce.models.embed import EmbeddingCache, embed_files

    ds = list_labelled_images(args.data_dir)
    if args.heldout:
        held = heldout_subset(ds, bundle)
        if old is not None and not isinstance(old, str) and heldout_subset(ds, old).paths != held.paths:
            raise CmceError("--upgrade-from: the two bundles held out different identities; train both on the "
                            "same data with the same --seed, --val-fraction and --test-fraction")
        ds = held
    old_models = () if old is None else ((old,) if isinstance(old, str) else old.models)
    models = list(dict.fromkeys([*bundle.models, *old_models]))
    cache = None if args.no_cache else EmbeddingCache()
    detector = create_detector(args.detection)  # the photos and their degraded copies alike
    embedded = embed_files(list(ds.paths), models, detector=detector, cache=cache, progress=not args.quiet)
    degrade_report, clean = None, embedded
    if spec is not None:
        from cmce.experiments.degrade import degrade_gallery
        from cmce.experiments.evaluate import gallery_positions

        embedded, degrade_report, _ = degrade_gallery(embedded, gallery_positions(embedded, ds.labels), spec,
                                                      seed=args.degrade_seed, models=models, cache=cache,
                                                      progress=not args.quiet, detector=detector)
    return ds, models, cache, embedded, clean, degrade_report


def _print_evaluation(result: dict, args: argparse.Namespace) -> None:
    """The evaluation's tables on stdout: rows, answers, the paper's rejection metric, open set, upgrade."""
    from cmce.experiments.evaluate_answers import answers_table
    from cmce.method.card import render_rejection_tables, render_table

    c = result["counts"]
    print(f"{c['files']} files, {c['faces_found']} faces ({c['no_face_or_unreadable']} without a face or unreadable; "
          f"{args.detection} detection); gallery {c['gallery']} ({c['distractors']} distractors), "
          f"queries {c['queries']}")
    print(render_table(result["rows"]))
    print("\nanswers as the app gives them (every query; CMCE ensemble column):\n")
    print("\n".join(answers_table(result["answers"])))
    print("\nthe paper's metric (Recall@1 of the kept queries):\n")
    print(render_rejection_tables(result))
    print("| rejected (shipped score) | open-set accuracy |\n|---:|---:|")
    for r in result["rejection"]:
        print(f"| {100 * r['rate']:.0f}% | {100 * r['open_set_accuracy']:.2f} |")
    if "upgrade" in result:
        _print_upgrade(result["upgrade"])


def _evaluation_ablations(result: dict, args: argparse.Namespace, bundle, ds, cache, clean, embedded,
                          degrade_report) -> None:
    """``--ablations``: the paper's ablations trained on the bundle's training identities, into ``result``."""
    from cmce.experiments.ablations import render_ablations, run_ablations
    from cmce.experiments.splits import SplitConfig, dataset_splits
    from cmce.io.datasets import list_labelled_images
    from cmce.models.embed import embed_files

    full = list_labelled_images(args.data_dir)
    # the training identities as the bundle was trained on them: plain detection, whatever --detection says
    train_emb = embed_files(list(full.paths), list(bundle.models), cache=cache, progress=not args.quiet)
    sp = dataset_splits(full.labels, SplitConfig(**bundle.info["training"]["split"]))
    conditions = {"clean": clean}
    if degrade_report is not None:
        conditions[degrade_report["spec"]] = embedded
    result["ablations"] = run_ablations(train_emb, full.labels, sp["train"] | sp["val"], conditions, ds.labels,
                                        bundle, ci_resamples=args.ci_resamples)
    print("\nablations (gallery models only; trained on the bundle's training identities):\n")
    print(render_ablations(result["ablations"]))


def _record_evaluation(result: dict, args: argparse.Namespace, bundle, degrade_report) -> None:
    """``--record``: the evaluation stored in the (local) bundle's config and model card."""
    from cmce.method.bundle import default_bundle_path, save_bundle

    folder = Path(args.bundle) if args.bundle else default_bundle_path()
    if not folder.is_dir():
        raise CmceError(f"--record writes into a local bundle folder; {folder} is not one")
    key = "evaluation_mixed" if degrade_report is not None else "evaluation"
    bundle.info[key] = _json_safe({
        "data": result["data"], "counts": result["counts"], "rows": result["rows"],
        "answers": result["answers"],
        "rejection": result["rejection"], "rejection_by_quality": result["rejection_by_quality"],
        "rejection_gallery_ensemble": result["rejection_gallery_ensemble"],
        "open_set": result["open_set"],
        **({"gallery_degrade": degrade_report} if degrade_report is not None else {}),
    })
    if "upgrade" in result:
        upgrades = [u for u in bundle.info.get("upgrades", []) if u["from"] != result["upgrade"]["from"]]
        bundle.info["upgrades"] = upgrades + [{k: v for k, v in result["upgrade"].items() if k != "ensemble_size"}]
    save_bundle(bundle, folder)
    print(f"recorded the evaluation in {folder}/config.json and its model card")


def _too_small_note(report: dict) -> str:
    """``"; 12 of them a face or image under 16 px"`` when degraded copies were too small, else ``""``."""
    from cmce.faces.geometry import MIN_FACE_PIXELS

    n = sum(report.get("kept_clean_too_small", {}).values())
    return f"; {n} of them a face or image under {MIN_FACE_PIXELS} px" if n else ""


def _upgrade_source(spec: str):
    """``--upgrade-from``: a bundle (folder or Hub id), or ``backbone:NAME`` (a one-model library)."""
    from cmce.method.bundle import load_bundle
    from cmce.models.backbones import get_spec

    if spec.startswith("backbone:"):
        name = spec.removeprefix("backbone:")
        get_spec(name)  # unknown names fail with the list of valid ones
        return name
    return load_bundle(spec)


def _print_upgrade(up: dict) -> None:
    from cmce.method.card import render_upgrade_table

    print(f"\nupgrade from query {up['from']['query']} ({' + '.join(up['from']['gallery'])}) "
          f"to query {up['to']['query']}: {up['counts']['gallery']} gallery entries, {up['counts']['queries']} queries")
    print(render_upgrade_table(up), end="")
    for c in up["comparisons"]:
        lo, hi = c["ci95"]
        print(f"{c['from']} -> {c['to']}: R@1 {100 * c['recall_at_1_gain']:+.2f} points (95% CI {100 * lo:+.2f} to {100 * hi:+.2f})")
    print("no-backfill ensemble size: " + "; ".join(
        f"{c['members']} member{'s' if c['members'] > 1 else ''}: R@1 {100 * c['recall_at_1']:.2f}, "
        f"TAR@1e-3 {100 * c['tar_at_far_1e-3']:.2f}" for c in up["ensemble_size"]))


def _cmd_index(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from cmce.gallery.upgrade import check_index_bundle
    from cmce.method.bundle import load_bundle
    from cmce.pipeline import (
        IngestJob,
        MapperConfig,
        build_derived,
        run_in_process,
        run_ray,
    )
    from cmce.storage.manifest import is_gallery

    bundle = load_bundle(args.bundle, revision=args.revision)
    out = Path(args.out)
    if is_gallery(out):
        check_index_bundle(out, bundle)  # another bundle serves it: say to run `upgrade` first
    job = IngestJob(args.source, str(out), MapperConfig(bundle=args.bundle, revision=args.revision),
                   batch_size=args.batch_size, max_files=args.max_files, max_entries=args.max_entries,
                   filename_labels=args.filename_labels)
    bar = tqdm(desc="indexing", unit="img", disable=args.quiet)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    notes: list[str] = []
    if args.ray:
        report = run_ray(job, address=args.ray, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                         progress=progress)
    else:
        from cmce.method.engine import FaceEngine

        engine = FaceEngine(bundle)
        report = run_in_process(job, engine=engine, progress=progress)
        notes = [f"new entries lack {m}: {why}" for m, why in engine.unavailable.items()] if report.added else []
    bar.close()
    for name, why in report.skipped[:20]:
        logger.warning("skipped %s: %s", name, why)
    if len(report.skipped) > 20:
        logger.warning("... and %d more skipped files (listed in %s/skipped)", len(report.skipped) - 20, out)
    for msg in report.limits_reached:
        logger.warning("limit: %s", msg)
    derived = build_derived(out, bundle, ray=args.ray)
    print(f"{'; '.join([report.summary(), *notes])}; {derived.entries} entries in {out}, {derived.rejected} over the "
          f"calibrated threshold (quality {bundle.calibration.quality.kind} > "
          f"{bundle.calibration.rejection_threshold:.3f}: marked doubtful, still searched)")
    return 0


def _cmd_build_index(args: argparse.Namespace) -> int:
    from cmce.gallery.archive_build import build_archive_index
    from cmce.method.bundle import load_bundle
    from cmce.search.compact_config import CompactConfig

    bundle = load_bundle(args.bundle, revision=args.revision)
    config = CompactConfig(**{k: v for k, v in (("nlist", args.nlist), ("nprobe", args.nprobe)) if v is not None})
    report = build_archive_index(args.gallery_dir, bundle, index=args.index, config=config, ray=args.ray)
    print(report.summary())
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from cmce.errors import NoFaceError
    from cmce.gallery.archive import open_gallery
    from cmce.method.bundle import load_bundle
    from cmce.method.engine import FaceEngine

    bundle = load_bundle(args.bundle, revision=args.revision)
    engine = FaceEngine(bundle)
    gallery = open_gallery(args.gallery_dir, engine)  # an archive index if built, else in memory
    note = gallery.unknown_note(args.unknown_by)
    if note:
        logger.warning("%s", note)
    answers = []
    for photo in args.photos:
        try:
            result = gallery.search_image(photo, k=args.k, name=str(photo), unknown_by=args.unknown_by)
        except NoFaceError:
            logger.warning("%s: no face found", photo)
            answers.append({"photo": str(photo), "error": "no face found"})
            continue
        res = result.views["ensemble"]
        matches = [{"entry_id": m.entry_id, "label": m.label, "source": m.source, "score": m.score,
                    "uncertainty": m.uncertainty, "quality": m.quality, "doubtful": m.doubtful}
                   for m in res.matches]
        answer = res.answer
        answers.append({"photo": str(photo), "unknown": res.unknown, "threshold": res.threshold,
                        "answer_kind": answer.kind, "answer": None if answer.unknown else answer.label,
                        "reason": answer.reason, "confidence": answer.confidence,
                        "normalised": answer.normalised, "norm_threshold": answer.norm_threshold, "matches": matches})
        print(f"{photo}: " + (f"{answer.reason}; " if answer.unknown else "")
              + ", ".join(f"{m['label'] or m['source']} {m['score']:.3f}" + (" (doubtful)" if m["doubtful"] else "")
                          for m in matches))
    if args.json:
        Path(args.json).write_text(json.dumps(answers, indent=1, default=_json_default))
    return 0


def _json_default(value):
    return None if value != value else float(value)  # NaN -> null


def _cmd_upgrade(args: argparse.Namespace) -> int:
    from cmce.gallery.upgrade import backfill_gallery, upgrade_gallery
    from cmce.method.bundle import load_bundle

    bundle = load_bundle(args.bundle, revision=args.revision)
    report = upgrade_gallery(args.gallery_dir, bundle, out=args.out, precision=args.precision, ray=args.ray)
    for member, n in report.lacking.items():
        name = f"{bundle.query_model}'s own embedding" if member == "query" else member
        logger.info("%d of %d entries lack %s (fused from the members they have)", n, report.entries, name)
    print(report.summary())
    if args.backfill:
        from tqdm.auto import tqdm

        from cmce.method.engine import FaceEngine

        engine = FaceEngine(bundle)
        bar = tqdm(desc="backfilling", unit="entry", disable=args.quiet)
        state = {"done": 0}

        def progress(done: int, waiting: int) -> None:
            if bar.total is None:
                bar.total = done + waiting
            bar.update(done - state["done"])
            bar.set_postfix(waiting=waiting)
            state["done"] = done

        back = backfill_gallery(report.folder, engine, progress=progress)
        bar.close()
        for source, why in back.unreachable:
            logger.warning("not backfilled: %s (%s)", source, why)
        print(back.summary())
    return 0


def _add_info_parser(sub) -> None:
    """The ``info`` command's options."""
    s = sub.add_parser("info", help="list registered backbones and whether they run here")
    s.set_defaults(func=_cmd_info)


def _add_train_parser(sub) -> None:
    """The ``train`` command's options."""
    s = sub.add_parser("train", help="train a bundle on a folder-per-identity dataset")
    s.add_argument("data_dir")
    s.add_argument("--query", default="sface")
    s.add_argument("--gallery", nargs="+", default=["dlib-resnet34", "facenet-casia"])
    s.add_argument("--out", required=True, help="bundle folder to write")
    s.add_argument("--identity-loss", default="none", choices=["none", "classifier", "supcon"])
    s.add_argument("--identity-weight", type=float, default=1.0)
    s.add_argument("--epochs", type=int, default=20)
    s.add_argument("--lr", type=float, default=3e-4)
    s.add_argument("--hidden", type=int, default=384)
    s.add_argument("--refit", action=argparse.BooleanOptionalAction, default=True,
                   help="after early stopping, retrain on train + validation identities for the chosen epoch count")
    s.add_argument("--query-adapters", action=argparse.BooleanOptionalAction, default=True,
                   help="also train the distillation-style baseline (query model -> gallery spaces) for evaluate")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--val-fraction", type=float, default=0.1)
    s.add_argument("--test-fraction", type=float, default=0.2, help="identities held out for evaluate --heldout")
    s.add_argument("--query-member", default="auto", choices=["auto", "yes", "no"])
    s.add_argument("--cv-folds", type=int, default=5,
                   help="make the auto choices (query member, quality) by k-fold cross-validation over the "
                        "non-held-out identities; 0: on the validation split alone")
    s.add_argument("--quality", default="auto", choices=["auto", *QUALITY_SCORES],
                   help="score that ranks gallery entries for rejection; auto: the one with the best mean Recall@1 "
                        "after rejection, measured on the ensemble the bundle serves")
    s.add_argument("--rejection-rate", type=float, default=0.10)
    s.add_argument("--mixed-share", type=float, default=0.6,
                   help="share of training gallery photos given a degraded copy, to choose the member, fusion and "
                        "quality score on mixed-quality validation galleries (0: clean only)")
    s.add_argument("--degrade-augment", action=argparse.BooleanOptionalAction, default=True,
                   help="train the transformers on the degraded copies too (copy -> clean query embedding)")
    s.add_argument("--fusion", default="auto", choices=["auto", "mean", "weighted", "gated"],
                   help="how members are fused: auto (cross-validated), mean (the paper), weighted, gated")
    s.add_argument("--answer-galleries", nargs="*", default=["crop", "tiny"], metavar="KIND",
                   help="degrade kinds of whole galleries that, beside clean and mixed ones, choose the query "
                        "member and fusion and calibrate the answer rule (none: clean and mixed only)")
    s.add_argument("--augment-galleries", nargs="*", default=None, metavar="KIND",
                   help="which answer galleries the transformers also train on with --degrade-augment "
                        "(default: all of them; none: the mixed copies only)")
    s.add_argument("--strangers-named", type=float, default=0.05,
                   help="the Unknown threshold on cohort-normalised scores names this share of strangers on the "
                        "clean cross-validation galleries (0: the raw similarity threshold only)")
    s.add_argument("--guard-galleries", nargs="*", default=list(TRAIN_KINDS), metavar="KIND",
                   help="degrade kinds of further whole galleries that calibrate only the coverage guard of the "
                        "normalised Unknown threshold (the most it may be on a gallery of poor photos); "
                        "none: no guard")
    s.add_argument("--abstain-below", type=float, default=0.75,
                   help="the answer rule says Unknown where its predicted chance of a right answer is below this "
                        "(lowered where it would say Unknown to over 10%% of clean or 20%% of other calibration queries)")
    s.add_argument("--data-description", default=None)
    s.add_argument("--no-cache", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_train)


def _add_evaluate_parser(sub) -> None:
    """The ``evaluate`` command's options."""
    s = sub.add_parser("evaluate", help="the paper's table on a folder-per-identity dataset")
    s.add_argument("data_dir")
    s.add_argument("--bundle", default=None, help="bundle folder or Hub id (default: assets/)")
    s.add_argument("--revision", default=None)
    s.add_argument("--heldout", action="store_true", help="only the identities the bundle held out in training")
    s.add_argument("--json", default=None)
    s.add_argument("--plot", default=None)
    s.add_argument("--record", action="store_true", help="store the table in the (local) bundle and its model card")
    s.add_argument("--upgrade-from", default=None, metavar="OLD",
                   help="also run the paper's query-model update: OLD is the bundle (folder or Hub id) that built "
                        "the gallery, or backbone:NAME for a library indexed by one model; adds 'upgrade' to the JSON")
    s.add_argument("--gallery-degrade", default=None, metavar="SPEC",
                   help="degrade gallery photos only (queries stay clean): mix:SHARE (e.g. mix:0.6: that share, "
                        f"each by {', '.join(MIX_KINDS[:-1])} or {MIX_KINDS[-1]}), mix:SHARE:K1+K2, or one kind alone: "
                        f"{', '.join(DEGRADATIONS)} (optionally KIND:SHARE); crop (tight face crops) and tiny "
                        "(faces 16-40 px wide) want --detection index")
    s.add_argument("--detection", default="plain", choices=DETECTORS,
                   help="face detection of the photos and degraded copies: plain (MTCNN's first pass, as training "
                        "embeds) or index (what cmce index and the app use: landmark check and second chance, which "
                        "finds tight crops and tiny faces); cached apart")
    s.add_argument("--degrade-seed", type=int, default=0, help="picks the degraded photos and their strength")
    s.add_argument("--ci-resamples", type=int, default=1000, help="bootstrap draws (over identities) per interval")
    s.add_argument("--ablations", action="store_true",
                   help="with --heldout: train and measure the paper's ablations (ensemble alternatives, "
                        "diversity, ensemble size) on the bundle's training identities; adds 'ablations' to the JSON")
    s.add_argument("--no-cache", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_evaluate)


def _add_bench_parser(sub) -> None:
    """The ``bench`` command's options."""
    s = sub.add_parser("bench", help="speed figures of this machine (medians; ratios within one run)")
    s.add_argument("images_dir", help="a folder of real face photos")
    s.add_argument("--bundle", default=None)
    s.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    s.add_argument("--repeat", type=int, default=15)
    s.add_argument("--index-images", type=int, default=64)
    s.add_argument("--upgrade-entries", type=int, default=1_000_000,
                   help="size of the synthetic gallery whose upgrade is timed (0: skip)")
    s.add_argument("--only", choices=["all", "upgrade"], default="all",
                   help="upgrade: only the indexing rate and the upgrade timing")
    s.add_argument("--json", default=None)
    s.set_defaults(func=lambda a: __import__("cmce.experiments.bench", fromlist=["main_bench"]).main_bench(a))


def _add_upgrade_parser(sub) -> None:
    """The ``upgrade`` command's options."""
    s = sub.add_parser("upgrade", help="move a saved gallery to another bundle without re-reading its photos")
    s.add_argument("gallery_dir", help="a gallery written by `index` or Gallery.save")
    s.add_argument("--bundle", required=True, help="the new bundle: a folder or a Hub id")
    s.add_argument("--revision", default=None)
    s.add_argument("--out", default=None, help="write the upgraded gallery to this new folder (default: in place)")
    s.add_argument("--backfill", action="store_true",
                   help="then embed the members entries lack, from photos that can still be read (resumable)")
    s.add_argument("--precision", choices=["float32", "int8"], default="float32",
                   help="int8: transformers with int8 linear layers, up to 2x faster on CPU; changed 3 of 888 "
                        "held-out top-1 answers (scripts/upgrade_int8_check.py)")
    s.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                   help="archive galleries: project the shards as Ray tasks on this cluster")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_upgrade)


def _add_build_index_parser(sub) -> None:
    """The ``build-index`` command's options."""
    s = sub.add_parser("build-index", help="build a bundle's archive index over a gallery's shards (for millions of faces)")
    s.add_argument("gallery_dir", help="a gallery written by `index`")
    s.add_argument("--bundle", default=None)
    s.add_argument("--revision", default=None)
    s.add_argument("--index", choices=["auto", "exact", "compact"], default="auto",
                   help="auto: the compact (IVF-PQ, exact re-rank) index from 2M entries, exact below")
    s.add_argument("--nlist", type=int, default=None, help="compact index: IVF lists (default about 2 sqrt(N))")
    s.add_argument("--nprobe", type=int, default=None, help="compact index: lists probed per query")
    s.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                   help="project the shards as Ray tasks and build the index in one (the gallery on a shared mount)")
    s.set_defaults(func=_cmd_build_index)


def _add_search_parser(sub) -> None:
    """The ``search`` command's options."""
    s = sub.add_parser("search", help="search a saved gallery (archive index or in-memory) with query photos")
    s.add_argument("gallery_dir")
    s.add_argument("photos", nargs="+", help="query photos (the largest face of each is searched)")
    s.add_argument("--bundle", default=None)
    s.add_argument("--revision", default=None)
    s.add_argument("--k", type=int, default=5)
    s.add_argument("--unknown-by", default="normalised", choices=list(UNKNOWN_BY),
                   help="'Unknown' when the best match does not stand out from the next people of the gallery "
                        "(normalised, the default, in galleries of 50+ people, lowered on a gallery of poor photos "
                        "so that most searches get a name; strict: never lowered, names the fewest strangers) or "
                        "when its similarity is below the bundle's threshold (similarity)")
    s.add_argument("--json", default=None, help="write the answers as JSON")
    s.set_defaults(func=_cmd_search)


def _add_index_parser(sub) -> None:
    """The ``index`` command's options."""
    s = sub.add_parser("index", help="index photos into a saved gallery, here or on a Ray cluster; resumable")
    s.add_argument("source", metavar="SOURCE",
                   help="folder (recursively; first folder level = label) or URI: file:///..., s3://..., gs://...")
    s.add_argument("--out", required=True, help="gallery folder (created, or extended if it exists)")
    s.add_argument("--bundle", default=None)
    s.add_argument("--revision", default=None)
    s.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                   help="run on Ray Data: local (a cluster on this machine), auto (the cluster this machine is in) "
                        "or a head's HOST:PORT; needs pip install -r requirements-scale.txt")
    s.add_argument("--workers", type=int, default=1, help="with --ray: actors, each loading the models once")
    s.add_argument("--gpus-per-worker", type=float, default=0.0, help="with --ray: GPUs per actor (models on CUDA)")
    s.add_argument("--batch-size", type=int, default=16, help="photos per detection and embedding batch")
    s.add_argument("--filename-labels", action="store_true", help="label flat folders by Name_0001-style names")
    s.add_argument("--max-files", type=int, default=None, help="read at most this many files (default: all)")
    s.add_argument("--max-entries", type=int, default=None, help="entries the gallery may hold (default: no cap)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_index)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cmce", description="CMCE face search: asymmetric retrieval with cross model compatible ensembles")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    _add_info_parser(sub)
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_bench_parser(sub)
    _add_upgrade_parser(sub)
    _add_build_index_parser(sub)
    _add_search_parser(sub)
    _add_index_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs every missing SIMD build
    try:
        if args.command != "info":
            from cmce.models.backbones.base import configure_torch_threads

            configure_torch_threads()  # CMCE_TORCH_THREADS, default 1
        return args.func(args)
    except CmceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
