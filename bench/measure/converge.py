"""What a task measures: the study's variants trained far past the task's budget, once, on the tuning seed.

`bench converge --task T --steps N` fits each variant for N steps with the task's own settings (its
defaults, seed `TUNING_SEED`, never a test seed), scores the validation split every N/`LOOKS` steps
without stopping, and writes the record the task's declaration rests on
(`tasks/bench_tasks/convergence/<task>.json`):

- **speed**: every variant reaches the task's target: the plateaus are the same, so what a fixed budget
  measures is how fast each design learns, and the task's verdict is steps to the target, capped
  where the slowest variant got there with room to spare (`suggested_cap`);
- **capacity**: the plateaus were reached (the metric moved by less than `PLATEAU_TOLERANCE` over the
  last quarter of the run) and they differ: the task's budget must reach them;
- **budget**: neither (a plateau is out of reach at N steps): the metric at a budget, labelled stable or
  moving by the curve.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.fit.tuning import TUNING_SEED, default_params, optim_config
from bench.record.provenance import now, provenance
from bench.record.store import write_json_atomic
from bench_record.compare import BASELINE

if TYPE_CHECKING:
    from bench_tasks.base import SpeedTarget, Task, TaskConfig

#: the study's Table 1 rows whose plateaus decide what a task measures
STUDY_VARIANTS = ("qkv", "tied-qk", "tied-kv", "tied-qkv")
LOOKS = 120  # validation looks over a convergence run (fine enough to read steps to the target)
PLATEAU_TOLERANCE = 0.01  # "reached": the metric moved by less than this over the run's last quarter
#: a speed task's cap: this times the slowest study variant's steps to the target (a fit's schedule spans its
#: cap, so a shorter cap decays the learning rate sooner than the convergence run did)
CAP_MARGIN = 2.0


def records_folder() -> Path:
    """Where the built-in tasks' records live: beside the tasks, in their package."""
    import bench_tasks

    return Path(bench_tasks.__file__).resolve().parent / "convergence"


def run_config(config: TaskConfig, steps: int, batches_per_epoch: int) -> TaskConfig:
    """`config` stretched to `steps` optimiser steps (as many epochs as that takes)."""
    return dataclasses.replace(config, max_steps=steps, max_epochs=math.ceil(steps / max(1, batches_per_epoch)))


def summarize(looks: Sequence[dict[str, Any]], target: float) -> dict[str, Any]:
    """One variant's run: its plateau (the mean of the last quarter's looks), how far the metric moved over
    that quarter, whether that counts as reached, and the first step at which it reached `target`."""
    values = [float(look["val"]) for look in looks]
    quarter = values[-max(1, len(values) // 4) :]
    moved = max(quarter) - min(quarter)
    first = next((int(look["step"]) for look in looks if float(look["val"]) >= target), None)
    return {"plateau": sum(quarter) / len(quarter), "last_quarter_moved": moved,
            "plateau_reached": moved < PLATEAU_TOLERANCE, "steps_to_target": first}  # fmt: skip


def classify(summaries: dict[str, dict[str, Any]], steps: int) -> dict[str, Any]:
    """What the task measures, from every variant's summary, with the reason in words."""
    slow = [v for v, s in summaries.items() if s["steps_to_target"] is None]
    if not slow:
        slowest = max(s["steps_to_target"] for s in summaries.values())
        reason = f"every study variant reached the target within {steps} steps (slowest: {slowest})"
        return {"measures": "speed", "slowest_steps_to_target": slowest,
                "suggested_cap": math.ceil(slowest * CAP_MARGIN), "reason": reason}  # fmt: skip
    plateaus = {v: s["plateau"] for v, s in summaries.items()}
    if all(s["plateau_reached"] for s in summaries.values()):
        spread = max(plateaus.values()) - min(plateaus.values())
        return {"measures": "capacity", "plateau_spread": spread,
                "reason": f"every plateau reached (moved < {PLATEAU_TOLERANCE} over the last quarter); "
                          f"{', '.join(slow)} stay below the target; plateaus differ by {spread:.3f}"}  # fmt: skip
    moving = [v for v, s in summaries.items() if not s["plateau_reached"]]
    return {"measures": "budget", "reason": f"{', '.join(moving)} still moving after {steps} steps"}


def converge(
    task: Task,
    target: SpeedTarget,
    steps: int,
    data_dir: Path,
    variants: Sequence[str] = STUDY_VARIANTS,
    scale: str = "default",
    on_variant: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fit each of `variants` for `steps` on the tuning seed, looking at the validation metric throughout;
    the record `bench converge` writes (see the module's docstring)."""
    import torch

    from bench.fit.loop import FitLoop
    from bench.fit.train import build
    from bench.registry import variants as variant_registry

    base = task.config(scale)  # type: ignore[arg-type]
    params = default_params(task)
    every = max(1, steps // LOOKS)
    look_target = dataclasses.replace(target, every=every)
    runs: dict[str, Any] = {}
    registry = variant_registry()
    config = base
    for variant_id in variants:
        if on_variant:
            on_variant(variant_id)
        spec, reference = registry.get(variant_id), registry.get(BASELINE)
        module, datamodule, _ = build(task, spec, base, optim_config(params), TUNING_SEED, data_dir, reference)
        datamodule.setup("fit")
        config = run_config(base, steps, len(datamodule.train_dataloader()))
        loop = FitLoop(module, datamodule, torch.device("cpu"), precision=config.precision)
        loop.fit(config, validate=False, target=look_target, stop_at_target=False)
        runs[variant_id] = {**summarize(loop.looks, target.target), "looks": loop.looks}
    summaries = {v: {k: x for k, x in r.items() if k != "looks"} for v, r in runs.items()}
    return {
        "task": task.id,
        "task_version": task.version,
        "scale": scale,
        "config": {"type": type(base).__name__, **dataclasses.asdict(base)},
        "run": {
            "steps": steps,
            "max_epochs": config.max_epochs,
            "look_every": every,
            "seed": TUNING_SEED,
            "split": "validation",
            "optim": params,
        },
        "target": {"metric": target.metric, "target": target.target},  # looked at every `run.look_every` steps
        "variants": runs,
        "verdict": classify(summaries, steps),
        "created_at": now(),
        "provenance": provenance(),
    }


def write(record: dict[str, Any], folder: Path | None = None) -> Path:
    path = (folder or records_folder()) / f"{record['task']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    return path


def load(task_id: str, folder: Path | None = None) -> dict[str, Any] | None:
    """The task's convergence record, or None when it has none."""
    path = (folder or records_folder()) / f"{task_id}.json"
    return json.loads(path.read_text()) if path.is_file() else None
