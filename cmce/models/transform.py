"""Embedding transformation networks: gallery model space -> query model space.

Each gallery model ``g`` gets a small residual MLP ``T_g`` so that ``T_g(g(x))`` lands
on the frozen query model's embedding ``q(x)`` of the same image (the query model
defines the shared space; nothing of it is trained). Losses:

* ``pull``: ``1 - cos(T(g(x)), q(x))``, per image;
* identity term, one of
  * ``none`` (default; best on validation identities of lfw-train, see README): pull only;
  * ``classifier``: cross-entropy of a *frozen* cosine classifier whose
    weights are the per-identity centroids of the query embeddings of the training
    images, scale ``s`` (NormFace-style). It pulls ``T(g(x))`` towards its identity's
    region of the query space rather than onto one possibly noisy query vector;
  * ``supcon``: supervised contrastive loss between transformed gallery vectors and the
    query vectors of the batch (same identity = positives).

Training: identity-disjoint validation split, Adam, early stopping on validation
asymmetric Recall@1 (query vectors vs transformed gallery vectors), fixed seeds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmce.errors import CmceError
from cmce.metrics.retrieval import recall_at_k

logger = logging.getLogger(__name__)

__all__ = [
    "EmbeddingTransformer",
    "TrainConfig",
    "TransformerConfig",
    "create_transformer",
    "first_image_protocol",
    "fit_linear_map",
    "quantize_transformer",
    "train_transformer",
    "transform_embeddings",
]

IDENTITY_LOSSES = ("classifier", "supcon", "none")


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture of one transformation network.

    Attributes:
        in_dim: gallery model embedding size.
        out_dim: query model embedding size.
        hidden: width of the residual blocks.
        blocks: number of residual blocks.
        dropout: dropout inside the blocks (training only).
    """

    in_dim: int
    out_dim: int
    hidden: int = 384
    blocks: int = 2
    dropout: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """How a transformation network is trained.

    Attributes:
        identity_loss: one of ``IDENTITY_LOSSES``.
        identity_weight: weight of the identity term against the pull term.
        scale: logit scale of the cosine classifier / inverse temperature for supcon.
        epochs: maximum epochs.
        batch_size: images per step.
        lr: Adam learning rate.
        weight_decay: AdamW decoupled weight decay.
        patience: epochs without a better validation Recall@1 before stopping.
        seed: torch / numpy seed.
    """

    identity_loss: str = "none"
    identity_weight: float = 1.0
    scale: float = 30.0
    epochs: int = 20
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 1e-4
    patience: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.identity_loss not in IDENTITY_LOSSES:
            raise CmceError(
                f"identity_loss must be one of {IDENTITY_LOSSES}, got {self.identity_loss!r}"
            )


