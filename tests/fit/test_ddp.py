"""Data-parallel fits (`bench.fit.ddp`): two CPU processes train as one does, stop together, fail loudly.

Each 2-process fit costs about 6-9 s on 2 cores, most of it the helper process importing torch.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from bench.fit import ddp
from bench.fit.loop import FitHooks
from bench.fit.train import build, fit
from bench.registry import tasks, variants
from bench_tasks.base import REACHED_TARGET, STEPS_TO_TARGET, OptimConfig

# measured: val/test accuracy and loss identical to one process at 40 steps; loss within 3e-7 relative at 100
ACCURACY_ABS = 1e-3
LOSS_REL = 1e-3


def _config(**changes: Any) -> Any:
    """Reverse at smoke scale, 40 steps; lr 1e-2 leaves it mid-way (val accuracy ~0.94).

    249 examples make each epoch's last batch 57, split 29 + 28: unequal shards, weighted by their share.
    """
    return dataclasses.replace(tasks().get("reverse").config("smoke"), max_epochs=10, n_train=249, **changes)


def _fit(tmp_path: Path, devices: int, test: bool, hooks: list[FitHooks] | None = None) -> Any:
    return fit(tasks().get("reverse"), variants().get("qkv"), _config(devices=devices), OptimConfig(lr=1e-2),
               seed=0, data_dir=tmp_path, test=test, hooks=hooks)  # fmt: skip


def test_shard_splits_every_tensor_of_a_batch_into_near_equal_parts() -> None:
    x, y = torch.arange(5), torch.arange(10).view(5, 2)
    assert [len(ddp.shard([x, y], r, 2)[0]) for r in range(2)] == [3, 2]
    part = ddp.shard({"x": x, "y": y, "name": "b"}, 1, 2)
    assert torch.equal(part["x"], x[3:]) and torch.equal(part["y"], y[3:]) and part["name"] == "b"
    assert isinstance(ddp.shard((x, y), 0, 2), tuple)
    assert ddp.shard((x[:1], y[:1]), 1, 2) is None  # nothing left for rank 1


@pytest.mark.parametrize("test", [False, True], ids=["val", "test"])
def test_two_processes_train_as_one_does(tmp_path: Path, test: bool) -> None:
    one, two = _fit(tmp_path, 1, test), _fit(tmp_path, 2, test)
    assert one.steps == two.steps == 40
    stage = "test" if test else "val"
    a, b = getattr(one, stage), getattr(two, stage)
    assert a.keys() == b.keys() == {"accuracy", "loss", STEPS_TO_TARGET, REACHED_TARGET}
    assert a[STEPS_TO_TARGET] == b[STEPS_TO_TARGET] == 40 and a[REACHED_TARGET] == b[REACHED_TARGET] == 0  # its cap
    assert b["accuracy"] == pytest.approx(a["accuracy"], abs=ACCURACY_ABS)
    assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_REL)
    assert two.examples_per_second > 0 and two.peak_memory_bytes > 0
    assert not multiprocessing.active_children()


class _Prune(FitHooks):
    def __init__(self) -> None:
        self.validations: list[int] = []

    def validated(self, epoch: int, metrics: dict[str, float]) -> None:
        self.validations.append(epoch)
        raise optuna.TrialPruned(f"pruned after epoch {epoch}")


def test_a_hook_that_raises_on_rank_0_stops_every_process(tmp_path: Path) -> None:
    prune = _Prune()
    started = time.perf_counter()
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 0"):
        _fit(tmp_path, 2, test=False, hooks=[prune])
    assert prune.validations == [0]
    assert time.perf_counter() - started < 30  # no wait for a timeout
    assert not multiprocessing.active_children()


def test_a_variant_the_helpers_cannot_find_is_refused_before_they_start(tmp_path: Path) -> None:
    local = dataclasses.replace(variants().get("qkv"), id="qkv-local")
    with pytest.raises(ValueError, match=r"needs a registered variant.*'qkv-local'"):
        fit(tasks().get("reverse"), local, _config(devices=2), OptimConfig(), seed=0, data_dir=tmp_path)
    assert not multiprocessing.active_children()


def build_fails_in_helpers(*args: Any) -> Any:
    """`build`, except in a helper process, where the task cannot be found (as a plugin missing there)."""
    if multiprocessing.parent_process() is not None:
        raise LookupError("task 'reverse' is not installed here")
    return build(*args)


def test_a_helper_that_cannot_rebuild_the_fit_fails_it_at_once(tmp_path: Path) -> None:
    task, variant, config = tasks().get("reverse"), variants().get("qkv"), _config(devices=2)
    spec = ddp.FitSpec.of(task, variant, config, OptimConfig(), 0, tmp_path, True, False, None)
    module, datamodule, _ = build(task, variant, config, OptimConfig(), 0, tmp_path)
    started = time.perf_counter()
    with (
        pytest.raises(ddp.RankFailed, match="rank 1 could not rebuild the fit: LookupError: task 'reverse' is not"),
        ddp.rank_zero(spec, build_fails_in_helpers, module, datamodule, None, ()),
    ):
        pass
    assert time.perf_counter() - started < 30
    assert not multiprocessing.active_children()
