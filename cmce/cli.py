"""Command line: ``python -m cmce {info,train,evaluate,index,build-index,search,upgrade,bench,bundle}``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cmce.cli_forget import add_forget_parser
from cmce.errors import CmceError
from cmce.experiments.degrade import DEGRADATIONS, MIX_KINDS, TRAIN_KINDS
from cmce.faces.detector import DETECTORS
from cmce.method.ensemble import QUALITY_SCORES
from cmce.method.precision import PRECISIONS
from cmce.method.unknown import UNKNOWN_BY
from cmce.metrics.results import json_safe as _json_safe  # noqa: F401  (the name tests and scripts import)

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
        abstain_caps=None if args.abstain_caps is None else {"clean": args.abstain_caps[0], "any": args.abstain_caps[1]},
    )
    t = bundle.info["training"]
    print(
        f"saved {args.out}: query {bundle.query_model}, gallery {', '.join(bundle.gallery_models)}; "
        f"trained on {t['images']} images / {t['identities']} identities; "
        f"query member: {bundle.query_member}; fusion: {bundle.fusion.kind}; quality score: {bundle.calibration.quality.kind}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from cmce.experiments.evaluate_run import (
        degrade_photos,
        embed_evaluation_photos,
        evaluate_gallery,
        load_upgrade_source,
        parse_gallery_kinds,
    )
    from cmce.experiments.evaluate_text import degrade_line, render_evaluation
    from cmce.method.bundle import load_bundle
    from cmce.metrics.results import save_evaluations
    from cmce.models.embed import EmbeddingCache

    _check_evaluate_options(args)
    if args.people:
        from cmce.cli_people import run_people_evaluation

        return run_people_evaluation(args)
    specs = parse_gallery_kinds(args.gallery_degrade)  # a bad spec fails before anything is embedded
    bundle = load_bundle(args.bundle, revision=args.revision)
    sources = [load_upgrade_source(s) for s in args.upgrade_from or ()]
    photos = embed_evaluation_photos(args.data_dir, bundle, sources, heldout=args.heldout, detection=args.detection,
                                     cache=None if args.no_cache else EmbeddingCache(), progress=not args.quiet)
    results = []
    for spec in specs:
        embedded, report = (photos.clean, None) if spec is None else degrade_photos(photos, spec,
                                                                                    seed=args.degrade_seed)
        if len(specs) > 1:
            print(f"\n## {'clean' if spec is None else spec.text} gallery\n")
        evaluation = evaluate_gallery(photos, bundle, embedded, degrade_report=report, sources=sources,
                                      precision=args.precision, compare_scores=args.compare_scores,
                                      ci_resamples=args.ci_resamples)
        if report is not None:
            print(degrade_line(report), end="")
        print(render_evaluation(evaluation, args.detection), end="")
        if args.ablations:
            evaluation = _evaluation_ablations(evaluation, args, bundle, photos, embedded, report)
        results.append(evaluation)
    if args.json:
        save_evaluations(args.json, results)
    if args.plot:
        _plot_evaluations(results, args.plot)
    if args.record:
        _record_evaluation(results[0], args, bundle)
    return 0


def _check_evaluate_options(args: argparse.Namespace) -> None:
    """Refuse option combinations ``evaluate`` cannot honour, before anything is embedded."""
    if args.ablations and not args.heldout:
        raise CmceError("--ablations trains on the bundle's training identities and measures on the held-out ones: "
                        "add --heldout")
    galleries = len(args.gallery_degrade or ())
    if galleries > 1 and (args.ablations or (args.record and not args.people)):
        raise CmceError(f"{'--ablations' if args.ablations else '--record'} takes one gallery; "
                        f"{galleries} --gallery-degrade specs were given")
    if args.precision != "float32" and not args.upgrade_from:
        raise CmceError("--precision is the precision --upgrade-from re-projects the old gallery in: add --upgrade-from")


def _plot_evaluations(results: list, path: str) -> None:
    """``--plot``: the risk-coverage plot; with several galleries one per gallery (``PATH-SPEC.png``)."""
    from cmce.experiments.evaluate import plot_risk_coverage

    if len(results) == 1:
        plot_risk_coverage(results[0], path)
        return
    p = Path(path)
    for r in results:
        spec = (r.degrade_spec or "clean").replace(":", "").replace("+", "-")
        plot_risk_coverage(r, str(p.with_name(f"{p.stem}-{spec}{p.suffix}")))


def _evaluation_ablations(evaluation, args: argparse.Namespace, bundle, photos, embedded, degrade_report):
    """``--ablations``: the paper's ablations trained on the bundle's training identities, added to ``evaluation``."""
    from dataclasses import replace

    from cmce.experiments.ablations import render_ablations
    from cmce.experiments.evaluate_run import evaluate_ablations
    from cmce.metrics.results import frozen

    ablations = evaluate_ablations(photos, bundle, embedded, degrade_report, ci_resamples=args.ci_resamples)
    print("\nablations (gallery models only; trained on the bundle's training identities):\n")
    print(render_ablations(ablations))
    return replace(evaluation, ablations=frozen(ablations))


def _record_evaluation(evaluation, args: argparse.Namespace, bundle) -> None:
    """``--record``: the evaluation stored in the (local) bundle's config and model card."""
    from cmce.method.bundle import default_bundle_path, save_bundle

    folder = Path(args.bundle) if args.bundle else default_bundle_path()
    if not folder.is_dir():
        raise CmceError(f"--record writes into a local bundle folder; {folder} is not one")
    key = "evaluation_mixed" if evaluation.gallery_degrade is not None else "evaluation"
    bundle.info[key] = evaluation.recorded()
    for up in evaluation.upgrade_results:
        up = up.to_dict()
        upgrades = [u for u in bundle.info.get("upgrades", []) if u["from"] != up["from"]]
        bundle.info["upgrades"] = upgrades + [{k: v for k, v in up.items() if k != "ensemble_size"}]
    save_bundle(bundle, folder)
    print(f"recorded the evaluation in {folder}/config.json and its model card")


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


