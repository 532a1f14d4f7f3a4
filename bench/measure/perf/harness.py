"""Harness overhead: each default-suite task's fit through `bench.fit.train.fit` against a bare PyTorch loop.

Both build the same model around the suite's baseline variant, on the same data, for the same number
of steps. The harness fit runs as a cell's fits do: `bench.fit.loop`, with MLflow logging its curves into a
nested run of a (temporary) SQLite tracking store.

The two run in lockstep: after each harness step, a hook takes one step of the bare loop (its own
model, optimiser and batches). Our shared machines change speed by 10-30% from one second to the
next; two whole fits run one after the other see different machines, two steps tens of
milliseconds apart see the same one. The hook's time is taken out of the harness's. For each round:

    train_s   first training step's start to last step's end, validation passes taken out
              (the bare loop's: its steps, each with the fetch of its next batch)
    eval_s    validation passes (the harness validates every epoch; the bare loop does not)
    fixed_s   the harness: everything else in the fit (MLflow run, data and model before the first
              step, teardown after the last); the bare loop: data, model and first batch

The ratio harness/bare of `train_s` is taken round by round. The task configs are read from the task
registry at run time, so they are whatever the suite uses today.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.fit.loop import FitHooks
from bench.measure.perf import bare
from bench.measure.perf.common import PerfContext, Spread, best_ratio, goal_text, interleave, paired_ratios

if TYPE_CHECKING:
    from rich.console import RenderableType

    from bench.record.tracking import Tracker
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
class Round:
    """One lockstep fit of a task: each contender's training seconds and steps, the harness's split."""

    harness_train_s: float
    bare_train_s: float
    eval_s: float
    harness_fixed_s: float
    bare_fixed_s: float
    harness_steps: int
    bare_steps: int


class _BareAlongside(FitHooks):
    """A bare loop that takes one step (and fetches its next batch) after each step of the harness fit."""

    def __init__(self, setup: bare.BareSetup) -> None:
        self.setup, self.batches = setup, bare.train_batches(setup)
        self.pending = next(self.batches, None)
        self.seconds: list[float] = []  # of each call, so that the harness's own time can be told apart
        self.steps = 0

    def batch_ended(self, step: int) -> None:
        start = time.perf_counter()
        if self.pending is not None:
            bare.step(self.setup, self.pending)
            self.steps += 1
            self.pending = next(self.batches, None)
        self.seconds.append(time.perf_counter() - start)


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
    from bench.record.tracking import Tracker, default_tracking_uri

    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp:
        start = time.perf_counter()
        tracker = Tracker(default_tracking_uri(Path(tmp)), Path(tmp) / "artifacts")
        parent = _created(tracker, tracker.cell_run("perf-harness", "bench perf harness", {"suite": "perf"}))
        yield _Tracking(tracker, parent, time.perf_counter() - start)
        tracker.finish(parent)


def lockstep_fit(
    task: Task, variant: VariantSpec, config: TaskConfig, seed: int, data_dir: Path, run: _Tracking
) -> Round:
    """One fit as a cell runs it (a nested MLflow run, `bench.fit.train.fit` logging into it, the run closed),
    with the bare loop's steps taken alongside."""
    import torch

    from bench.fit.train import fit
    from bench_tasks.base import OptimConfig

    start = time.perf_counter()
    alongside = _BareAlongside(bare.build(task, variant, config, OptimConfig(), data_dir, seed))
    bare_fixed = time.perf_counter() - start
    start = time.perf_counter()
    tags = {"task": task.id, "variant": variant.id, "suite": "perf"}
    run_id = _created(run.tracker, run.tracker.child_run(run.parent, f"{task.id}-harness", tags, {"seed": seed}))
    logger = run.tracker.logger(run_id)
    result = fit(
        task, variant, config, OptimConfig(), seed=seed, data_dir=data_dir, test=False, logger=logger,
        hooks=[alongside], threads=torch.get_num_threads(),  # the count `bench perf` set for every contender
    )  # fmt: skip
    run.tracker.finish(run_id)
    total = time.perf_counter() - start
    # the hook after the last step runs after the harness's span ends; every earlier one inside it
    harness_train = result.step_seconds - sum(alongside.seconds[:-1])
    return Round(
        harness_train_s=harness_train,
        bare_train_s=sum(alongside.seconds),
        eval_s=result.eval_seconds,
        harness_fixed_s=total - harness_train - result.eval_seconds - sum(alongside.seconds),
        bare_fixed_s=bare_fixed,
        harness_steps=result.steps,
        bare_steps=alongside.steps,
    )


