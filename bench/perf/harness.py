"""Harness overhead: each default-suite task's fit through `bench.train.fit` against a bare PyTorch loop.

Both build the same model around the suite's baseline variant, on the same data, for the same number
of steps. The harness fit runs as a cell's fits do: `bench.loop`, with MLflow logging its curves into a
nested run of a (temporary) SQLite tracking store. For each fit:

    train_s   first training step's start to last step's end, validation passes taken out
    eval_s    validation passes (the harness validates every epoch; the bare loop does not)
    fixed_s   everything else: setup before the first step and teardown after the last
              (for the harness: MLflow run, Trainer, data and model; for the bare loop: data and model)

The ratio harness/bare of `train_s` is taken round by round (the pair ran back to back). The task
configs are read from the task registry at run time, so they are whatever the suite uses today.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.memory import PeakMemory
from bench.perf import bare
from bench.perf.common import PerfContext, Spread, best_ratio, goal_text, interleave, paired_ratios

if TYPE_CHECKING:
    from rich.console import RenderableType

    from bench.tracking import Tracker
    from bench_tasks.base import Task, TaskConfig
    from bench_variants.base import VariantSpec

RATIO_GOAL = 1.05  # harness training time / bare loop's
FIXED_GOAL_S = 0.5  # setup + teardown of one harness fit


@dataclass(frozen=True)
class HarnessSettings:
    """Attributes:
    repeats: Rounds; each runs every task's harness fit and bare loop once.
    scale: Which of each task's configs to use.
    max_steps: Cap on each fit's steps (quick runs); None keeps the config's own budget.
    tasks: Task ids; None: the `default` suite's tasks.
    seed: Seed of every fit (the same for both contenders).
    """

    repeats: int = 3
    scale: str = "default"
    max_steps: int | None = None
    tasks: tuple[str, ...] | None = None
    seed: int = 0


def settings(quick: bool, repeats: int | None = None) -> HarnessSettings:
    """Full: every default task's whole fit, 3 rounds. Quick: the smoke configs, 6 steps, 2 rounds."""
    base = HarnessSettings(repeats=2, scale="smoke", max_steps=6) if quick else HarnessSettings()
    return dataclasses.replace(base, repeats=repeats or base.repeats)


@dataclass(frozen=True)
class FitTiming:
    """One fit's wall-clock split (seconds), its steps, and its memory (`PeakMemory.as_dict`)."""

    total_s: float
    train_s: float
    eval_s: float
    steps: int
    memory: dict[str, Any] = field(default_factory=dict)

    @property
    def fixed_s(self) -> float:
        return self.total_s - self.train_s - self.eval_s


@dataclass(frozen=True)
class _Tracking:
    tracker: Tracker
    parent: str
    open_s: float


def _created(tracker: Tracker, run_id: str | None) -> str:
    """A run the measurement needs: without MLflow logging, the harness would be timed doing less."""
    if run_id is None:
        raise RuntimeError(f"the throwaway MLflow store refused a run: {'; '.join(tracker.problems[-1:])}")
    return run_id


@contextmanager
def _tracking() -> Iterator[_Tracking]:
    """A throwaway SQLite MLflow store with one parent run, as `bench run` opens under its results."""
    from bench.tracking import Tracker, default_tracking_uri

    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp:
        start = time.perf_counter()
        tracker = Tracker(default_tracking_uri(Path(tmp)), Path(tmp) / "artifacts")
        parent = _created(tracker, tracker.cell_run("perf-harness", "bench perf harness", {"suite": "perf"}))
        yield _Tracking(tracker, parent, time.perf_counter() - start)
        tracker.finish(parent)


def harness_fit(
    task: Task, variant: VariantSpec, config: TaskConfig, seed: int, data_dir: Path, run: _Tracking
) -> FitTiming:
    """One fit as a cell runs it: a nested MLflow run, `bench.train.fit` logging into it, the run closed."""
    from bench.train import fit
    from bench_tasks.base import OptimConfig

    with PeakMemory() as memory:
        start = time.perf_counter()
        tags = {"task": task.id, "variant": variant.id, "suite": "perf"}
        run_id = _created(run.tracker, run.tracker.child_run(run.parent, f"{task.id}-harness", tags, {"seed": seed}))
        logger = run.tracker.logger(run_id)
        result = fit(task, variant, config, OptimConfig(), seed=seed, data_dir=data_dir, test=False, logger=logger)
        run.tracker.finish(run_id)
        total = time.perf_counter() - start
    return FitTiming(total, result.step_seconds, result.eval_seconds, result.steps, memory.as_dict())


def bare_fit(task: Task, variant: VariantSpec, config: TaskConfig, seed: int, data_dir: Path) -> FitTiming:
    """The same fit's training steps as a bare loop (see `bench.perf.bare`)."""
    from bench_tasks.base import OptimConfig

    with PeakMemory() as memory:
        start = time.perf_counter()
        setup = bare.build(task, variant, config, OptimConfig(), data_dir, seed)
        first: float | None = None
        last, steps = 0.0, 0
        for batch in bare.train_batches(setup):
            first = first if first is not None else time.perf_counter()  # after the first batch, as the harness
            bare.step(setup, batch)
            last, steps = time.perf_counter(), steps + 1
        total = time.perf_counter() - start
    return FitTiming(total, last - (first or last), 0.0, steps, memory.as_dict())


