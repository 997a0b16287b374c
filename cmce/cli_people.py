"""The people commands of ``python -m cmce``: ``people GALLERY`` and ``evaluate DATA --people``.

Kept apart from ``cli.py`` (which registers them) so that the command module stays short.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

from cmce.errors import CmceError

logger = logging.getLogger(__name__)

__all__ = ["LISTED", "add_people_parser", "run_people_evaluation"]

LISTED = 30
"""People listed by ``cmce people`` (largest first, each with the key a correction takes), before the summary."""


def _write_json(path: str, doc: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=1, default=float) + "\n")


def run_people_evaluation(args: argparse.Namespace) -> int:
    """``evaluate DATA --heldout --people``: grouping figures of the held-out identities, every gallery kind."""
    from cmce.experiments.evaluate_people import calibrate, evaluate_people, people_gallery
    from cmce.experiments.evaluate_run import embed_evaluation_photos, parse_gallery_kinds
    from cmce.experiments.evaluate_text import degrade_line
    from cmce.method.bundle import default_bundle_path, load_bundle
    from cmce.models.embed import EmbeddingCache

    if not args.heldout:
        raise CmceError("--people groups the held-out identities with thresholds from the training ones: add --heldout")
    specs = parse_gallery_kinds(args.gallery_degrade)
    bundle = load_bundle(args.bundle, revision=args.revision)
    cache = None if args.no_cache else EmbeddingCache()
    calibration = calibrate(args.data_dir, bundle, cache=cache, progress=not args.quiet)
    print(f"calibrated on {calibration['identities']} training identities ({calibration['faces']} faces): "
          f"{calibration['method']}, ensemble threshold {calibration['ensemble']['threshold']:.2f}, "
          f"query model {calibration['query']['threshold']:.2f}")
    photos = embed_evaluation_photos(args.data_dir, bundle, heldout=True, detection=args.detection, cache=cache,
                                     progress=not args.quiet)
    galleries = []
    for spec in specs:
        embedded, report = people_gallery(photos, spec, seed=args.degrade_seed)
        if report is not None:
            print(degrade_line(report), end="")
        res = evaluate_people(embedded, photos.dataset.labels, bundle, calibration, degrade_report=report,
                              ci_resamples=args.ci_resamples)
        print(f"\n## {res['gallery']} gallery: {res['rows'][0]['faces']} faces of {res['rows'][0]['people_true']} people\n")
        for r in res["rows"]:
            lo, hi = r["bcubed_f_ci95"]
            print(f"{r['name']:<62} BCubed F {100 * r['bcubed_f']:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]  "
                  f"P {100 * r['bcubed_precision']:.2f} R {100 * r['bcubed_recall']:.2f}  pairwise F "
                  f"{100 * r['pairwise_f']:.2f}  people {r['people_found']}/{r['people_true']}  "
                  f"unsure {100 * r['share_unsure']:.1f}%")
        galleries.append(res)
    doc = {"bundle": {"query": bundle.query_model, "gallery": list(bundle.gallery_models), "source": bundle.source},
           "calibration": calibration, "galleries": galleries, "data": photos.data,
           "ci_resamples": args.ci_resamples}
    if args.json:
        _write_json(args.json, doc)
    if args.record:
        folder = Path(args.bundle) if args.bundle else default_bundle_path()
        _record(folder, calibration)
    return 0


def _record(folder: Path, calibration: dict) -> None:
    """``--record``: the grouping calibration into the bundle's ``config.json`` (``info.people``; weights untouched)."""
    config = folder / "config.json"
    if not config.is_file():
        raise CmceError(f"--record writes into a local bundle folder; {folder} has no config.json")
    doc = json.loads(config.read_text())
    ens, qry = calibration["ensemble"], calibration["query"]
    doc.setdefault("info", {})["people"] = {
        "method": calibration["method"], "threshold": ens["threshold"],
        "query_weight": ens.get("query_weight", 0.0), "attach_above": ens.get("attach_above"),
        "attach_margin": ens.get("attach_margin"),
        "query_threshold": qry["threshold"], "query_attach_above": qry.get("attach_above"),
        "query_attach_margin": qry.get("attach_margin"),
        "detach_below": ens.get("detach_below"), "query_detach_below": qry.get("detach_below"),
        "identities": calibration["identities"], "faces": calibration["faces"],
        "measured_by": "best mean BCubed F on the bundle's training identities (train + validation), "
                       + ("out-of-fold (served by the cross-validation networks not trained on them)"
                          if calibration.get("out_of_fold") else "served by the bundle")
                       + ": clean, and 1,000 of them with mix:0.6 of their photos degraded; threshold, then attach "
                         "pass, then detach pass"}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".config.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, config)
    print(f"recorded the grouping calibration in {config}")