def task_config(task: Task, options: HarnessSettings) -> TaskConfig:
    config = task.config(options.scale)  # type: ignore[arg-type]
    return dataclasses.replace(config, max_steps=options.max_steps) if options.max_steps else config


def measure(options: HarnessSettings, ctx: PerfContext) -> dict[str, Any]:
    """Harness vs bare loop for every chosen task, in lockstep, round by round."""
    from bench.plan.suites import default
    from bench.registry import tasks, variants

    suite = default()
    variant = variants().get(suite.baseline)
    chosen = tasks().resolve(list(options.tasks or suite.tasks))
    configs = {task.id: task_config(task, options) for task in chosen}
    for task in chosen:
        task.prepare(ctx.data_dir)
    with _tracking() as run:
        ctx.note("warm-up fit (first-use costs of imports and MLflow, not recorded)")
        lockstep_fit(chosen[0], variant, dataclasses.replace(configs[chosen[0].id], max_steps=2), options.seed,
                     ctx.data_dir, run)  # fmt: skip
        contenders = {task.id: partial(lockstep_fit, task, variant, configs[task.id], options.seed, ctx.data_dir, run)
                      for task in chosen}  # fmt: skip
        rounds = interleave(contenders, options.repeats, ctx.note)
    return {
        "variant": variant.id,
        "mlflow_store_open_s": run.open_s,
        "goals": {"ratio_max": RATIO_GOAL, "fixed_s_max": FIXED_GOAL_S},
        "tasks": {task.id: summarise(configs[task.id], rounds[task.id]) for task in chosen},
    }


def _spread(values: list[float]) -> dict[str, float]:
    return Spread.of(values).as_dict()


def summarise(config: TaskConfig, rounds: list[Round]) -> dict[str, Any]:
    """Per task: the round-by-round ratio of training time, each contender's seconds, and the goals."""
    harness_s, bare_s = [r.harness_train_s for r in rounds], [r.bare_train_s for r in rounds]
    ratio, fixed = Spread.of(paired_ratios(harness_s, bare_s)), Spread.of([r.harness_fixed_s for r in rounds])
    return {
        "config": {"type": type(config).__name__, **config.as_dict()},
        "ratio": ratio.as_dict(),
        "ratio_of_best": best_ratio(harness_s, bare_s),
        "harness": {
            "steps": rounds[0].harness_steps,
            "train_s": _spread(harness_s),
            "eval_s": _spread([r.eval_s for r in rounds]),
            "fixed_s": fixed.as_dict(),
        },
        "bare": {
            "steps": rounds[0].bare_steps,
            "train_s": _spread(bare_s),
            "fixed_s": _spread([r.bare_fixed_s for r in rounds]),
        },
        "ratio_goal_met": ratio.median <= RATIO_GOAL,
        "fixed_goal_met": fixed.median < FIXED_GOAL_S,
    }


def render(result: dict[str, Any]) -> list[RenderableType]:
    from rich.table import Table

    table = Table(
        title=f"Harness overhead: fit through bench.fit.train.fit vs a bare loop in lockstep ({result['variant']})",
        caption="s: training seconds, median over rounds; harness/bare: median \\[min-max] of the rounds' ratios; "
        "best/best: fastest over fastest; fixed: setup + teardown of a fit; "
        f"MLflow store opened once per run: {result['mlflow_store_open_s']:.2f} s",
    )
    columns = ("task", "steps", "bare s", "harness s", "harness/bare", "best/best", f"<= {RATIO_GOAL}x",
               "fixed s", f"< {FIXED_GOAL_S} s", "bare fixed s", "eval s")  # fmt: skip
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
        )
    return [table]
