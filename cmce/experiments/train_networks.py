"""The networks a bundle trains: its transformers and its learned fusion.

``fit_network`` trains one transformer with early stopping (and the refit on train +
validation identities); ``augmented_pairs`` adds degraded copies of training photos
(``Degraded``: a mixed-quality gallery, or ``whole_galleries``' every-photo-degraded
ones) as further training pairs; ``fit_fusion`` learns how gallery members are fused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cmce.errors import DatasetError
from cmce.method.ensemble import FUSIONS, FusionGate, fusion_features
from cmce.models.embed import EmbeddedFiles, EmbeddingCache
from cmce.models.transform import TrainConfig, TransformerConfig, train_transformer

__all__ = ["Degraded", "augment_copies", "augmented_pairs", "fit_fusion", "fit_network", "identity_targets",
           "whole_galleries"]


def fit_network(
    inputs: np.ndarray,
    targets: np.ndarray,
    labels: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    *,
    hidden: int,
    config: TrainConfig,
    refit: bool,
    progress: bool = False,
    adapt_queries: bool = False,
):
    """Train one network ``inputs -> targets`` with early stopping, optionally refit.

    Early stopping on the ``val`` identities picks the epoch count; with ``refit`` the
    network is then trained again from the same start on ``train | val`` for exactly
    that many epochs (of the same schedule), so the final network sees every
    non-held-out identity. Epoch 0 (early stopping kept the least-squares start) gives
    the least-squares start fitted on ``train | val``.

    Returns:
        (final module, early-stopped module trained on ``train`` only, history dict for
        the bundle's training summary). Without ``refit`` both modules are the same.
    """
    arch = TransformerConfig(inputs.shape[1], targets.shape[1], hidden=hidden)
    res = train_transformer(
        inputs[train], targets[train], labels[train], inputs[val], targets[val], labels[val],
        arch=arch, config=config, progress=progress, adapt_queries=adapt_queries,
    )
    hist = {"best_epoch": res.best_epoch, "val_recall_at_1": res.best_val_recall_at_1,
            "epochs_run": len(res.history) - 1}
    if not refit:
        return res.module, res.module, hist
    both = train | val
    final = train_transformer(inputs[both], targets[both], labels[both], None, None, None, arch=arch,
                              config=config, fixed_epochs=res.best_epoch, adapt_queries=adapt_queries)
    hist["refit_images"] = int(both.sum())
    return final.module, res.module, hist


@dataclass(frozen=True)
class Degraded:
    """Degraded copies of some photos, for training on and choosing by mixed-quality galleries.

    Attributes:
        embeddings: backbone -> (N, D), rows where ``mask`` hold the degraded copy's embedding.
        probability: (N,) detector probability of the degraded copy (where ``mask``).
        mask: (N,) which photos have a degraded copy (a face was found in it).
    """

    embeddings: dict
    probability: np.ndarray
    mask: np.ndarray

    def mixed(self, emb: dict, prob: np.ndarray, rows: np.ndarray) -> tuple[dict, np.ndarray]:
        """``emb``/``prob`` restricted to ``rows`` with every photo that has a copy swapped for it."""
        m = self.mask[rows]
        out = {k: np.where(m[:, None], self.embeddings[k][rows], v[rows]) for k, v in emb.items()}
        return out, np.where(m, self.probability[rows], prob[rows])


def whole_galleries(embedded: EmbeddedFiles, gallery_positions: np.ndarray, kinds: Sequence[str], seed: int,
                    models: Sequence[str], cache: EmbeddingCache | None, progress: bool) -> dict[str, Degraded]:
    """Per kind, every gallery photo degraded that way and detected as ``cmce index`` detects
    (the i-th kind seeded ``seed + i``)."""
    from cmce.experiments.degrade import DegradeSpec, degrade_gallery
    from cmce.faces.detector import create_detector

    detector = create_detector("index")
    out = {}
    for i, kind in enumerate(kinds):
        dfiles, _, dmask = degrade_gallery(embedded, gallery_positions, DegradeSpec(1.0, (kind,)), seed=seed + i,
                                           models=models, cache=cache, progress=progress, detector=detector)
        out[kind] = Degraded(dfiles.embeddings, dfiles.detection_probability, dmask)
    return out


def augmented_pairs(inputs: np.ndarray, targets: np.ndarray, labels: np.ndarray, train: np.ndarray,
                    val: np.ndarray, copies: Sequence[tuple[np.ndarray, np.ndarray]] = ()):
    """Training pairs plus, for each training photo with a degraded copy, (copy -> clean target).

    The transformed embedding of a degraded gallery photo is trained to land on the query
    model's embedding of the clean photo. Validation stays clean.

    Args:
        copies: per set of degraded copies (a mixed gallery, a crop or tiny gallery),
            ``(inputs of the copies (N, D), which photos have one (N,))``.

    Returns:
        (inputs, targets, labels, train, val), extended.
    """
    n = len(inputs)
    xs, ys, labs, trs, vas = [inputs], [targets], [labels], [train], [val]
    for copy_inputs, mask in copies:
        extra = mask & train[:n]
        xs.append(copy_inputs[extra])
        ys.append(targets[extra])
        labs.append(labels[extra])
        trs.append(np.ones(int(extra.sum()), bool))
        vas.append(np.zeros(int(extra.sum()), bool))
    if len(xs) == 1:
        return inputs, targets, labels, train, val
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(labs), np.concatenate(trs), np.concatenate(vas)


def augment_copies(model: str, sets: Sequence[Degraded]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``augmented_pairs``'s copies of one backbone from sets of degraded copies."""
    return [(d.embeddings[model], d.mask) for d in sets]


def identity_targets(query_emb: np.ndarray, labels: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(N, D) per photo: the mean query-model embedding of its identity's *other* photos (zeros if none)."""
    out = np.zeros_like(query_emb)
    gal = set(np.flatnonzero(gallery).tolist())
    by_id: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_id.setdefault(lab, []).append(i)
    for rows in by_id.values():
        for i in rows:
            if i in gal:
                others = [j for j in rows if j != i]
                if others:
                    c = query_emb[others].mean(0)
                    out[i] = c / max(float(np.linalg.norm(c)), 1e-12)
    return out


def fit_fusion(kind: str, members: tuple[str, ...], vectors: list[np.ndarray], present: list[np.ndarray] | None,
               probability: np.ndarray, targets: np.ndarray, *, hidden: int = 16, steps: int = 300,
               lr: float = 0.02, weight_decay: float = 1e-3, seed: int = 0) -> FusionGate:
    """Learn member weights so that fused gallery vectors land on their identity.

    Loss: ``1 - cos(fused, target)`` per gallery photo, where the target is the mean
    query-model embedding of the identity's *other* photos (what its queries look
    like); rows whose target is zero are left out. ``weighted`` learns one logit per
    member; ``gated`` adds a ``hidden``-unit tanh layer over ``fusion_features``.
    Starts from equal weights (the plain mean). Full batch, Adam: a second or so.
    """
    import torch

    if kind == "mean":
        return FusionGate()
    if kind not in FUSIONS:
        raise DatasetError(f"fusion must be one of {FUSIONS}, got {kind!r}")
    keep = np.linalg.norm(targets, axis=1) > 0
    if keep.sum() < 10:
        raise DatasetError(f"too few gallery photos with another photo of their identity to learn a fusion ({keep.sum()})")
    m = len(vectors)
    torch.manual_seed(seed)
    x = torch.from_numpy(np.stack([v[keep] for v in vectors], 1).astype(np.float32))  # (N, M, D)
    pres = torch.from_numpy(np.stack([np.ones(len(probability), bool) if present is None else np.asarray(present[i], bool)
                                      for i in range(m)], 1)[keep])
    feats = torch.from_numpy(fusion_features(vectors, present, probability)[keep])
    tgt = torch.from_numpy(targets[keep].astype(np.float32))
    # cos(sum_i w_i x_i, t) needs only x_i . t and x_i . x_j: precomputed, each step is O(N M^2)
    xt = torch.einsum("nmd,nd->nm", x, tgt)
    xx = torch.einsum("nmd,nkd->nmk", x, x)
    bias = torch.zeros(m, requires_grad=True)
    params = [bias]
    if kind == "gated":
        w1 = torch.nn.Parameter(0.1 * torch.randn(hidden, feats.shape[1]))
        b1 = torch.nn.Parameter(torch.zeros(hidden))
        w2 = torch.nn.Parameter(torch.zeros(m, hidden))
        params += [w1, b1, w2]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        logits = bias.expand(len(x), m)
        if kind == "gated":
            logits = logits + torch.tanh(feats @ w1.T + b1) @ w2.T
        w = torch.softmax(logits.masked_fill(~pres, -1e9), dim=1)
        num = (w * xt).sum(1)
        norm = torch.sqrt(torch.einsum("nm,nmk,nk->n", w, xx, w).clamp_min(1e-12))
        loss = (1.0 - num / norm).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    if kind == "weighted":
        return FusionGate("weighted", members, bias=tuple(float(b) for b in bias.detach()))
    return FusionGate("gated", members, w1=tuple(tuple(float(v) for v in r) for r in w1.detach()),
                      b1=tuple(float(v) for v in b1.detach()), w2=tuple(tuple(float(v) for v in r) for r in w2.detach()),
                      bias=tuple(float(b) for b in bias.detach()))