class _Block(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, width),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(width, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class EmbeddingTransformer(nn.Module):
    """Residual MLP with a linear shortcut; maps (N, in_dim) to (N, out_dim) unit vectors."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.skip = nn.Linear(config.in_dim, config.out_dim, bias=False)
        self.inp = nn.Linear(config.in_dim, config.hidden)
        self.blocks = nn.Sequential(*[_Block(config.hidden, config.dropout) for _ in range(config.blocks)])
        self.out = nn.Sequential(nn.LayerNorm(config.hidden), nn.Linear(config.hidden, config.out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(x) + self.out(self.blocks(self.inp(x)))
        return F.normalize(y, dim=-1)


def create_transformer(config: TransformerConfig) -> EmbeddingTransformer:
    """Build an untrained transformation network for ``config``."""
    return EmbeddingTransformer(config)


def quantize_transformer(module: EmbeddingTransformer) -> EmbeddingTransformer:
    """A copy of ``module`` whose linear layers run in int8 (dynamic quantization, CPU).

    Weights are quantized per output channel, activations per batch at run time; on
    CPUs with int8 dot-product instructions (VNNI) it runs up to twice as fast as
    float32. Its unit outputs stay within a few 1e-3 of cosine distance of the float32
    ones (``tests/models/test_transform_quantized.py``; ``scripts/upgrade_int8_check.py``
    measures the effect on retrieval). Used for bulk re-projection only, on request.
    """
    import copy
    import warnings

    with warnings.catch_warnings():  # torch marks eager-mode quantization as moving to torchao
        warnings.simplefilter("ignore")
        out = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(module).cpu().eval(), {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
            dtype=torch.qint8)
    out.config = module.config
    return out


def transform_embeddings(module: EmbeddingTransformer, embeddings: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Apply a transformation network.

    Args:
        module: from ``create_transformer`` / a bundle.
        embeddings: (N, in_dim) gallery model embeddings.

    Returns:
        (N, out_dim) float32 unit vectors in the query model's space.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[1] != module.config.in_dim:
        raise CmceError(
            f"transformer expects (N, {module.config.in_dim}) embeddings, got {embeddings.shape}"
        )
    module.eval()
    device = next(module.parameters()).device
    out = np.empty((len(embeddings), module.config.out_dim), np.float32)
    with torch.inference_mode():
        for i in range(0, len(embeddings), batch_size):
            x = torch.from_numpy(embeddings[i : i + batch_size]).to(device)
            out[i : i + batch_size] = module(x).float().cpu().numpy()
    return out


def fit_linear_map(gallery: np.ndarray, query: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Least-squares linear map W with ``gallery @ W ~= query`` (the no-learning baseline).

    Args:
        gallery: (N, Dg) gallery model embeddings.
        query: (N, Dq) query model embeddings of the same images.
        ridge: Tikhonov regulariser relative to the mean eigenvalue.

    Returns:
        (Dg, Dq) float32 matrix; apply and L2-normalise the rows.
    """
    g = np.asarray(gallery, np.float64)
    q = np.asarray(query, np.float64)
    gram = g.T @ g
    lam = ridge * np.trace(gram) / gram.shape[0]
    return np.linalg.solve(gram + lam * np.eye(gram.shape[0]), g.T @ q).astype(np.float32)


def first_image_protocol(labels: np.ndarray | list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The 1:N identification split used for evaluation and early stopping.

    Per identity with >= 2 images, the first image (in the given order, i.e. by file
    name) joins the gallery and the others are queries; identities with one image join
    the gallery as distractors.

    Returns:
        (gallery_index, query_index) int arrays into ``labels``.
    """
    labels = np.asarray(labels)
    seen: set = set()
    gallery, query = [], []
    for i, lab in enumerate(labels):
        if lab in seen:
            query.append(i)
        else:
            seen.add(lab)
            gallery.append(i)
    return np.array(gallery, dtype=np.int64), np.array(query, dtype=np.int64)


@dataclass(frozen=True)
class TrainResult:
    """What training produced: the module, and how it went."""

    module: EmbeddingTransformer
    best_epoch: int
    best_val_recall_at_1: float
    history: tuple[dict, ...]


def train_transformer(
    gallery_train: np.ndarray,
    query_train: np.ndarray,
    labels_train: np.ndarray,
    gallery_val: np.ndarray | None,
    query_val: np.ndarray | None,
    labels_val: np.ndarray | None,
    *,
    arch: TransformerConfig | None = None,
    config: TrainConfig = TrainConfig(),
    progress: bool = False,
    fixed_epochs: int | None = None,
    adapt_queries: bool = False,
) -> TrainResult:
    """Train one transformation network (gallery space -> query space).

    Args:
        gallery_train: (N, Dg) gallery model embeddings of the training images.
        query_train: (N, Dq) query model embeddings of the same images.
        labels_train: (N,) identity labels.
        gallery_val, query_val, labels_val: the same for identity-disjoint validation
            images; validation Recall@1 uses ``first_image_protocol`` (transformed
            gallery side, query-model query side).
        arch: network shape; default ``TransformerConfig(Dg, Dq)``.
        config: losses and optimisation.
        progress: log every epoch at INFO level.
        fixed_epochs: train exactly this many epochs (of the same ``config.epochs``-long
            learning-rate schedule) without early stopping and return the last state;
            the validation arrays may then be None. Used to refit on train + validation
            identities once early stopping has chosen the epoch count.
        adapt_queries: the network maps the *query* side instead (a distillation-style
            query adapter: input = the query model's embedding, target = the gallery
            model's): validation Recall@1 then transforms the validation queries and
            matches them against the untouched target-model gallery vectors.

    Returns:
        TrainResult with the module at its best validation epoch (or after
        ``fixed_epochs``; then ``best_val_recall_at_1`` is NaN when there is no
        validation set).
    """
    g_tr = np.asarray(gallery_train, np.float32)
    q_tr = np.asarray(query_train, np.float32)
    if len(g_tr) != len(q_tr) or len(g_tr) != len(labels_train):
        raise CmceError("gallery, query and labels must have the same number of rows")
    if len(g_tr) == 0:
        raise CmceError("no training embeddings")
    arch = arch or TransformerConfig(g_tr.shape[1], q_tr.shape[1])
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    module = create_transformer(arch)
    with torch.no_grad():  # start from the least-squares map: training only has to improve it
        module.skip.weight.copy_(torch.from_numpy(fit_linear_map(g_tr, q_tr).T))
        module.out[1].weight.zero_()  # the residual MLP starts as a no-op
        module.out[1].bias.zero_()

    y_tr, centroids = _identity_centroids(labels_train, q_tr)
    gx, qx, yx = torch.from_numpy(g_tr), torch.from_numpy(q_tr), torch.from_numpy(y_tr)

    if fixed_epochs is not None and not 0 <= fixed_epochs <= config.epochs:
        raise CmceError(f"fixed_epochs must be within 0..{config.epochs}, got {fixed_epochs}")
    has_val = gallery_val is not None and labels_val is not None and len(labels_val) > 0
    if not has_val and fixed_epochs is None:
        raise CmceError("early stopping needs validation embeddings")
    gi, qi = first_image_protocol(labels_val) if has_val else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    lv = np.asarray(labels_val) if has_val else np.zeros(0)
    opt = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)

    def val_recall() -> float:
        return _val_recall(module, gallery_val, query_val, lv, gi, qi, adapt_queries)

    best = (val_recall(), 0, {k: v.clone() for k, v in module.state_dict().items()})
    history = [{"epoch": 0, "val_recall_at_1": best[0]}]
    stale = 0
    last_epoch = config.epochs if fixed_epochs is None else fixed_epochs
    for epoch in range(1, last_epoch + 1):
        module.train()
        perm = torch.from_numpy(rng.permutation(len(g_tr)))
        total = _train_epoch(module, opt, config, perm, gx, qx, yx, centroids)
        sched.step()
        r1 = val_recall()
        history.append({"epoch": epoch, "loss": total / len(g_tr), "val_recall_at_1": r1})
        if progress:
            logger.info("epoch %d loss %.4f val R@1 %.4f", epoch, total / len(g_tr), r1)
        if fixed_epochs is not None:
            best = (r1, epoch, None)
            continue
        if r1 > best[0] or np.isnan(best[0]):
            best = (r1, epoch, {k: v.clone() for k, v in module.state_dict().items()})
            stale = 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best[2] is not None:
        module.load_state_dict(best[2])
    module.eval()
    return TrainResult(module, best[1], float(best[0]), tuple(history))


def _identity_centroids(labels: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """(N,) identity index per training row, and the (I, Dq) unit centroids of each identity's query
    embeddings: the frozen cosine classifier of the ``classifier`` identity loss."""
    names, y_tr = np.unique(np.asarray(labels), return_inverse=True)
    cent = np.zeros((len(names), query.shape[1]), np.float32)
    np.add.at(cent, y_tr, query)
    cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
    return y_tr, torch.from_numpy(cent)


def _batch_loss(module: EmbeddingTransformer, config: TrainConfig, x: torch.Tensor, q: torch.Tensor, y: torch.Tensor,
                centroids: torch.Tensor) -> torch.Tensor:
    """The pull term on one batch, plus ``config``'s identity term (the module docstring's losses)."""
    t = module(x)
    loss = (1.0 - (t * q).sum(-1)).mean()
    if config.identity_loss == "classifier":
        loss = loss + config.identity_weight * F.cross_entropy(config.scale * t @ centroids.T, y)
    elif config.identity_loss == "supcon":
        logits = config.scale * t @ q.T
        pos = (y[:, None] == y[None, :]).float()
        logp = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        loss = loss + config.identity_weight * (-(logp * pos).sum(1) / pos.sum(1)).mean()
    return loss


def _train_epoch(module: EmbeddingTransformer, opt: torch.optim.Optimizer, config: TrainConfig, perm: torch.Tensor,
                 gx: torch.Tensor, qx: torch.Tensor, yx: torch.Tensor, centroids: torch.Tensor) -> float:
    """One optimiser step per batch of ``perm``; the sum over batches of loss times batch size."""
    total = 0.0
    for s in range(0, len(perm), config.batch_size):
        b = perm[s : s + config.batch_size]
        loss = _batch_loss(module, config, gx[b], qx[b], yx[b], centroids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(b)
    return total


def _val_recall(module: EmbeddingTransformer, gallery_val, query_val, lv: np.ndarray, gi: np.ndarray, qi: np.ndarray,
                adapt_queries: bool) -> float:
    """Validation Recall@1 under ``first_image_protocol`` (``gi``, ``qi``); NaN without queries."""
    if len(qi) == 0:
        return float("nan")
    if adapt_queries:
        tq = transform_embeddings(module, np.asarray(gallery_val, np.float32)[qi])
        sim = tq @ np.asarray(query_val, np.float32)[gi].T
    else:
        tg = transform_embeddings(module, np.asarray(gallery_val, np.float32)[gi])
        sim = np.asarray(query_val, np.float32)[qi] @ tg.T
    return recall_at_k(sim, lv[qi], lv[gi], ks=(1,))[1]
