"""The paper's ablations on the models available here: ``evaluate --heldout --ablations``.

Every variant is trained on the bundle's own non-held-out identities (train +
validation, the bundle's split), for the epoch count the bundle's early stopping chose,
and measured on the held-out identities under ``evaluate``'s protocol, with the same
query side (the query model's own embedding). Gallery models only (the paper's setting):
the query model's own gallery embedding is not a member here.

Ensemble alternatives (section 4 of the paper):

* ``independent + mean``: one transformer per gallery model, trained alone, then the
  mean of the transformed embeddings (the method);
* ``end-to-end mean``: the transformers trained jointly on the loss of the mean;
* ``end-to-end weighted mean``: the same with learned member weights (softmax);
* ``concat + one transformer``: the gallery embeddings concatenated, one transformer
  (a reduction to the query dimension) trained on that.

Diversity: ``D-T`` (one gallery model, transformers from different seeds), ``D-TGA``
(different gallery models, which here also differ in architecture and training data).
``D-TG`` (same architecture, different training data) needs two gallery models of one
architecture, and the only such pair (FaceNet on CASIA-WebFace and on VGGFace2) has
VGGFace2 weights that only download online: it is reported as unavailable.

The ensemble-size curve: Recall@1 of the mean over every subset of k members of the
pool (every gallery model's seed-0 transformer, plus the D-T seeds), averaged over subsets.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from cmce.method.bundle_model import Bundle
from cmce.metrics.intervals import cluster_bootstrap, format_with_interval
from cmce.metrics.retrieval import l2_normalise, top1_hits
from cmce.models.embed import EmbeddedFiles
from cmce.models.transform import (
    TrainConfig,
    TransformerConfig,
    create_transformer,
    first_image_protocol,
    fit_linear_map,
    train_transformer,
    transform_embeddings,
)

logger = logging.getLogger(__name__)

__all__ = ["run_ablations", "train_jointly"]


def train_jointly(inputs: Sequence[np.ndarray], target: np.ndarray, *, hidden: int, epochs: int,
                  config: TrainConfig, weighted: bool = False):
    """Transformers trained together on the cosine loss of their (weighted) mean.

    Each network starts like ``train_transformer``'s (its least-squares map, residual
    MLP off); the learning-rate schedule and batches are the same.

    Returns:
        (modules, member weights as a numpy array).
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    mods = []
    for x in inputs:
        m = create_transformer(TransformerConfig(x.shape[1], target.shape[1], hidden=hidden))
        with torch.no_grad():
            m.skip.weight.copy_(torch.from_numpy(fit_linear_map(x, target).T))
            m.out[1].weight.zero_()
            m.out[1].bias.zero_()
        mods.append(m)
    logits = torch.zeros(len(inputs), requires_grad=weighted)
    params = [p for m in mods for p in m.parameters()] + ([logits] if weighted else [])
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    xs = [torch.from_numpy(np.asarray(x, np.float32)) for x in inputs]
    t = torch.from_numpy(np.asarray(target, np.float32))
    for _ in range(epochs):
        for m in mods:
            m.train()
        perm = torch.from_numpy(rng.permutation(len(t)))
        for s in range(0, len(perm), config.batch_size):
            b = perm[s:s + config.batch_size]
            w = torch.softmax(logits, 0)
            fused = F.normalize(sum(w[i] * m(x[b]) for i, (m, x) in enumerate(zip(mods, xs))), dim=-1)
            loss = (1.0 - (fused * t[b]).sum(-1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    for m in mods:
        m.eval()
    return mods, torch.softmax(logits.detach(), 0).numpy()


@dataclass(frozen=True)
class _Variants:
    """The ablation networks, trained.

    Attributes:
        nets: ``(gallery model, seed)`` -> that model's transformer trained alone.
        joint: one transformer per gallery model, trained end to end on their mean.
        joint_weighted: the same with learned member weights ``weights``.
        weights: (M,) the weighted mean's member weights.
        concat: one transformer over the concatenated gallery embeddings.
        epochs: gallery model -> the epoch count its transformer trains for.
    """

    nets: dict
    joint: list
    joint_weighted: list
    weights: np.ndarray
    concat: torch.nn.Module
    epochs: dict[str, int]


def _train_variants(train: EmbeddedFiles, train_labels: Sequence[str], fit_rows: np.ndarray, bundle: Bundle,
                    seeds: Sequence[int]) -> _Variants:
    """Every ablation variant, trained on ``fit_rows`` with the bundle's width, settings and epoch counts."""
    gms = list(bundle.gallery_models)
    lab = np.asarray(train_labels)
    rows = np.asarray(fit_rows, bool) & train.found
    emb = train.embeddings
    q = emb[bundle.query_model][rows]
    t_info = bundle.info.get("training", {})
    hidden = int(t_info.get("hidden", 384))
    cfg = TrainConfig(**{k: v for k, v in t_info.get("train_config", {}).items() if k in TrainConfig.__dataclass_fields__})
    epochs = {m: int(t_info.get("transformers", {}).get(m, {}).get("best_epoch", cfg.epochs)) or 1 for m in gms}

    def fit(m_inputs: np.ndarray, epochs_: int, seed: int):
        return train_transformer(m_inputs, q, lab[rows], None, None, None,
                                 arch=TransformerConfig(m_inputs.shape[1], q.shape[1], hidden=hidden),
                                 config=replace(cfg, seed=seed), fixed_epochs=epochs_).module

    logger.info("ablations: training %d seeds x %d gallery models", len(seeds), len(gms))
    nets = {(m, s): fit(emb[m][rows], epochs[m], s) for m in gms for s in seeds}
    mean_epochs = int(round(np.mean(list(epochs.values()))))
    joint, _ = train_jointly([emb[m][rows] for m in gms], q, hidden=hidden, epochs=mean_epochs, config=cfg)
    joint_w, weights = train_jointly([emb[m][rows] for m in gms], q, hidden=hidden, epochs=mean_epochs, config=cfg,
                                     weighted=True)
    concat = fit(np.concatenate([emb[m][rows] for m in gms], axis=1), mean_epochs, seeds[0])
    return _Variants(nets, joint, joint_w, weights, concat, epochs)


def _size_curve(views: dict, pool: list, qv: np.ndarray, q_lab: np.ndarray, g_lab: np.ndarray) -> list[dict]:
    """Recall@1 of the mean over every subset of k members of ``pool``, averaged over subsets, per k."""
    curve = []
    for k in range(1, len(pool) + 1):
        r1s = [float(np.nanmean(top1_hits(qv @ l2_normalise(np.mean([views[p] for p in sub], 0)).T, q_lab, g_lab)))
               for sub in itertools.combinations(pool, k)]
        curve.append({"members": k, "recall_at_1": float(np.mean(r1s)), "subsets": len(r1s)})
    return curve


def _measure_condition(v: _Variants, bundle: Bundle, seeds: Sequence[int], ho: EmbeddedFiles, hl: np.ndarray,
                       ci_resamples: int) -> tuple[list[tuple[str, str, dict]], list[dict]]:
    """One held-out gallery condition: ``(name, group, figures)`` of every variant, in table order, and
    the ensemble-size curve."""
    gms = list(bundle.gallery_models)
    idx = np.flatnonzero(ho.found)
    gi_l, qi_l = first_image_protocol(hl[idx])
    gi, qi = idx[gi_l], idx[qi_l]
    qv, g_lab, q_lab = ho.embeddings[bundle.query_model][qi], hl[gi], hl[qi]
    gal = {m: ho.embeddings[m][gi] for m in gms}
    views = {(m, s): transform_embeddings(v.nets[(m, s)], gal[m]) for m in gms for s in seeds}
    measured = []

    def measure(name: str, group: str, vec: np.ndarray) -> None:
        hits = top1_hits(qv @ l2_normalise(vec).T, q_lab, g_lab)
        r1, lo, hi = cluster_bootstrap([hits], q_lab, resamples=ci_resamples)
        measured.append((name, group, {"recall_at_1": r1, "recall_at_1_ci95": [lo, hi]}))

    s0 = seeds[0]
    for m in gms:
        measure(f"{m} alone (one transformer)", "members", views[(m, s0)])
    measure("independent + mean (the method)", "ensemble", np.mean([views[(m, s0)] for m in gms], 0))
    jv = [transform_embeddings(j, gal[m]) for j, m in zip(v.joint, gms)]
    measure("end-to-end mean", "ensemble", np.mean(jv, 0))
    jw = [transform_embeddings(j, gal[m]) for j, m in zip(v.joint_weighted, gms)]
    measure(f"end-to-end weighted mean (weights {', '.join(f'{w:.2f}' for w in v.weights)})", "ensemble",
            np.einsum("m,mgd->gd", v.weights, np.stack(jw)))
    measure("concat + one transformer", "ensemble",
            transform_embeddings(v.concat, np.concatenate([gal[m] for m in gms], axis=1)))
    for m in gms:
        measure(f"D-T: {m}, {len(seeds)} transformers (seeds {', '.join(map(str, seeds))})", "diversity",
                np.mean([views[(m, s)] for s in seeds], 0))
    measure(f"D-TGA: {' + '.join(gms)} (one transformer each)", "diversity",
            np.mean([views[(m, s0)] for m in gms], 0))
    return measured, _size_curve(views, [(m, s) for m in gms for s in seeds], qv, q_lab, g_lab)


def run_ablations(train: EmbeddedFiles, train_labels: Sequence[str], fit_rows: np.ndarray,
                  heldout: dict[str, EmbeddedFiles], heldout_labels: Sequence[str], bundle: Bundle,
                  *, seeds: Sequence[int] = (0, 1, 2), ci_resamples: int = 500) -> dict:
    """Train the ablation variants and measure them on held-out galleries.

    Args:
        train: embeddings of the training dataset (every backbone of ``bundle``).
        train_labels: identity per training file.
        fit_rows: (N,) bool, the rows to train on (the bundle's train + validation identities).
        heldout: gallery condition name (``"clean"``, ``"mix:0.6"``...) -> held-out embeddings.
        heldout_labels: identity per held-out file.
        bundle: supplies the query model, gallery models, width and epoch counts.

    Returns:
        JSON-ready ``{"rows": [{"group", "name", condition: {"recall_at_1", "recall_at_1_ci95"}}],
        "ensemble_size": {condition: [{"members", "recall_at_1", "subsets"}]}, "unavailable": [...]}``.
    """
    variants = _train_variants(train, train_labels, fit_rows, bundle, seeds)
    hl = np.asarray(heldout_labels)
    out_rows: dict[str, dict] = {}
    sizes: dict[str, list] = {}
    for cond, ho in heldout.items():
        measured, sizes[cond] = _measure_condition(variants, bundle, seeds, ho, hl, ci_resamples)
        for name, group, figures in measured:
            out_rows.setdefault(name, {"group": group, "name": name})[cond] = figures
    gms = list(bundle.gallery_models)
    return {
        "rows": list(out_rows.values()),
        "ensemble_size": sizes,
        "pool": [f"{m} seed {s}" for m in gms for s in seeds],
        "epochs": variants.epochs,
        "unavailable": ["D-TG (same architecture, different training data): the only such pair here is FaceNet "
                        "on CASIA-WebFace and on VGGFace2, and VGGFace2 weights only download online"],
    }


def render_ablations(result: dict) -> str:
    """Markdown table of ``run_ablations``' rows, one column per gallery condition."""
    conds = list(result["ensemble_size"])
    out = ["| group | variant | " + " | ".join(f"R@1, {c} gallery (95% CI)" for c in conds) + " |",
           "|---|---|" + "---:|" * len(conds)]
    for r in result["rows"]:
        cells = []
        for c in conds:
            v = r.get(c)
            cells.append("—" if v is None else
                         format_with_interval(v["recall_at_1"], v["recall_at_1_ci95"], interval_digits=1))
        out.append(f"| {r['group']} | {r['name']} | " + " | ".join(cells) + " |")
    out += ["", "| members (of " + str(len(result["pool"])) + ") | " + " | ".join(f"R@1, {c}" for c in conds) + " |",
            "|---:|" + "---:|" * len(conds)]
    for i in range(len(result["pool"])):
        out.append(f"| {i + 1} | " + " | ".join(f"{100 * result['ensemble_size'][c][i]['recall_at_1']:.2f}"
                                                for c in conds) + " |")
    out += ["", "Not available here: " + "; ".join(result["unavailable"]) + "."]
    return "\n".join(out) + "\n"
