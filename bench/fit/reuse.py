"""Fits reused: a cell whose variant trains exactly as another's (`VariantSpec.trains_as`) is scored on
that cell's fits instead of training the same model again.

An int8 cache trains as its base: the same parameters under the same names, the same initial values,
data order and draws for a seed, so the base's fit of seed s is, weight for weight, the fit the int8
cell would make. The base's final fits keep the model's state at each point of their curve
(`bench.fit.train.CurveStates`; only cells the row's matrix marks `keep_states`); the dependent loads each
state into its own model and scores the validation and test splits there, as its own fit would at that
step. Its curve and its test metrics are therefore those of a fit of its own (bit for bit on one
device); its training figures (time, throughput, steps) are the base fit's, the training that made the
weights.

The states live in the results folder's `states/` (local, ignored by git: a result file holds the
numbers, a state only the means to compute a dependent's): one file per (cell, seed), written
atomically, holding the settings it was fitted with, about 4 states of a fit (a 120k-parameter model:
~2 MB a seed). A missing or unreadable file, or one of other settings, is no state: the dependent trains.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.fit.loop import FitLoop
from bench.fit.memory import PeakMemory
from bench.fit.train import FitResult, item_record

if TYPE_CHECKING:
    import lightning as L

    from bench.record.store import ResultStore
    from bench_tasks.base import DataSource
    from bench_tasks.module import TaskModule

#: the per-seed record's figures of the training that made the weights, taken from the base's fit
TRAINING_FIGURES = ("train_seconds", "examples_per_second", "steps", "step_seconds")

States = dict[int, dict[str, Any]]  # optimiser step -> the model's state_dict after it


def states_path(store: ResultStore, cell_id: str, seed: int) -> Path:
    from bench.registry import check_id

    return store.states_dir / check_id(cell_id, "cell id") / f"seed-{seed}.pt"


def save_states(store: ResultStore, cell_id: str, seed: int, params: dict[str, float], states: States) -> None:
    """Keep a final fit's states (fitted with `params`) for the cells that train as this one."""
    import torch

    from bench_record.files import atomic_file

    with atomic_file(states_path(store, cell_id, seed), "wb") as handle:
        torch.save({"params": params, "states": states}, handle)


def load_states(store: ResultStore, cell_id: str, seed: int, params: dict[str, float]) -> States | None:
    """The kept states of the cell's fit of `seed` with `params`; None when there are none such."""
    import torch

    try:
        kept = torch.load(states_path(store, cell_id, seed), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError):
        return None
    if not isinstance(kept, dict) or kept.get("params") != params or not kept.get("states"):
        return None
    return kept["states"]


def evaluate(
    built: tuple[TaskModule, L.LightningDataModule, DataSource],
    data_dir: Path,
    states: States,
    trained: dict[str, Any],
    metric: str,
    precision: str = "32-true",
) -> FitResult:
    """A final fit whose training is another's: `states` (that fit's curve points) loaded into the model
    `bench.fit.train.build` made for this variant and seed (`built`), and scored on the validation and test
    splits in the order `bench.fit.train.fit` scores them; `trained` is that fit's record, whose training
    figures are this one's; the last state's test pass gives its item scores of the task's primary `metric`."""
    import torch

    module, datamodule, source = built
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loop = FitLoop(module, datamodule, device, precision=precision)  # scored as the trained fit scored itself
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")
    loaders = {"val": datamodule.val_dataloader(), "test": datamodule.test_dataloader()}
    curve: list[dict[str, Any]] = []
    with PeakMemory(loop.device.type, interval_s=0.01) as memory:
        started = time.perf_counter()
        for step, state in sorted(states.items()):
            module.net.load_state_dict(state)
            scores = {stage: loop._score(stage, loader, None) for stage, loader in loaders.items()}  # val, then test
            curve.append({"step": step, **scores})
        eval_seconds = time.perf_counter() - started
    return FitResult(
        val={},  # a final fit validates only at its curve's points
        test=curve[-1]["test"],
        peak_memory_bytes=max(memory.peak_bytes, trained["peak_memory_bytes"]),
        peak_memory_growth_bytes=max(memory.growth_bytes, trained.get("peak_memory_growth_bytes", 0)),
        parameters=sum(p.numel() for p in module.net.parameters()),
        data_source=source.public(data_dir),
        eval_seconds=eval_seconds,
        curve=curve,
        item_scores=item_record(metric, loop.test_items()),
        **{name: trained[name] for name in TRAINING_FIGURES},
    )