def task_config(task: Task, options: HarnessSettings) -> TaskConfig:
    config = task.config(options.scale)  # type: ignore[arg-type]
    return dataclasses.replace(config, max_steps=options.max_steps) if options.max_steps else config


def measure(options: HarnessSettings, ctx: PerfContext) -> dict[str, Any]:
    """Harness vs bare loop for every chosen task, interleaved round by round."""
    from bench.registry import tasks, variants
    from bench.suites import default

    suite = default()
    variant = variants().get(suite.baseline)
    chosen = tasks().resolve(list(options.tasks or suite.tasks))
    configs = {task.id: task_config(task, options) for task in chosen}
    for task in chosen:
        task.prepare(ctx.data_dir)
    with _tracking() as run:
        ctx.note("warm-up fit (first-use costs of imports and MLflow, not recorded)")
        warm = dataclasses.replace(configs[chosen[0].id], max_steps=2)
        harness_fit(chosen[0], variant, warm, options.seed, ctx.data_dir, run)
        bare_fit(chosen[0], variant, warm, options.seed, ctx.data_dir)
        contenders = {}
        for task in chosen:
            args = (task, variant, configs[task.id], options.seed, ctx.data_dir)
            contenders[f"{task.id} harness"] = partial(harness_fit, *args, run)
            contenders[f"{task.id} bare"] = partial(bare_fit, *args)
        timings = interleave(contenders, options.repeats, ctx.note)
    per_task = {
        task.id: summarise(configs[task.id], timings[f"{task.id} harness"], timings[f"{task.id} bare"])
        for task in chosen
    }
    return {
        "variant": variant.id,
        "mlflow_store_open_s": run.open_s,
        "goals": {"ratio_max": RATIO_GOAL, "fixed_s_max": FIXED_GOAL_S},
        "tasks": per_task,
    }


def _contender(fits: list[FitTiming]) -> dict[str, Any]:
    return {
        "steps": fits[0].steps,
        "train_s": Spread.of([f.train_s for f in fits]).as_dict(),
        "eval_s": Spread.of([f.eval_s for f in fits]).as_dict(),
        "fixed_s": Spread.of([f.fixed_s for f in fits]).as_dict(),
        "total_s": Spread.of([f.total_s for f in fits]).as_dict(),
        "peak_rss_growth_bytes": Spread.of([f.memory["growth_bytes"] for f in fits]).as_dict(),
        "peak_rss_bytes": max(f.memory["peak_bytes"] for f in fits),
        "memory_method": fits[0].memory["method"],
    }


def summarise(config: TaskConfig, harness: list[FitTiming], bare_fits: list[FitTiming]) -> dict[str, Any]:
    """Per task: the paired ratio of training time, each contender's split, and the goals."""
    train = [f.train_s for f in harness], [f.train_s for f in bare_fits]
    ratio, fixed = Spread.of(paired_ratios(*train)), Spread.of([f.fixed_s for f in harness])
    return {
        "config": {"type": type(config).__name__, **config.as_dict()},
        "ratio": ratio.as_dict(),
        "ratio_of_best": best_ratio(*train),
        "harness": _contender(harness),
        "bare": _contender(bare_fits),
        "ratio_goal_met": ratio.median <= RATIO_GOAL,
        "fixed_goal_met": fixed.median < FIXED_GOAL_S,
    }


def render(result: dict[str, Any]) -> list[RenderableType]:
    from rich.table import Table

    table = Table(
        title=f"Harness overhead: fit through bench.train.fit vs a bare loop ({result['variant']})",
        caption="s: training seconds, median \\[min-max] over rounds; ratio paired round by round; best/best: "
        "fastest over fastest; fixed: setup + teardown of a fit; RSS MiB h/b: how far the peak during a fit rose "
        "above its start; "
        f"MLflow store opened once per run: {result['mlflow_store_open_s']:.2f} s",
    )
    columns = ("task", "steps", "bare s", "harness s", "harness/bare", "best/best", f"<= {RATIO_GOAL}x",
               "fixed s", f"< {FIXED_GOAL_S} s", "bare fixed s", "eval s", "RSS MiB h/b")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col == "task" else "right")
    for task_id, t in result["tasks"].items():
        h, b = t["harness"], t["bare"]
        ratio, fixed = Spread.from_dict(t["ratio"]), Spread.from_dict(h["fixed_s"])
        table.add_row(
            task_id,
            str(h["steps"]) if h["steps"] == b["steps"] else f"{h['steps']} vs {b['steps']}",
            f"{b['train_s']['median']:.2f}",
            f"{h['train_s']['median']:.2f}",
            ratio.show(),
            f"{t['ratio_of_best']:.2f}x",
            goal_text(ratio.median, RATIO_GOAL),
            fixed.show(unit=""),
            goal_text(fixed.median, FIXED_GOAL_S, strict=True),
            f"{b['fixed_s']['median']:.2f}",
            f"{h['eval_s']['median']:.2f}",
            f"{h['peak_rss_growth_bytes']['median'] / 2**20:.0f} / {b['peak_rss_growth_bytes']['median'] / 2**20:.0f}",
        )
    return [table]
