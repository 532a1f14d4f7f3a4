"""Trivial baselines: the numbers a model must beat before its score says it learned anything.

Each task's `baseline()` gathers its own splits and calls one of these; nothing here knows about
files, datamodules or the harness (pure torch). All of it is deterministic: no global RNG is read.

- sequences: chance and a per-position majority class fitted on train (`per_position_majority`);
- images: a linear probe on pixels (`linear_probe_accuracy`) and the majority class;
- sets: the element farthest from the set's mean (`farthest_from_mean`);
- anomaly maps: deviation from the mean good image (`deviation_maps`), scored by `auroc`;
- text: count bigram, trigram and 4-gram models over the task's own (context, target) pairs (`count_lm`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

VERSION = 2  # bump when any baseline here would give a different number (so stored ones are recomputed)
IGNORE = -100  # targets with this value are not scored (as in `F.cross_entropy`)
PROBE_RANK = 128  # principal components the linear probe reads

# ----------------------------------------------------------------------------- classification


def chance_accuracy(targets: Tensor, ignore_index: int = IGNORE) -> float:
    """Accuracy of guessing uniformly among the target values that occur (1 / their number)."""
    values = targets[targets != ignore_index].unique()
    return 1.0 / max(1, len(values))


def per_position_majority(targets_NT: Tensor, n_classes: int, ignore_index: int = IGNORE) -> Tensor:
    """(T,) the most frequent class at each position (ties: the smallest class; none: class 0)."""
    keep_NT = targets_NT != ignore_index
    counts_TC = torch.zeros(targets_NT.shape[1], n_classes, dtype=torch.long)
    counts_TC.scatter_add_(1, targets_NT.where(keep_NT, 0).T, keep_NT.T.long())
    return counts_TC.argmax(dim=1)


def accuracy(predictions: Tensor, targets: Tensor, ignore_index: int = IGNORE) -> float:
    """Fraction of the scored targets (not `ignore_index`) predicted exactly; broadcasts predictions."""
    keep = targets != ignore_index
    correct = (predictions.expand_as(targets) == targets) & keep
    return float(correct.sum()) / max(1, int(keep.sum()))


def position_scores(train_y_NT: Tensor, test_y_NT: Tensor, ignore_index: int = IGNORE) -> dict[str, float]:
    """Test accuracy of chance and of the per-position majority class fitted on `train_y_NT`."""
    n_classes = int(torch.cat([train_y_NT.flatten(), test_y_NT.flatten()]).max()) + 1
    majority_T = per_position_majority(train_y_NT, n_classes, ignore_index)
    return {
        "chance": chance_accuracy(train_y_NT, ignore_index),
        "per-position majority (train)": accuracy(majority_T, test_y_NT, ignore_index),
    }


def majority_class_accuracy(train_y: Tensor, test_y: Tensor) -> float:
    """Accuracy on `test_y` of always predicting the most frequent class of `train_y`."""
    return accuracy(torch.bincount(train_y).argmax(), test_y)


def principal_axes(x_ND: Tensor, k: int, n_iter: int = 2, seed: int = 0) -> Tensor:
    """(D, k) leading principal axes of the centred rows of `x_ND` (randomised subspace iteration).

    Exact once k reaches D or N; otherwise the standard randomised range finder (Halko et al. 2011)
    with `n_iter` power iterations, seeded locally so the result never depends on the global RNG.
    """
    x_ND = x_ND - x_ND.mean(dim=0)
    k = min(k, *x_ND.shape)
    width = min(k + 10, x_ND.shape[1])
    q_DL = torch.randn(x_ND.shape[1], width, generator=torch.Generator().manual_seed(seed), dtype=x_ND.dtype)
    for _ in range(n_iter + 1):
        q_DL = torch.linalg.qr(x_ND.T @ (x_ND @ q_DL)).Q
    _, _, v_LL = torch.linalg.svd(x_ND @ q_DL, full_matrices=False)
    return q_DL @ v_LL[:k].T  # (D, k)


def linear_probe_accuracy(
    train_x_ND: Tensor,
    train_y_N: Tensor,
    test_x_MD: Tensor,
    test_y_M: Tensor,
    n_classes: int,
    rank: int = PROBE_RANK,
    l2: float = 1e-3,
    max_iter: int = 50,
) -> float:
    """Test accuracy of multinomial logistic regression on the inputs' top `rank` principal components.

    The probe is linear in the inputs (projection, then an affine map W z + b); the projection keeps a
    step at N * rank * classes, so 60k images or 200 classes take seconds on one core. Loss: mean
    cross-entropy + l2 * |W|^2, minimised by L-BFGS (`max_iter` steps) in whitened coordinates
    z / sd with the penalty rescaled to match: the same minimum, reached in far fewer steps.
    """
    mean_D = train_x_ND.float().mean(dim=0)
    axes_DK = principal_axes(train_x_ND.float(), rank)
    train_NK = (train_x_ND.float() - mean_D) @ axes_DK
    sd_K = train_NK.std(dim=0).clamp_min(1e-6)
    train_NK, test_MK = train_NK / sd_K, (test_x_MD.float() - mean_D) @ axes_DK / sd_K
    penalty_K1 = l2 / sd_K.pow(2)[:, None]  # |W|^2 with W = W' / sd in the unwhitened coordinates
    w_KC = torch.zeros(axes_DK.shape[1], n_classes, requires_grad=True)
    b_C = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w_KC, b_C], max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(train_NK @ w_KC + b_C, train_y_N) + (penalty_K1 * w_KC.pow(2)).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return accuracy((test_MK @ w_KC + b_C).argmax(dim=1), test_y_M)


# ----------------------------------------------------------------------------- sets and anomalies


def farthest_from_mean(sets_NSD: Tensor) -> Tensor:
    """(N,) per set, the index of the element farthest (Euclidean) from the mean of its set."""
    centre_N1D = sets_NSD.mean(dim=1, keepdim=True)
    return (sets_NSD - centre_N1D).pow(2).sum(dim=-1).argmax(dim=1)


def deviation_maps(train_NCHW: Tensor, images_MCHW: Tensor) -> Tensor:
    """(M, H, W) per image, |image - mean training image| per pixel, averaged over channels."""
    return (images_MCHW.float() - train_NCHW.float().mean(dim=0)).abs().mean(dim=1)


def auroc(scores_N: Tensor, labels_N: Tensor) -> float:
    """Area under the ROC curve (label 1 = positive), ties counted half: the Mann-Whitney U / (P * N).

    Equal to the exact (unbinned, trapezoidal) ROC area of torchmetrics/anomalib.

    Raises:
        ValueError: `labels_N` holds a single class (the area is undefined).
    """
    positive = labels_N.bool()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs both classes; got {n_pos} positive and {n_neg} negative labels")
    _, group_N, size_G = scores_N.double().unique(return_inverse=True, return_counts=True)
    end_G = size_G.cumsum(0).double()
    mid_rank_G = end_G - (size_G.double() - 1) / 2  # 1-based average rank of each group of ties
    rank_sum = float(mid_rank_G[group_N][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


# ----------------------------------------------------------------------------- count language models


def window_ngrams(x_NC: Tensor, y_NC: Tensor, pad_NC: Tensor, *, order: int = 3) -> tuple[Tensor, ...]:
    """The `order - 1` tokens before every scored target of next-token windows, oldest first, then the target.

    The previous token is the input at the target's position; one further back exists only where the window
    holds it (-1 before a window's start), as a model reading the window sees them.
    """
    keep_NC = ~pad_NC
    columns = []
    for back in range(order - 2, -1, -1):  # oldest context first
        shifted_NC = torch.cat([torch.full_like(x_NC[:, :back], -1), x_NC[:, : x_NC.shape[1] - back]], dim=1)
        columns.append(shifted_NC[keep_NC])
    return (*columns, y_NC[keep_NC])


def perplexity(logp_N: Tensor) -> float:
    """exp of the mean negative log-probability (nats)."""
    return math.exp(-float(logp_N.mean()))


class CountTable:
    """How often each key occurs among a training set of integer keys."""

    def __init__(self, keys: Tensor) -> None:
        self.keys_U, self.counts_U = keys.unique(return_counts=True)  # sorted

    def __call__(self, query_keys: Tensor) -> Tensor:
        """(Q,) float64 count of each query key (0 where unseen)."""
        if len(self.keys_U) == 0:
            return torch.zeros(len(query_keys), dtype=torch.float64)
        at_Q = torch.searchsorted(self.keys_U, query_keys).clamp(max=len(self.keys_U) - 1)
        return torch.where(self.keys_U[at_Q] == query_keys, self.counts_U[at_Q], 0).double()


@dataclass(frozen=True)
class NGramCounts:
    """Training counts of each scored (context, target) and of its context; `has` marks defined contexts."""

    joint: Tensor  # (N,) float64
    context: Tensor  # (N,) float64
    has: Tensor  # (N,) bool

    def add_k(self, k: float, vocab: int) -> Tensor:
        """(N,) log P(target | context) with add-k smoothing: (c(ctx, t) + k) / (c(ctx) + k V)."""
        return ((self.joint + k) / (self.context + k * vocab)).log()

    def toward(self, prior_logp: Tensor, alpha: float) -> Tensor:
        """(N,) log P with `alpha` pseudo-counts spread by the prior: (c(ctx, t) + a p) / (c(ctx) + a).

        Where the context is undefined (`has` False), the prior itself.
        """
        prior = prior_logp.exp()
        logp = ((self.joint + alpha * prior) / (self.context + alpha)).log()
        return torch.where(self.has, logp, prior_logp)


class NGramCounter:
    """n-gram and context counts of training columns of ids: oldest context first, target last.

    A context id of -1 means "not available" (e.g. before a window's start): such rows are not
    counted, and such query rows get `has` False.
    """

    def __init__(self, train: Sequence[Tensor], vocab: int) -> None:
        self.vocab = vocab
        rows = [column[_defined(train)] for column in train]
        self.joint, self.context = CountTable(self._keys(rows)), CountTable(self._keys(rows[:-1]))

    def _keys(self, columns: Sequence[Tensor]) -> Tensor:
        key = torch.zeros_like(columns[0])
        for column in columns:  # V^3 < 2^63 for any tokenizer's vocabulary
            key = key * self.vocab + column.clamp(min=0)
        return key

    def counts(self, query: Sequence[Tensor]) -> NGramCounts:
        has = _defined(query)
        joint, context = self.joint(self._keys(query)), self.context(self._keys(query[:-1]))
        return NGramCounts(joint.where(has, 0.0), context.where(has, 0.0), has)


def _defined(columns: Sequence[Tensor]) -> Tensor:
    return torch.stack([column >= 0 for column in columns]).all(dim=0)


def best(grid: Sequence[float], loss: Callable[[float], float]) -> float:
    """The value of `grid` with the lowest `loss` (the first of equals)."""
    return min(grid, key=loss)


K_GRID: tuple[float, ...] = tuple(10.0**e for e in (-4, -3.5, -3, -2.5, -2, -1.5, -1, -0.5, 0, 0.5, 1))
ALPHA_GRID: tuple[float, ...] = tuple(10.0**e for e in (-2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3))


#: the count models `count_lm` fits, by order: 2 the bigram, 3 the trigram, 4 the 4-gram
ORDER_NAMES = {2: "bigram", 3: "trigram", 4: "4-gram"}


@dataclass(frozen=True)
class CountLM:
    """Perplexities on test of the count models, with the smoothing chosen on validation."""

    bigram: float
    trigram: float
    k: float  # add-k of the bigram
    alpha: float  # pseudo-counts of the trigram, spread by the bigram
    test: Mapping[int, float] = field(default_factory=dict)  # order -> test perplexity
    val: Mapping[int, float] = field(default_factory=dict)  # order -> validation perplexity


def _toward_perplexity(counts: NGramCounts, prior_logp: Tensor, alpha: float) -> float:
    return perplexity(counts.toward(prior_logp, alpha))


def count_lm(
    train: Sequence[Tensor],
    val: Sequence[Tensor],
    test: Sequence[Tensor],
    vocab: int,
    k_grid: Sequence[float] = K_GRID,
    alpha_grid: Sequence[float] = ALPHA_GRID,
) -> CountLM:
    """Count n-gram models from the bigram up to the order of the columns given (`window_ngrams` output).

    The bigram is add-k smoothed; each higher order is Dirichlet-smoothed toward the order below it (its
    pseudo-counts spread by that model). `k` and each order's pseudo-counts are chosen by validation
    perplexity, and the test perplexity of every order is reported.
    """
    top = len(train)
    counted = {
        order: {name: NGramCounter(train[top - order :], vocab).counts(split[top - order :]) for name, split in
                (("val", val), ("test", test))}
        for order in range(2, top + 1)
    }  # fmt: skip
    k = best(k_grid, lambda k: perplexity(counted[2]["val"].add_k(k, vocab)))
    logp = {2: {name: pair.add_k(k, vocab) for name, pair in counted[2].items()}}
    alphas = {}
    for order in range(3, top + 1):
        here, below = counted[order], logp[order - 1]
        alphas[order] = best(alpha_grid, functools.partial(_toward_perplexity, here["val"], below["val"]))
        logp[order] = {name: here[name].toward(below[name], alphas[order]) for name in ("val", "test")}
    tests = {order: perplexity(split["test"]) for order, split in logp.items()}
    vals = {order: perplexity(split["val"]) for order, split in logp.items()}
    return CountLM(tests[2], tests.get(3, math.nan), k, alphas.get(3, math.nan), tests, vals)
