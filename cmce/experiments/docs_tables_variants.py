"""Tables of training variants: the same bundle trained with one option changed, held out.

Each variant is a bundle folder named after what it changes (``none``, ``classifier``,
``no-augment``, ...), trained by ``python -m cmce train`` with the shipped bundle's options
but that one, and evaluated with ``python -m cmce evaluate --heldout --json`` (clean, and
``--gallery-degrade mix:0.6``). The renderers name a variant by its bundle folder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cmce.errors import CmceError
from cmce.experiments.docs_tables_base import bundle_name, one_evaluation, row_named
from cmce.metrics.results import Evaluation

__all__ = ["VARIANT_TABLES", "render_augment_variants", "render_identity_loss"]


def _r1(evaluation: Evaluation, name: str) -> str:
    return f"{100 * row_named(evaluation.rows, name).recall_at_1:.2f}"


def render_identity_loss(docs: Sequence[Mapping]) -> str:
    """One row per ``--identity-loss`` variant (clean held-out gallery): Recall@1 of each
    transformer, of the ensemble without the query member, and of the served ensemble.

    Example:
        >>> def ev(name, r):
        ...     rows = [{"name": n, "kind": "k", "query": "q", "gallery": ["g"], "recall_at_1": r,
        ...              "tar_at_far_1e-3": r}
        ...             for n in ("a -> q (transformer)", "CMCE ensemble without query member", "CMCE ensemble")]
        ...     return {"bundle": {"query": "q", "gallery": ["a"], "source": f"/tmp/var/{name}"}, "rows": rows}
        >>> print(render_identity_loss([ev("none", 0.9), ev("supcon", 0.8)]), end="")
        | `--identity-loss` | a → q | ensemble without query member | CMCE ensemble |
        |---|---:|---:|---:|
        | `none` | 90.00 | 90.00 | 90.00 |
        | `supcon` | 80.00 | 80.00 | 80.00 |
    """
    evaluations = [one_evaluation(d) for d in docs]
    first = evaluations[0].bundle
    arrows = [f"{g} -> {first.query}" for g in first.gallery]
    lines = [f"| `--identity-loss` | {' | '.join(a.replace('->', '→') for a in arrows)} | ensemble without query member | CMCE ensemble |",
             "|---|" + "---:|" * (len(arrows) + 2)]
    for e in evaluations:
        if e.degrade_spec is not None:
            raise CmceError(f"the identity-loss table reads clean evaluations; {bundle_name(e)}'s is {e.degrade_spec}")
        cells = [_r1(e, f"{a} (transformer)") for a in arrows]
        cells += [_r1(e, "CMCE ensemble without query member"), _r1(e, "CMCE ensemble")]
        lines.append(f"| `{bundle_name(e)}` | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


#: The rows of the augmentation table: (label, the evaluation row it reads).
AUGMENT_ROWS = (
    ("{g} → {q}", "{g} -> {q} (transformer)"),
    ("gallery models' own ensemble", "CMCE ensemble without query member"),
    ("plain mean with {q}'s own", "CMCE ensemble, plain mean (the paper)"),
    ("served (each with its cross-validated fusion)", "CMCE ensemble"),
)


def render_augment_variants(docs: Sequence[Mapping]) -> str:
    """Recall@1 clean / mixed of two variants (``--degrade-augment`` and without), from four
    evaluations in the order: first variant clean, its mixed, second variant clean, its mixed.

    Example:
        >>> def ev(name, spec, r):
        ...     rows = [{"name": n, "kind": "k", "query": "q", "gallery": ["g"], "recall_at_1": r,
        ...              "tar_at_far_1e-3": r}
        ...             for n in ("a -> q (transformer)", "CMCE ensemble without query member",
        ...                       "CMCE ensemble, plain mean (the paper)", "CMCE ensemble")]
        ...     d = {"bundle": {"query": "q", "gallery": ["a"], "source": f"/tmp/var/{name}"}, "rows": rows}
        ...     return {**d, "gallery_degrade": {"spec": spec}} if spec else d
        >>> print(render_augment_variants([ev("none", None, .98), ev("none", "mix:0.6", .9),
        ...                                ev("no-augment", None, .97), ev("no-augment", "mix:0.6", .8)]), end="")
        | Recall@1, clean / mixed | `none` | `no-augment` |
        |---|---:|---:|
        | a → q | 98.00 / 90.00 | 97.00 / 80.00 |
        | gallery models' own ensemble | 98.00 / 90.00 | 97.00 / 80.00 |
        | plain mean with q's own | 98.00 / 90.00 | 97.00 / 80.00 |
        | served (each with its cross-validated fusion) | 98.00 / 90.00 | 97.00 / 80.00 |
    """
    evaluations = [one_evaluation(d) for d in docs]
    if len(evaluations) != 4:
        raise CmceError(f"the augmentation table reads 4 evaluations (clean, mixed per variant), not {len(evaluations)}")
    pairs = [evaluations[0:2], evaluations[2:4]]
    for clean, mixed in pairs:
        if bundle_name(clean) != bundle_name(mixed) or clean.degrade_spec is not None or mixed.degrade_spec is None:
            raise CmceError("the augmentation table reads each variant's clean evaluation, then its mixed one")
    q, gallery = evaluations[0].bundle.query, evaluations[0].bundle.gallery
    lines = [f"| Recall@1, clean / mixed | {' | '.join(f'`{bundle_name(c)}`' for c, _ in pairs)} |",
             "|---|" + "---:|" * len(pairs)]
    for label, row in AUGMENT_ROWS:
        for g in (gallery if "{g}" in row else (None,)):
            name = row.format(g=g, q=q)
            cells = [f"{_r1(c, name)} / {_r1(m, name)}" for c, m in pairs]
            lines.append(f"| {label.format(g=g, q=q)} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


VARIANT_TABLES: dict[str, Callable[[Sequence[Mapping]], str]] = {
    "identity-loss": render_identity_loss,
    "augment-variants": render_augment_variants,
}
