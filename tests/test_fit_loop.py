"""The fit loop's fast paths do what the slow ones did: same batches, same schedule, every curve point logged."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from bench.registry import tasks, variants
from bench.tracking import FLUSH_POINTS, Tracker, default_tracking_uri
from bench.train import fit, skip_absent_gpu_probe
from bench_tasks.base import OptimConfig
from bench_tasks.datamodule import BatchIndexed
from bench_tasks.vision import ImageDataModule, ImageSplits, VisionConfig


def test_batch_indexed_loader_gives_the_default_loaders_batches() -> None:
    x, y = torch.randn(300, 5), torch.randint(0, 7, (300,))
    plain = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(3))
    fast = DataLoader(BatchIndexed(x, y), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(3),
                      collate_fn=list)  # fmt: skip
    pairs = list(zip(plain, fast, strict=True))
    assert len(pairs) == 5  # the last, short batch included
    for a, b in pairs:
        assert type(a) is list and len(a) == len(b) == 2
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _splits(n: int) -> ImageSplits:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    return ImageSplits(train=(images, labels), val=(images[:10], labels[:10]), test=(images[:12], labels[:12]))


def test_image_datasets_are_built_once_per_config_and_train_subset() -> None:
    splits = _splits(40)
    config = VisionConfig(d_model=8, n_layers=1, n_heads=2, img_size=8, patch_size=4, n_classes=3, batch_size=4)
    first = ImageDataModule(lambda: splits, config, 0).build()
    # the whole train split: the seed does not change the images, so seed 1 reads seed 0's tensors
    assert first["train"] is ImageDataModule(lambda: splits, config, 1).build()["train"]
    first.pop("train")  # a caller's dict is its own
    assert "train" in ImageDataModule(lambda: splits, config, 0).build()
    subset = dataclasses.replace(config, max_train=20)
    a, b = ImageDataModule(lambda: splits, subset, 0).build(), ImageDataModule(lambda: splits, subset, 1).build()
    assert len(a["train"]) == 20 and not torch.equal(a["train"].tensors[1], b["train"].tensors[1])  # type: ignore[attr-defined]
    assert ImageDataModule(lambda: splits, subset, 0).build()["train"] is a["train"]


class _End(L.Callback):
    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.steps = trainer.global_step
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]


def test_manual_optimisation_steps_the_schedule_to_its_end_and_logs_every_curve_point(tmp_path: Path) -> None:
    task = tasks().get("reverse")
    config = dataclasses.replace(task.config("smoke"), max_epochs=1000, limit_train_batches=1.0, max_steps=61)
    optim = OptimConfig(lr=2e-3, min_lr_ratio=0.1, warmup_frac=0.1)
    tracker = Tracker(default_tracking_uri(tmp_path), tmp_path / "artifacts")
    run = tracker.child_run(tracker.cell_run("c", "c", {}), "fit", {}, {})
    end = _End()
    fit(task, variants().get("qkv"), config, optim, seed=0, data_dir=tmp_path, test=False,
        logger=tracker.logger(run), callbacks=[end])  # fmt: skip
    assert end.steps == 61
    assert end.lr == pytest.approx(optim.lr * optim.min_lr_ratio, rel=1e-9)  # stepped with every step: at its end
    steps = [m.step for m in tracker.client.get_metric_history(run, "train/loss_step")]
    assert steps == [0, 50]  # every `log_every_n_steps`, written in one batch at the epoch's end
    assert tracker.client.get_metric_history(run, "val/accuracy")


def test_batched_logger_writes_when_full_and_at_the_end(tmp_path: Path) -> None:
    tracker = Tracker(default_tracking_uri(tmp_path), tmp_path / "artifacts")
    run = tracker.child_run(tracker.cell_run("c", "c", {}), "fit", {}, {})
    logger: Any = tracker.logger(run)
    for step in range(FLUSH_POINTS + 3):
        logger.log_metrics({"x": float(step)}, step=step)
    assert len(tracker.client.get_metric_history(run, "x")) == FLUSH_POINTS  # the first batch is written
    logger.finalize("success")
    history = tracker.client.get_metric_history(run, "x")
    assert sorted(m.step for m in history) == list(range(FLUSH_POINTS + 3))


def test_gpu_probe_is_skipped_only_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    skip_absent_gpu_probe()
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    skip_absent_gpu_probe()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    skip_absent_gpu_probe()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
