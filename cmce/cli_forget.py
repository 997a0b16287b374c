"""``python -m cmce forget``: erase people or faces from a saved gallery (``cmce.gallery.forget``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_forget_parser"]


def _cmd_forget(args: argparse.Namespace) -> int:
    from cmce.gallery.forget import forget

    bundle = None
    if args.bundle is not None:
        from cmce.method.bundle import load_bundle

        bundle = load_bundle(args.bundle, revision=args.revision)
    result = forget(args.gallery_dir, entry_ids=args.entry, people=args.person, bundle=bundle)
    print(result.summary())
    if args.json:
        report = result.erased
        Path(args.json).write_text(json.dumps({
            "gallery": str(report.folder), "entries": list(report.entries),
            "people": {k: list(v) for k, v in result.people.items()},
            "shards_rewritten": [list(p) for p in report.shards_rewritten], "skipped_rows": report.skipped_rows,
            "staged_files": report.staged_files, "corrections": report.corrections,
            "derived_dropped": report.derived_dropped is not None, "rebuilt": result.rebuilt,
            "deleted": list(report.deleted), "seconds": report.seconds}, indent=1))
    return 0


def add_forget_parser(sub) -> None:
    """The ``forget`` command's options."""
    s = sub.add_parser("forget", help="erase people or faces from a saved gallery: their raw embeddings, thumbnails, "
                                      "derived data and corrections, by rewriting the files that hold them")
    s.add_argument("gallery_dir", help="a gallery written by `index` or Gallery.save")
    s.add_argument("--person", action="append", default=[], metavar="NAME",
                   help="erase every face carrying this name (a given name, else its label); repeatable")
    s.add_argument("--entry", action="append", default=[], metavar="ID",
                   help="erase this entry (face) id, <content hash>:<face number>; repeatable")
    s.add_argument("--bundle", default=None,
                   help="the bundle serving the gallery: rebuild its derived data (index) after the erasure "
                        "(default: derived data is dropped; loading the gallery re-projects it)")
    s.add_argument("--revision", default=None)
    s.add_argument("--json", default=None, help="write what was erased as JSON")
    s.set_defaults(func=_cmd_forget)
