"""Evaluate a bundle's answers on every gallery kind, as the app answers (issue 22).

Provenance of docs/answers/eval-*.json. For each kind (clean, mix:0.6, crop, tiny and each
single degradation at 100%) the evaluation is ``cmce evaluate``'s: this runs
``python -m cmce evaluate DATA --bundle B --heldout --detection index --gallery-degrade clean
--gallery-degrade mix:0.6 ... --json ALL.json`` once in this process (the photos embedded
once), then writes each evaluation of ``ALL.json`` to its own file, ``OUT/eval-NAME-KIND.json``
(byte for byte what ``--gallery-degrade KIND --json`` alone writes); ``scripts/answers_doc.py``
renders the tables of docs/answers.md from them.

    python scripts/eval_gallery_kinds.py ../shared/data/lfw-train --bundle assets/bundles/sface-query \\
        --out docs/answers
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cmce.cli import main  # noqa: E402
from cmce.metrics.results import load_evaluations, save_evaluations  # noqa: E402

KINDS = ("clean", "mix:0.6", "crop", "tiny", "blur", "lowres", "jpeg", "dark", "noise", "occlusion")


def file_name(bundle: str, kind: str) -> str:
    return f"eval-{Path(bundle).name}-{kind.replace(':', '')}.json"


def run(data: str, bundle: str, out: Path, kinds=KINDS, resamples: int = 1000) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        every = Path(tmp) / "all.json"
        args = ["evaluate", data, "--bundle", bundle, "--heldout", "--detection", "index", "--quiet",
                "--ci-resamples", str(resamples), "--json", str(every)]
        for kind in kinds:
            args += ["--gallery-degrade", kind]
        logging.getLogger(__name__).info("evaluating %s on %s", bundle, ", ".join(kinds))
        code = main(args)
        if code:
            raise SystemExit(f"evaluate failed (exit {code})")
        evaluations = load_evaluations(every)
    paths = []
    for kind, evaluation in zip(kinds, evaluations):
        path = out / file_name(bundle, kind)
        save_evaluations(path, [evaluation])
        paths.append(path)
    return paths


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--bundle", required=True)
    p.add_argument("--out", default="docs/answers")
    p.add_argument("--kinds", nargs="+", default=list(KINDS))
    p.add_argument("--ci-resamples", type=int, default=1000)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(a.data_dir, a.bundle, Path(a.out), a.kinds, a.ci_resamples)
