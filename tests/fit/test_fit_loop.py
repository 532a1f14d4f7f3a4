"""The fit loop's fast paths do what the slow ones did: same batches, same schedule, every curve point logged."""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from bench.fit.loop import FitHooks, FitLoop, curve_steps
from bench.fit.train import fit, skip_absent_gpu_probe
from bench.record.tracking import FLUSH_POINTS, Tracker, default_tracking_uri
from bench.registry import tasks, variants
from bench_tasks.base import OptimConfig, TaskConfig
from bench_tasks.datamodule import BatchIndexed
from bench_tasks.module import Sums, TaskModule
from bench_tasks.vision import ImageDataModule, ImageSplits, VisionConfig
from tests.noisy import Noisy, Pairs


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


class _Doubler(TaskModule):
    def __init__(self) -> None:
        super().__init__(torch.nn.Linear(1, 1), OptimConfig())

    def evaluate(self, batch: Any) -> tuple[torch.Tensor, Sums]:
        return self.net(batch[0].float()[:, None]).mean(), {}


class _Watch(FitHooks):
    """Records what the loop reports: epochs started, steps ended, validations."""

    def __init__(self) -> None:
        self.epochs: list[tuple[int, int, int]] = []
        self.steps: list[int] = []
        self.validations: list[int] = []

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        self.epochs.append((epoch, epochs, batches))

    def batch_ended(self, step: int) -> None:
        self.steps.append(step)

    def validated(self, epoch: int, metrics: dict[str, float]) -> None:
        self.validations.append(epoch)


def test_the_loop_steps_the_schedule_to_its_end_validates_full_epochs_and_logs_every_curve_point(
    tmp_path: Path,
) -> None:
    task = tasks().get("reverse")
    config = dataclasses.replace(task.config("smoke"), max_epochs=1000, limit_train_batches=1.0, max_steps=61)
    optim = OptimConfig(lr=2e-3, min_lr_ratio=0.1, warmup_frac=0.1)
    tracker = Tracker(default_tracking_uri(tmp_path), tmp_path / "artifacts")
    run = tracker.child_run(tracker.cell_run("c", "c", {}), "fit", {}, {})
    task.prepare(tmp_path)
    module = task.build_model(variants().get("qkv"), config, optim)
    watch = _Watch()
    loop = FitLoop(module, task.datamodule(tmp_path, config, 0), torch.device("cpu"), tracker.logger(run), [watch])
    loop.fit(config, validate=True)
    loop.close()
    assert loop.step == 61 and watch.steps == list(range(1, 62))
    assert loop.optimizer.param_groups[0]["lr"] == pytest.approx(optim.lr * optim.min_lr_ratio, rel=1e-9)  # at its end
    batches = watch.epochs[0][2]
    full = 61 // batches
    assert full > 0 and 61 % batches  # the last epoch is cut short by max_steps
    assert watch.epochs == [(e, 1000, batches) for e in range(full + 1)]
    assert watch.validations == list(range(full))  # after each full epoch, not after the cut one
    history = tracker.client.get_metric_history(run, "val/accuracy")
    assert sorted(m.step for m in history) == [(e + 1) * batches - 1 for e in range(full)]
    steps = [m.step for m in tracker.client.get_metric_history(run, "train/loss_step")]
    assert steps == [0, 50]  # every `LOG_EVERY` steps, written in one batch at the epoch's end


def test_fit_hooks_may_stop_a_fit_and_the_curves_so_far_are_kept(tmp_path: Path) -> None:
    class Stop(FitHooks):
        def validated(self, epoch: int, metrics: dict[str, float]) -> None:
            raise RuntimeError(f"stopped after epoch {epoch}")

    task = tasks().get("reverse")
    config = dataclasses.replace(task.config("smoke"), max_epochs=3)
    tracker = Tracker(default_tracking_uri(tmp_path), tmp_path / "artifacts")
    run = tracker.child_run(tracker.cell_run("c", "c", {}), "fit", {}, {})
    with pytest.raises(RuntimeError, match="stopped after epoch 0"):
        fit(task, variants().get("qkv"), config, OptimConfig(), seed=0, data_dir=tmp_path, test=False,
            logger=tracker.logger(run), hooks=[Stop()])  # fmt: skip
    assert [m.step for m in tracker.client.get_metric_history(run, "train/loss_step")] == [0]


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


def test_an_epoch_takes_its_batches_without_asking_the_loader_for_one_more() -> None:
    """A shuffling sampler draws a spare permutation when exhausted: later epochs' order depends on not asking."""

    def loader() -> DataLoader:
        return DataLoader(TensorDataset(torch.arange(40)), batch_size=10, shuffle=True,
                          generator=torch.Generator().manual_seed(0))  # fmt: skip

    ours, limited, exhausted = loader(), loader(), loader()
    loop = FitLoop(_Doubler(), None, torch.device("cpu"))  # type: ignore[arg-type]
    assert len(list(loop._batches(ours, None))) == len(list(itertools.islice(limited, 4))) == 4
    list(exhausted)
    assert torch.equal(ours.generator.get_state(), limited.generator.get_state())  # type: ignore[union-attr]
    assert not torch.equal(ours.generator.get_state(), exhausted.generator.get_state())  # type: ignore[union-attr]


def test_curve_steps_are_log_spaced_and_end_at_the_last_step() -> None:
    assert curve_steps(40) == (5, 10, 20, 40)
    assert curve_steps(10) == (1, 2, 5, 10)  # rounded, distinct
    assert curve_steps(3) == (1, 2, 3) and curve_steps(1) == (1,) and curve_steps(0) == ()


@pytest.mark.parametrize("task_id", ["reverse", None])
def test_a_fit_that_records_its_curve_trains_exactly_as_one_that_does_not(task_id: str | None, tmp_path: Path) -> None:
    """The curve's points score val and test mid-fit in a forked RNG: the same draws, weights and test score."""
    config = TaskConfig(d_model=2, n_layers=1, n_heads=1, batch_size=8, max_epochs=2)
    if task_id:
        task = tasks().get(task_id)
        config = dataclasses.replace(task.config("smoke"), max_epochs=2)
        task.prepare(tmp_path)
    results = {}
    for curve in (False, True):
        torch.manual_seed(0)
        module = task.build_model(variants().get("tied-kv"), config, OptimConfig(lr=3e-3)) if task_id else Noisy()
        data = task.datamodule(tmp_path, config, 0) if task_id else Pairs(8, 0)
        loop = FitLoop(module, data, torch.device("cpu"))
        loop.fit(config, validate=False, curve=curve)
        results[curve] = (loop.test(), [p.detach().clone() for p in module.parameters()], loop.curve, loop.step)
    (test_a, params_a, curve_a, _), (test_b, params_b, curve_b, steps) = results[False], results[True]
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b, strict=True))
    assert curve_a == [] and [p["step"] for p in curve_b] == list(curve_steps(steps))
    assert all(set(p) == {"step", "val", "test"} for p in curve_b)
    assert curve_b[0]["test"] != curve_b[-1]["test"]  # it moved: the points are read at different steps
    if task_id:  # a scoring pass that draws nothing scores the same; the noisy one draws anew each time
        assert test_a == test_b and curve_b[-1]["test"] == test_b  # the curve ends at the fit's own test score
