"""Give a shipped bundle the answer rule that a rerun of its own training calibrated (issue 22).

``python -m cmce train`` with the bundle's own command now also chooses and fits the
answer rule (``cmce.method.answers``) by cross-validation on clean, mixed, crop and tiny
galleries. A rerun does not reproduce the shipped transformers bit for bit (faces at the
image's edge now get refined landmarks, which moves a few training embeddings and
degraded copies), so rather than replace tensors that every recorded table was
measured with, this copies the rerun's answer calibration into the shipped bundle
after checking that the two serve the same similarities:

* the same members, query member and fusion kind;
* every similarity threshold and the quality threshold within ``--atol`` (the answer
  rule is a function of the similarities; it was fitted out-of-fold, on networks of
  the cross-validation folds, never on the final ones);
* the largest difference of any transformer weight is reported.

    python -m cmce train ../shared/data/lfw-train --out /tmp/rerun/sface-query
    python scripts/add_answer_rule.py /tmp/rerun/sface-query assets/bundles/sface-query

What is copied: ``calibration.answer_rule``, ``answer_policies`` and ``cohort_norm`` (the
normalised "Unknown" threshold, also calibrated out of fold), and the rerun's
``info.training.answers`` (the choice and its cross-validated figures) and
``info.training.cross_validation`` figures of the fusion on the crop and tiny galleries.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cmce.errors import CmceError  # noqa: E402
from cmce.method.bundle import load_bundle, save_bundle  # noqa: E402

logger = logging.getLogger("add_answer_rule")


def check_same(rerun, shipped, atol: float) -> float:
    """The largest difference between the two bundles' tensors and thresholds (raises when they differ in kind)."""
    for name in ("query_model", "gallery_models", "query_member"):
        if getattr(rerun, name) != getattr(shipped, name):
            raise CmceError(f"the rerun's {name} ({getattr(rerun, name)}) is not the shipped one's "
                            f"({getattr(shipped, name)})")
    if rerun.fusion.kind != shipped.fusion.kind:
        raise CmceError(f"the rerun chose {rerun.fusion.kind} fusion, the shipped bundle has {shipped.fusion.kind}")
    weights = 0.0
    for m in shipped.gallery_models:
        a, b = rerun.transformers[m].state_dict(), shipped.transformers[m].state_dict()
        for k in b:
            weights = max(weights, float((a[k].float() - b[k].float()).abs().max()))
    ra, sa = rerun.calibration, shipped.calibration
    worst = max(abs(ra.similarity_thresholds[view] - t) for view, t in sa.similarity_thresholds.items())
    worst = max(worst, abs(ra.rejection_threshold - sa.rejection_threshold))
    logger.info("largest difference: %.2g in a transformer weight, %.2g in a threshold", weights, worst)
    if worst > atol:
        raise CmceError(f"the rerun's thresholds differ from the shipped bundle's by {worst:.2g} (> {atol:g}): "
                        f"retrain and re-measure instead")
    return worst


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rerun", help="bundle folder written by the rerun of the shipped bundle's training")
    p.add_argument("shipped", help="the shipped bundle folder to update")
    p.add_argument("--atol", type=float, default=2e-3, help="largest threshold difference accepted")
    p.add_argument("--rule", choices=("similarity", "query", "combined"), default=None,
                   help="serve this answer rule by default instead of the rerun's choice (every rule is fitted)")
    p.add_argument("--because", default=None, help="why --rule overrides the choice (recorded in the bundle)")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rerun, shipped = load_bundle(a.rerun), load_bundle(a.shipped)
    worst = check_same(rerun, shipped, a.atol)
    if a.rule and not a.because:
        raise CmceError("--rule needs --because: the measured reason the rerun's choice is overridden")
    rule = a.rule or rerun.calibration.answer_rule
    shipped.calibration = dataclasses.replace(shipped.calibration, answer_rule=rule,
                                              answer_policies=rerun.calibration.answer_policies,
                                              cohort_norm=rerun.calibration.cohort_norm)
    train_new, train_old = rerun.info["training"], shipped.info["training"]
    train_old["answers"] = train_new["answers"]
    cv = train_old.get("cross_validation")
    if cv is not None:
        cv["fusion_recall_at_1_all_galleries"] = train_new["cross_validation"]["fusion_recall_at_1"]
        cv["chosen_fusion_all_galleries"] = train_new["cross_validation"]["chosen_fusion"]
    train_old["answer_rule_from"] = {"rerun_max_difference": worst, "atol": a.atol}
    if a.rule and a.rule != rerun.calibration.answer_rule:
        train_old["answer_rule_from"]["override"] = {"chosen_by_cross_validation": rerun.calibration.answer_rule,
                                                     "served": a.rule, "because": a.because}
    save_bundle(shipped, a.shipped)
    logger.info("%s: answer rule %s added (the rerun agrees within %.2g)", a.shipped, rule, worst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
