"""`TaskModule`: the one model wrapper every task's model is, so the fit loop treats them all alike.

A task subclasses it and implements `evaluate(batch)`: the loss plus metric sums and counts. The
module accumulates those over an epoch and reports exact means (weighted by count, not by batch) as
`{stage}/{name}`, plus whatever `finalize` derives from them (e.g. perplexity = exp(mean NLL)).
A task whose metric is a mean of per-example 0/1 values (a classifier's accuracy) also implements
`evaluate_items`, and an evaluation pass keeps those values in loader order (`item_scores`): a fit records
what it got right per test item. Perplexity, AUROC and per-token accuracy are no such means: those tasks
keep none.
The fit loop (`bench.fit.loop`) drives it: `train_batch` and `eval_batch` per batch, `epoch_metrics`
per epoch, `build_optimizer` and `build_scheduler` once.
"""

from __future__ import annotations

import abc
import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from .optim import OptimConfig

#: metric name -> (sum over examples, number of examples) for one batch
Sums = dict[str, tuple[Tensor, int]]
#: metric name -> its 0/1 value per example of one batch, in batch order, shape (B,)
Items = dict[str, Tensor]


def as_logged(value: float) -> float:
    """A metric as results store it: rounded to float32 (as Lightning's logging did), so results stay comparable."""
    return float(torch.tensor(value, dtype=torch.float32))


class TaskModule(nn.Module, abc.ABC):
    """Metric bookkeeping and optimiser shared by all tasks; the task supplies `net` and `evaluate`."""

    def __init__(self, net: nn.Module, optim: OptimConfig) -> None:
        super().__init__()
        self.net = net
        self.optim = optim
        self._sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
        self._items: dict[str, dict[str, list[Tensor]]] = defaultdict(lambda: defaultdict(list))
        self._finished_items: dict[str, dict[str, Tensor]] = {}

    @abc.abstractmethod
    def evaluate(self, batch: Any) -> tuple[Tensor, Sums]:
        """Loss (for backprop) and metric sums with their counts, for one batch."""

    def evaluate_items(self, batch: Any) -> tuple[Tensor, Sums, Items]:
        """`evaluate`, plus each example's value of every metric that is a mean of per-example 0/1 values; default:
        none. A task that overrides it scores its evaluation passes through it, so it gives `evaluate`'s sums."""
        loss, sums = self.evaluate(batch)
        return loss, sums, {}

    def finalize(self, means: dict[str, float]) -> dict[str, float]:
        """Metrics derived from the epoch means; default: none."""
        return {}

    def _accumulate(self, stage: str, sums: Sums) -> None:
        for name, (total, count) in sums.items():
            slot = self._sums[stage][name]
            slot[0] += float(total.detach())
            slot[1] += count

    def train_batch(self, batch: Any) -> Tensor:
        """The loss of one training batch (to back-propagate); its metric sums go into the epoch's."""
        loss, sums = self.evaluate(batch)
        self._accumulate("train", sums)
        return loss

    def eval_batch(self, stage: str, batch: Any) -> None:
        """Score one batch of `stage` ("val" or "test"), under no_grad and in eval mode."""
        _, sums, items = self.evaluate_items(batch)
        self._accumulate(stage, sums)
        for name, values_B in items.items():
            self._items[stage][name].append(values_B.detach().to("cpu", torch.bool))

    def reduce_sums(self, stage: str, all_reduce: Callable[[dict[str, list[float]]], dict[str, list[float]]]) -> None:
        """Make `stage`'s sums and counts the totals over every process of a data-parallel fit.

        Each process scored its own shard of the batches; `epoch_metrics` then means over all of their
        examples, as one process would. `all_reduce` adds each metric's [sum, count] up across the
        processes, so every process calls this at the same point, before `epoch_metrics`.
        """
        acc = self._sums[stage]
        totals = all_reduce({name: list(slot) for name, slot in acc.items()})
        acc.update({name: list(slot) for name, slot in totals.items()})

    def epoch_metrics(self, stage: str) -> dict[str, float]:
        """The stage's epoch means and what `finalize` derives from them, unprefixed; resets the stage (its
        per-example values become `item_scores(stage)`)."""
        acc = self._sums.pop(stage, {})
        self._finished_items[stage] = {name: torch.cat(parts) for name, parts in self._items.pop(stage, {}).items()}
        means = {name: total / count for name, (total, count) in acc.items() if count}
        means.update(self.finalize(means))
        return {name: as_logged(value) for name, value in means.items()}

    def item_scores(self, stage: str) -> dict[str, Tensor]:
        """metric name -> its per-example 0/1 values (bool, shape (N,)) over the stage's last finished pass (the one
        its last `epoch_metrics` reported), in loader order; {} for a task that keeps none (see the module docstring).

        A data-parallel process holds only its shards' values: `bench.fit.ddp` records none.
        """
        return dict(self._finished_items.get(stage, {}))

    def build_optimizer(self) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices only (the bare loop of `bench perf` uses the same)."""
        o = self.optim
        decay = [p for p in self.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.ndim < 2]
        return torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr,
            betas=o.betas,
            fused=True,  # one kernel per tensor on CPU and GPU: about 3x faster steps than the per-op loop here
        )

    def build_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> LambdaLR:
        """Linear warm-up over `warmup_frac` of the steps, then cosine decay to `min_lr_ratio`; stepped per step."""
        o = self.optim
        total = max(1, total_steps)
        warmup = int(o.warmup_frac * total)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        return LambdaLR(optimizer, factor)


def accuracy_sums(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Sums:
    """Correct predictions and their count, over targets that are not `ignore_index`."""
    keep = targets != ignore_index
    correct = (logits.argmax(-1) == targets) & keep
    return {"accuracy": (correct.sum().float(), int(keep.sum()))}


def loss_sums(loss: Tensor, count: int) -> Sums:
    """A mean loss turned back into a sum, so epoch means are exact."""
    return {"loss": (loss.detach() * count, count)}


class Classifier(TaskModule):
    """A module whose net maps a batch's inputs to class logits: cross-entropy, accuracy, loss; and in evaluation
    whether each example was classified right (its accuracy item)."""

    def evaluate(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Sums]:
        loss, sums, _ = self._scored(batch)
        return loss, sums

    def evaluate_items(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Sums, Items]:
        loss, sums, logits_BC = self._scored(batch)
        return loss, sums, {"accuracy": logits_BC.argmax(-1) == batch[1]}

    def _scored(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Sums, Tensor]:
        x, y_B = batch
        logits_BC = self.net(x)
        loss = F.cross_entropy(logits_BC, y_B)
        return loss, {**accuracy_sums(logits_BC, y_B), **loss_sums(loss, len(y_B))}, logits_BC
