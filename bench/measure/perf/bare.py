"""The bare PyTorch loop the harness is measured against: a task's own model and data, nothing else.

It does what a fit's training steps do and nothing else: the task module's `evaluate` (the same loss
the harness trains on, under the config's `precision` as `bench.fit.loop.autocast` has it), backward,
gradient-norm clipping as `OptimConfig.grad_clip` asks, and the same (fused) AdamW step over the same
parameter groups. It leaves out what only the harness does: metric bookkeeping and logging, the
learning-rate schedule, hooks, validation.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightning as L
    import torch

    from bench_tasks.base import OptimConfig, Task, TaskConfig
    from bench_tasks.module import TaskModule
    from bench_variants.base import VariantSpec


@dataclass
class BareSetup:
    """A task's model, optimiser and training data, built the way `bench.fit.train.fit` builds them."""

    module: TaskModule
    optimizer: torch.optim.Optimizer
    datamodule: L.LightningDataModule
    config: TaskConfig
    grad_clip: float

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device


def build(
    task: Task, variant: VariantSpec, config: TaskConfig, optim: OptimConfig, data_dir: Path, seed: int
) -> BareSetup:
    """Seed, data (set up for fitting), model and optimiser; the data must already be prepared."""
    import torch

    from bench.fit.train import skip_absent_gpu_probe

    skip_absent_gpu_probe()  # as a fit does
    torch.manual_seed(seed)
    datamodule = task.datamodule(data_dir, config, seed)
    datamodule.setup("fit")
    module = task.build_model(variant, config, optim)
    module.train()
    return BareSetup(module, module.build_optimizer(), datamodule, config, optim.grad_clip)


def step(setup: BareSetup, batch: Any) -> torch.Tensor:
    """One training step: loss (under the config's precision), backward, clip, AdamW; returns the loss, detached."""
    import torch

    from bench.fit.loop import autocast

    with autocast(setup.device, setup.config.precision):
        loss, _ = setup.module.evaluate(batch)
    setup.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if setup.grad_clip:
        torch.nn.utils.clip_grad_norm_(setup.module.parameters(), setup.grad_clip)
    setup.optimizer.step()
    return loss.detach()


def train_batches(setup: BareSetup) -> Iterator[Any]:
    """The fit's training batches in order: one train loader, passed over once per epoch, limited as in a fit."""
    from bench.fit.loop import Plan

    loader = setup.datamodule.train_dataloader()
    plan = Plan.of(setup.config, len(loader))
    epochs = (itertools.islice(loader, plan.batches) for _ in itertools.count())
    return itertools.islice(itertools.chain.from_iterable(epochs), plan.steps)


def first_batch(setup: BareSetup) -> Any:
    return next(iter(setup.datamodule.train_dataloader()))
