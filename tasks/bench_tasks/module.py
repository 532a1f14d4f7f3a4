"""`TaskModule`: the one LightningModule every task's model is, so the runner treats them all alike.

A task subclasses it and implements `evaluate(batch)`: the loss plus metric sums and counts. The
module accumulates those over an epoch and logs exact means (weighted by count, not by batch) as
`{stage}/{name}`, plus whatever `finalize` derives from them (e.g. perplexity = exp(mean NLL)).
"""

from __future__ import annotations

import abc
import math
from collections import defaultdict
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler

from .base import OptimConfig

#: metric name -> (sum over examples, number of examples) for one batch
Sums = dict[str, tuple[Tensor, int]]


class TaskModule(L.LightningModule, abc.ABC):
    """Optimisation and metric bookkeeping shared by all tasks; the task supplies `net` and `evaluate`."""

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` around every hook, dozens of times per step; nn.Module's
        # __setattr__ (parameter, buffer and submodule checks) made that ~60 us of a small CPU step
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def __init__(self, net: nn.Module, optim: OptimConfig) -> None:
        super().__init__()
        self.automatic_optimization = False  # see `_step`
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
        step = self.global_step  # the step this batch is (the optimiser step below counts it)
        loss, sums = self.evaluate(batch)
        self._step(loss)
        self._accumulate("train", sums)
        # straight to the logger every `log_every_n_steps`: `self.log` on every step costs ~0.5 ms,
        # 10% of a small model's step on the CPU
        every = getattr(self.trainer, "log_every_n_steps", 50)  # set at run time
        if self.logger is not None and every and step % every == 0:
            self.logger.log_metrics({"train/loss_step": float(loss.detach())}, step=step)
        return loss

    def _step(self, loss: Tensor) -> None:
        """Backward, clip, AdamW, schedule: what Lightning's automatic optimisation does, in that order.

        Manual optimisation spares the closure and the hooks around it, ~50 us of a small CPU step;
        the arithmetic, and so every result, is the same.
        """
        optimizer = cast(LightningOptimizer, self.optimizers())  # `configure_optimizers` gives one of each
        scheduler = cast(LRScheduler, self.lr_schedulers())
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.optim.grad_clip:
            self.clip_gradients(
                optimizer.optimizer, gradient_clip_val=self.optim.grad_clip, gradient_clip_algorithm="norm"
            )
        optimizer.step()
        scheduler.step()

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

    def configure_optimizers(self) -> Any:
        o = self.optim
        optimizer = self.build_optimizer()
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
