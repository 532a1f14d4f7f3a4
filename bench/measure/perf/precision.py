"""bf16 autocast against fp32: each default-suite task's training step of QKV at both precisions.

Per task of the `default` suite, two bare training steps (`bench.measure.perf.bare`) of the suite's baseline
variant, built alike (the same seed, so the same initial values) for the task's config at "32-true" and at
"bf16-mixed" (torch's bf16 autocast around the forward pass and loss, as a fit runs it: `bench.fit.loop.autocast`;
on CPUs with AMX its matrix products run on the tile units, whose gain grows with the width of the model). Both
step through the same batches (the first few of the task's training data, in turn), the same number of steps per
sample, interleaved round by round; the ratio fp32 / bf16 of their step times is taken round by round (above 1:
bf16 is faster).

Having taken the same steps on the same batches from the same initial values, the two models' last training
losses say whether bf16 trains as fp32 does: a check of quality over a few steps, not a fit to the budget.
Beside each task: the precision its config uses, and a flag where the measurement disagrees with it (bf16
faster by more than `SPEEDUP` with its loss within `LOSS_TOL` of fp32's, and the config at fp32; or the config
at bf16 without that).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.measure.perf import bare
from bench.measure.perf.common import PerfContext, Spread, best_ratio, interleave, paired_ratios, seconds_per_call

if TYPE_CHECKING:
    from rich.console import RenderableType

    from bench_tasks.base import Task, TaskConfig
    from bench_variants.base import VariantSpec

FP32, BF16 = "32-true", "bf16-mixed"
SPEEDUP = 1.2  # fp32 / bf16 step time above which bf16 pays (below it, a change of arithmetic is not worth it)
LOSS_TOL = 0.05  # relative difference of the two losses after the same steps that still counts as equal


@dataclass(frozen=True)
class PrecisionSettings:
    """Attributes:
    repeats: Rounds; each times both precisions of a task once.
    sample_s: Least duration of one timing sample (the steps per sample are fp32's, the same at bf16).
    batches: Training batches both contenders step through in turn.
    scale: Which of each task's configs to use.
    tasks: Task ids; None: the `default` suite's tasks.
    seed: Seed of both models and of the data order.
    """

    repeats: int = 5
    sample_s: float = 0.4
    batches: int = 4
    scale: str = "default"
    tasks: tuple[str, ...] | None = None
    seed: int = 0


def settings(quick: bool, repeats: int | None = None) -> PrecisionSettings:
    """Full: the default configs, 5 rounds of 0.4 s samples. Quick: the smoke configs, 2 rounds, 2 batches."""
    base = PrecisionSettings(repeats=2, sample_s=0.02, batches=2, scale="smoke") if quick else PrecisionSettings()
    return dataclasses.replace(base, repeats=repeats or base.repeats)


class _Contender:
    """One precision's model stepping through the shared batches; times a sample of `calls` steps."""

    def __init__(self, setup: bare.BareSetup, batches: list[Any]) -> None:
        self.setup, self.batches = setup, itertools.cycle(batches)
        self.calls, self.steps, self.loss = 1, 0, float("nan")

    def step(self) -> None:
        self.loss = float(bare.step(self.setup, next(self.batches)))
        self.steps += 1

    def sample(self) -> float:
        return seconds_per_call(self.step, self.calls)


def _contenders(
    task: Task, variant: VariantSpec, config: TaskConfig, options: PrecisionSettings, ctx: PerfContext
) -> dict[str, _Contender]:
    """Both precisions' models of `config`, alike but for their precision, each warmed up by a step; the steps per
    sample set from fp32's second step, the same for both, so both take the same steps on the same batches."""
    from bench_tasks.base import OptimConfig

    task.prepare(ctx.data_dir)
    setups = {p: bare.build(task, variant, dataclasses.replace(config, precision=p), OptimConfig(), ctx.data_dir,
                            options.seed) for p in (FP32, BF16)}  # fmt: skip
    batches = list(itertools.islice(bare.train_batches(setups[FP32]), options.batches))
    contenders = {p: _Contender(setup, batches) for p, setup in setups.items()}
    for c in contenders.values():
        c.step()  # warm-up: a first step pays for one-off allocations and kernel choices
    calls = max(1, round(options.sample_s / max(seconds_per_call(contenders[FP32].step), 1e-6)))
    contenders[BF16].step()  # as many steps as fp32 took
    for c in contenders.values():
        c.calls = calls
    return contenders


def verdict(ratio: float, loss_fp32: float, loss_bf16: float) -> str:
    """The precision the measurement favours: bf16 where it is faster by more than `SPEEDUP` at an equal loss."""
    equal = abs(loss_bf16 - loss_fp32) <= LOSS_TOL * abs(loss_fp32)
    return BF16 if ratio > SPEEDUP and equal else FP32


def _task_result(config: TaskConfig, contenders: dict[str, _Contender], rounds: dict[str, list[float]]) -> dict:
    """One task's figures from its rounds (seconds per step of each precision), beside its config's precision."""
    ratios = paired_ratios(rounds[FP32], rounds[BF16])
    loss = {p: c.loss for p, c in contenders.items()}
    favoured, configured = verdict(Spread.of(ratios).median, loss[FP32], loss[BF16]), config.precision
    return {
        "d_model": config.d_model,
        "head_dim": config.d_model // config.n_heads,
        "steps": contenders[FP32].steps,
        "step_ms": {p: Spread.of([t * 1e3 for t in rounds[p]]).as_dict() for p in (FP32, BF16)},
        "ratio": Spread.of(ratios).as_dict(),
        "ratio_of_best": best_ratio(rounds[FP32], rounds[BF16]),
        "loss": loss,
        "config_precision": configured,
        "measured": favoured,
        "flag": None if favoured == configured else f"the config says {configured}; measured: {favoured}",
    }


def _about(task_id: str, note: Callable[[str], None]) -> Callable[[str], None]:
    return lambda message: note(f"{task_id}: {message}")


def measure(options: PrecisionSettings, ctx: PerfContext) -> dict[str, Any]:
    """Per task, its two precisions' steps interleaved round by round; models built one task at a time."""
    from bench.plan.suites import default
    from bench.registry import tasks, variants

    suite = default()
    variant = variants().get(suite.baseline)
    per_task = {}
    for task in tasks().resolve(list(options.tasks or suite.tasks)):
        ctx.note(f"{task.id}: building its model at both precisions")
        config = task.config(options.scale)  # type: ignore[arg-type]
        contenders = _contenders(task, variant, config, options, ctx)
        rounds = interleave({p: c.sample for p, c in contenders.items()}, options.repeats, _about(task.id, ctx.note))
        per_task[task.id] = _task_result(config, contenders, rounds)
    return {"variant": variant.id, "speedup": SPEEDUP, "loss_tol": LOSS_TOL, "tasks": per_task}


def render(result: dict[str, Any]) -> list[RenderableType]:
    from rich.table import Table

    table = Table(
        title=f"bf16 autocast against fp32: a training step of {result['variant']} per task",
        caption=f"fp32/bf16: round-by-round ratio of step times, median \\[min-max] (above 1: bf16 faster); "
        f"loss: after the same steps on the same batches; measured: bf16 where over {result['speedup']}x "
        f"with the losses within {result['loss_tol']:.0%}; flag: the config's precision is not the measured one",
    )
    columns = ("task", "d_model", "head dim", "fp32 ms", "bf16 ms", "fp32/bf16", "loss fp32", "loss bf16",
               "config", "measured", "flag")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col in ("task", "config", "measured", "flag") else "right")
    for task_id, t in result["tasks"].items():
        table.add_row(
            task_id, str(t["d_model"]), str(t["head_dim"]), Spread.from_dict(t["step_ms"][FP32]).show(1, ""),
            Spread.from_dict(t["step_ms"][BF16]).show(1, ""), Spread.from_dict(t["ratio"]).show(2),
            f"{t['loss'][FP32]:.4g}", f"{t['loss'][BF16]:.4g}", t["config_precision"], t["measured"],
            "[red]disagrees[/]" if t["flag"] else "",
        )  # fmt: skip
    return [table]