def _correction(args: argparse.Namespace, people):
    """The correction the options ask for, or None (``--name``, ``--merge``, ``--split``, ``--not``)."""
    from cmce.people.corrections import merge_people, name_person, not_person, split_person

    if args.name:
        return name_person(people, *args.name)
    if args.merge:
        return merge_people(people, *args.merge)
    if args.split:
        return split_person(people, args.split)
    if args.not_person:
        return not_person(people, *args.not_person)
    return None


def _cmd_people(args: argparse.Namespace) -> int:
    from cmce.method.bundle import load_bundle
    from cmce.people.corrections import apply_to_folder
    from cmce.people.grouping import GroupingConfig
    from cmce.people.library import bundle_grouping_config, calibrated_extras, group_gallery

    bundle = load_bundle(args.bundle, revision=args.revision)
    if args.threshold is not None:  # the other calibrated settings, where the bundle has them, still apply
        cal = bundle.info.get("people", {})
        cfg = GroupingConfig(threshold=args.threshold, min_faces=args.min_faces,
                             method=cal.get("method", "chinese_whispers"),
                             doubt_above=float(bundle.calibration.rejection_threshold), **calibrated_extras(cal))
    else:
        cfg = bundle_grouping_config(bundle, min_faces=args.min_faces)
    people = group_gallery(args.gallery_dir, bundle, config=cfg)
    change = _correction(args, people)
    if change is not None:
        apply_to_folder(args.gallery_dir, people, change)
        print(change.description)
        people = group_gallery(args.gallery_dir, bundle, config=cfg)
    listed = people.lines()[1:]
    for line in listed[:LISTED]:
        print(line)
    if len(listed) > LISTED:
        print(f"  ... and {len(listed) - LISTED} more people (all of them: --json)")
    if args.compare_with:
        from cmce.people.compare import compare_partitions, partition_of

        try:
            old = json.loads(Path(args.compare_with).read_text())
        except (OSError, ValueError) as exc:
            raise CmceError(f"--compare-with needs a JSON file written by `cmce people GALLERY --json`: {exc}") from None
        print(compare_partitions(partition_of(old), partition_of(people.to_dict())).summary())
    print(people.summary())
    if args.json:
        _write_json(args.json, people.to_dict())
    return 0


def add_people_parser(sub) -> None:
    """The ``people`` command's options."""
    s = sub.add_parser("people", help="group a saved gallery's faces into people (doubtful faces kept apart)")
    s.add_argument("gallery_dir", help="a gallery written by `index`")
    s.add_argument("--bundle", default=None)
    s.add_argument("--revision", default=None)
    s.add_argument("--json", default=None, help="write people (id, name, entry ids, source files, cohesion) and "
                                                "unsure faces (entry id, source file, reason)")
    s.add_argument("--min-faces", type=int, default=1, help="people with fewer faces are listed as unsure")
    s.add_argument("--threshold", type=float, default=None,
                   help="the similarity that links two faces (default: the bundle's calibrated one)")
    fix = s.add_mutually_exclusive_group()
    fix.add_argument("--name", nargs=2, metavar=("PERSON", "NAME"),
                     help="name a person (PERSON: its name, one of its entry ids, or a unique prefix of one, as "
                          "printed); the name is stored on each of its entries")
    fix.add_argument("--merge", nargs=2, metavar=("PERSON", "PERSON"), help="merge two people (stored must-links)")
    fix.add_argument("--split", metavar="PERSON",
                     help="split a person in two by its faces' vectors (stored cannot- and must-links)")
    fix.add_argument("--not", dest="not_person", nargs=2, metavar=("ENTRY", "PERSON"),
                     help="this face is not this person (stored cannot-links)")
    s.add_argument("--compare-with", default=None, metavar="OLD_JSON",
                   help="a grouping written before (--json), e.g. before `cmce upgrade`: print how many faces "
                        "changed person")
    s.set_defaults(func=_cmd_people)
