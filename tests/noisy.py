"""A tiny regression fit that draws from the global RNG on every batch, trained or scored (as dropout or masks
would): a look, curve point or pruning check outside a forked RNG would change the fit it watches."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import TensorDataset

from bench_tasks.base import OptimConfig
from bench_tasks.datamodule import SplitDataModule
from bench_tasks.module import Sums, TaskModule


class Noisy(TaskModule):
    """A linear model fed noisy inputs; its metric `score` (minus the loss) rises as the loss falls."""

    def __init__(self, lr: float = 1e-2) -> None:
        super().__init__(torch.nn.Linear(2, 1), OptimConfig(lr=lr))

    def evaluate(self, batch: Any) -> tuple[torch.Tensor, Sums]:
        x, y = batch
        pred = self.net(x + torch.rand(len(x), 1)).squeeze(-1)
        loss = ((pred - y) ** 2).mean()
        return loss, {"loss": (loss.detach() * len(x), len(x)), "score": ((-loss).detach() * len(x), len(x))}


class Pairs(SplitDataModule):
    """96 points, y = `slope` x the sum of x's two coordinates: 64 to train on, 16 to validate, 16 to test."""

    slope = 1.0

    def build(self) -> dict[str, Any]:
        g = torch.Generator().manual_seed(1)
        x = torch.randn(96, 2, generator=g)
        y = self.slope * x.sum(1)
        return {"train": TensorDataset(x[:64], y[:64]), "val": TensorDataset(x[64:80], y[64:80]),
                "test": TensorDataset(x[80:], y[80:])}  # fmt: skip


class SteepPairs(Pairs):
    slope = 3.0
