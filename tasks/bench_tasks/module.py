"""`TaskModule`: the one LightningModule every task's model is, so the runner treats them all alike.

A task subclasses it and implements `evaluate(batch)`: the loss plus metric sums and counts. The
module accumulates those over an epoch and logs exact means (weighted by count, not by batch) as
`{stage}/{name}`, plus whatever `finalize` derives from them (e.g. perplexity = exp(mean NLL)).
"""

from __future__ import annotations

import abc
import math
from collections import defaultdict
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from .base import OptimConfig

#: metric name -> (sum over examples, number of examples) for one batch
Sums = dict[str, tuple[Tensor, int]]


class TaskModule(L.LightningModule, abc.ABC):
    """Optimisation and metric bookkeeping shared by all tasks; the task supplies `net` and `evaluate`."""

    def __init__(self, net: nn.Module, optim: OptimConfig) -> None:
        super().__init__()
        self.net = net
        self.optim = optim
        self._sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))

    @abc.abstractmethod
    def evaluate(self, batch: Any) -> tuple[Tensor, Sums]:
        """Loss (for backprop) and metric sums with their counts, for one batch."""

    def finalize(self, means: dict[str, float]) -> dict[str, float]:
        """Metrics derived from the epoch means; default: none."""
        return {}

    def _accumulate(self, stage: str, sums: Sums) -> None:
        for name, (total, count) in sums.items():
            slot = self._sums[stage][name]
            slot[0] += float(total.detach())
            slot[1] += count

    def _log_epoch(self, stage: str) -> None:
        acc = self._sums.pop(stage, {})
        means = {name: total / count for name, (total, count) in acc.items() if count}
        means.update(self.finalize(means))
        for name, value in means.items():
            self.log(f"{stage}/{name}", value, prog_bar=name in ("loss", "accuracy"), sync_dist=True)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss, sums = self.evaluate(batch)
        self._accumulate("train", sums)
        # straight to the logger every `log_every_n_steps`: `self.log` on every step costs ~0.5 ms,
        # 10% of a small model's step on the CPU
        step, every = self.global_step, getattr(self.trainer, "log_every_n_steps", 50)  # set at run time
        if self.logger is not None and every and step % every == 0:
            self.logger.log_metrics({"train/loss_step": float(loss.detach())}, step=step)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        _, sums = self.evaluate(batch)
        self._accumulate("val", sums)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        _, sums = self.evaluate(batch)
        self._accumulate("test", sums)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> Any:
        o = self.optim
        decay = [p for p in self.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr,
            betas=o.betas,
            fused=True,  # one kernel per tensor on CPU and GPU: about 3x faster steps than the per-op loop here
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(o.warmup_frac * total)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def accuracy_sums(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Sums:
    """Correct predictions and their count, over targets that are not `ignore_index`."""
    keep = targets != ignore_index
    correct = (logits.argmax(-1) == targets) & keep
    return {"accuracy": (correct.sum().float(), int(keep.sum()))}


def loss_sums(loss: Tensor, count: int) -> Sums:
    """A mean loss turned back into a sum, so epoch means are exact."""
    return {"loss": (loss.detach() * count, count)}