def _cmd_bundle_annotate(args: argparse.Namespace) -> int:
    from cmce.experiments.annotate import annotate_bundles

    for name, bundle in annotate_bundles(args.folder).items():
        paths = ", ".join(p["bundle"] for p in bundle.info["upgrade_from"]) or "none"
        print(f"{name}: {bundle.info['purpose'] or '(no purpose)'} Upgrades galleries of: {paths}")
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
                        "(lowered where it would say Unknown to over --abstain-caps of the calibration queries)")
    s.add_argument("--abstain-caps", type=float, nargs=2, default=None, metavar=("CLEAN", "ANY"),
                   help="the most the default says Unknown on clean and on any other kind of calibration gallery "
                        "(default 0.10 0.17: three points under the 20%% promised on a new gallery); the "
                        "coverage guard's shares are these less 0.02")
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
    s.add_argument("--upgrade-from", action="append", default=None, metavar="OLD",
                   help="also run the paper's query-model update: OLD is the bundle (folder or Hub id) that built "
                        "the gallery, or backbone:NAME for a library indexed by one model; adds 'upgrade' to the JSON "
                        "(repeatable: one upgrade per OLD, a list under 'upgrades')")
    s.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="with --upgrade-from: the new bundle re-projects the old gallery in this precision, as "
                        "cmce upgrade --precision does (int8: the JSON's upgrade adds what it changes against float32)")
    s.add_argument("--gallery-degrade", action="append", default=None, metavar="SPEC",
                   help="degrade gallery photos only (queries stay clean): mix:SHARE (e.g. mix:0.6: that share, "
                        f"each by {', '.join(MIX_KINDS[:-1])} or {MIX_KINDS[-1]}), mix:SHARE:K1+K2, or one kind alone: "
                        f"{', '.join(DEGRADATIONS)} (optionally KIND:SHARE); crop (tight face crops) and tiny "
                        "(faces 16-40 px wide) want --detection index. Repeatable (clean: the gallery as it is): "
                        "one evaluation per SPEC, the JSON then {\"evaluations\": [one per SPEC, in order]}")
    s.add_argument("--compare-scores", action="store_true",
                   help="add the paired comparison of quality scores: the shipped score's error cut minus every "
                        "other score's, per rejection rate, with a 95%% interval over query identities; adds "
                        "'score_comparison' to the JSON")
    s.add_argument("--detection", default="plain", choices=DETECTORS,
                   help="face detection of the photos and degraded copies: plain (MTCNN's first pass, as training "
                        "embeds) or index (what cmce index and the app use: landmark check and second chance, which "
                        "finds tight crops and tiny faces); cached apart")
    s.add_argument("--degrade-seed", type=int, default=0, help="picks the degraded photos and their strength")
    s.add_argument("--ci-resamples", type=int, default=1000, help="bootstrap draws (over identities) per interval")
    s.add_argument("--people", action="store_true",
                   help="with --heldout: group the faces into people, labels hidden (docs/people.md); with "
                        "--record the grouping calibration goes into the bundle's config")
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
    s.add_argument("--precision", choices=PRECISIONS, default="float32",
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


def _add_bundle_parser(sub) -> None:
    """The ``bundle`` command group: ``bundle annotate``."""
    from cmce.assets import PROJECT_ROOT

    s = sub.add_parser("bundle", help="work on bundle folders (annotate)")
    group = s.add_subparsers(dest="bundle_command", required=True)
    a = group.add_parser("annotate", help="write each bundle's purpose and the bundles it can upgrade galleries "
                                          "from into its config and model card (weights unchanged)")
    a.add_argument("folder", nargs="?", default=str(PROJECT_ROOT / "assets" / "bundles"),
                   help="a folder of bundle folders (default: the shipped assets/bundles)")
    a.set_defaults(func=_cmd_bundle_annotate)


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
    _add_bundle_parser(sub)
    add_forget_parser(sub)
    from cmce.cli_people import add_people_parser

    add_people_parser(sub)
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
