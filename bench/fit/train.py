"""One fit of a task around a variant (`bench.fit.loop`): the unit of work of every trial and every seed."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.fit.loop import Diverged as Diverged  # raised by fits; callers catch it from here
from bench.fit.loop import FitHooks, FitLoop
from bench.fit.memory import PeakMemory

if TYPE_CHECKING:
    import lightning as L
    from torch import Tensor, nn

    from bench_tasks.base import DataSource, OptimConfig, Task, TaskConfig
    from bench_tasks.module import TaskModule
    from bench_variants.base import VariantSpec


@dataclass
class FitResult:
    """What one fit measured. `val` and `test` hold the stage's metrics without their prefix."""

    val: dict[str, float]
    test: dict[str, float]
    train_seconds: float
    examples_per_second: float
    peak_memory_bytes: int  # the process's peak resident (CPU) or allocated (CUDA) memory during this fit
    parameters: int
    peak_memory_growth_bytes: int = 0  # how far that peak rose above the memory in use when the fit began
    data_source: dict[str, str] = field(default_factory=dict)
    steps: int = 0  # optimiser steps taken
    step_seconds: float = 0.0  # first step's start to last step's end, validation taken out
    eval_seconds: float = 0.0  # validation passes during training (and the curve's points)
    #: the metric along the fit, at log-spaced steps ending at the last (`bench.fit.loop.curve_steps`):
    #: [{"step", "val": {...}, "test": {...}}]; final fits only (a tuning fit has its validations)
    curve: list[dict[str, Any]] = field(default_factory=list)
    #: a speed task's validation metric at every look ({"step", "val"}), up to the step that reached its target
    looks: list[dict[str, Any]] = field(default_factory=list)
    #: what the final test pass got right per test item, packed (`bench_record.schema.ItemScores`, see `item_record`);
    #: None for a task whose primary metric is no per-item accuracy, a data-parallel fit, a fast dev run or tuning
    item_scores: dict[str, Any] | None = None


def item_record(metric: str, items: Mapping[str, Tensor]) -> dict[str, Any] | None:
    """A seed record's `item_scores`: the per-item values of the task's primary `metric` from `FitLoop.test_items`,
    packed; None when the fit kept none of it (perplexity, AUROC, steps to a target: see `bench_tasks.module`)."""
    from bench_record.schema import ItemScores

    values = items.get(metric)
    return None if values is None else ItemScores.pack(metric, values.numpy()).to_dict()


class FitTimeout(RuntimeError):
    """A fit that ran past its task's time limit (`Task.fit_time_limit`): hung, or far slower than declared."""


@contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise `FitTimeout` in this thread if the block runs longer than `seconds` (POSIX, main thread).

    An interval timer's signal interrupts Python code and blocking waits (a sleep, a lock); elsewhere,
    or off the main thread, the block runs unguarded.
    """
    import signal
    import threading

    if seconds <= 0 or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise FitTimeout(f"{what} ran past its time limit of {seconds:.0f} s (Task.fit_time_limit); stopped as hung")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def share_initial_values(net: nn.Module, reference: nn.Module) -> int:
    """Copy into `net` every parameter and buffer that `reference` has under the same name and shape.

    `reference` is the same task's model around the baseline variant, built under the same seed:
    every variant of a task then starts seed s from the same values for everything it shares with
    the baseline (embeddings, MLPs, norms, heads, output projections), each drawn by the model's own
    initialisation, and seed noise cancels in paired differences. Returns the number of tensors copied.
    """
    import torch

    theirs = {**dict(reference.named_parameters()), **dict(reference.named_buffers())}
    copied = 0
    with torch.no_grad():
        for name, tensor in [*net.named_parameters(), *net.named_buffers()]:
            other = theirs.get(name)
            if other is not None and other.shape == tensor.shape and other.dtype == tensor.dtype:
                tensor.copy_(other)
                copied += 1
    return copied


class CurveStates(FitHooks):
    """Copies the model's state (on the CPU) into `into[step]` after each point of the loop's curve."""

    def __init__(self, loop: FitLoop, into: dict[int, dict[str, Any]]) -> None:
        self.loop, self.into = loop, into

    def batch_ended(self, step: int) -> None:
        if self.loop.curve and self.loop.curve[-1]["step"] == step:
            state = self.loop.module.net.state_dict()
            self.into[step] = {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


def env_threads() -> int | None:
    """Torch threads per fit from `$BENCH_THREADS` (None when unset); ValueError naming the fix when bad."""
    value = os.environ.get("BENCH_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"$BENCH_THREADS {value!r}: give a positive whole number of torch threads "
                         "(e.g. BENCH_THREADS=1), or unset it")  # fmt: skip
    return int(value)


def skip_absent_gpu_probe() -> None:
    """On a machine without a usable GPU, hide CUDA devices from this process (it has none to use).

    Every AdamW step asks `torch.accelerator` whether a GPU is available; with none, torch re-probes
    NVML each time (loading the library anew), about 60 us per step: 1-3% of a small CPU fit. An empty
    `CUDA_VISIBLE_DEVICES` answers at once. Nothing changes where a GPU is usable or the variable is set.
    """
    import torch

    if "CUDA_VISIBLE_DEVICES" not in os.environ and not torch.cuda.is_available():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def build(
    task: Task,
    variant: VariantSpec,
    config: TaskConfig,
    optim: OptimConfig,
    seed: int,
    data_dir: Path,
    init_reference: VariantSpec | None = None,
    threads: int | None = None,
) -> tuple[TaskModule, L.LightningDataModule, DataSource]:
    """The seeded model and data of one fit, and the data source it reads; torch runs on `threads`
    threads where given, else on `$BENCH_THREADS` where set, else as the process already does.

    Every process of a data-parallel fit (`bench.fit.ddp`) calls this with the same arguments, so all
    start from the same values and draw the same batches in the same order.
    """
    import lightning as L
    import torch

    from bench_tasks.base import DataSource

    L.seed_everything(seed, workers=True, verbose=False)
    threads = threads or env_threads()
    if threads:
        torch.set_num_threads(threads)
    source = task.prepare(data_dir)
    datamodule = task.datamodule(data_dir, config, seed)
    chosen = getattr(datamodule, "source", None)  # a config may pick among a task's sources
    if isinstance(chosen, DataSource):
        source = chosen
    torch.manual_seed(seed)  # the model's initial values follow the seed alone
    module = task.build_model(variant, config, optim)
    if init_reference is not None and init_reference.id != variant.id:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the reference's values under this seed, as its own fit would draw them
            reference = task.build_model(init_reference, config, optim)
        share_initial_values(module.net, reference.net)
        del reference
    # what the fit draws from here (masks, flips, dropout) follows the seed alone too, not how many values
    # the variant's model drew: every variant of a seed gets the same draws (paired, like its data order)
    torch.manual_seed(training_seed(seed))
    return module, datamodule, source


def training_seed(seed: int) -> int:
    """The seed of the random draws a fit makes while training: disjoint from the initial values' stream."""
    return seed + 7_919_000_000


def fit(
    task: Task,
    variant: VariantSpec,
    config: TaskConfig,
    optim: OptimConfig,
    *,
    seed: int,
    data_dir: Path,
    test: bool = True,
    hooks: list[FitHooks] | None = None,
    logger: Any = False,
    fast_dev_run: bool = False,
    init_reference: VariantSpec | None = None,
    keep_states: dict[int, dict[str, Any]] | None = None,
    threads: int | None = None,
) -> FitResult:
    """Train `task` around `variant` with `seed`; validate, and test unless `test` is False (tuning).

    With `init_reference` (the suite's baseline variant), the initial values `variant` shares with
    it by name and shape are the reference's under `seed` (see `share_initial_values`).
    `fast_dev_run` takes one batch of each stage and logs nothing: a check of the whole path.
    With `config.devices` above 1 the fit runs data-parallel (`bench.fit.ddp`), this process as rank 0.
    `keep_states` is filled with the model's state at each point of the curve (`bench.fit.reuse`).
    `threads`: torch threads for this fit (see `build`).
    """
    import torch

    skip_absent_gpu_probe()
    module, datamodule, source = build(task, variant, config, optim, seed, data_dir, init_reference, threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    logger = None if fast_dev_run else logger or None
    loops: AbstractContextManager[FitLoop]
    if config.devices > 1:
        from bench.fit.ddp import FitSpec, rank_zero

        spec = FitSpec.of(task, variant, config, optim, seed, data_dir, test, fast_dev_run, init_reference)
        loops = rank_zero(spec, build, module, datamodule, logger, hooks or ())
    else:
        loops = nullcontext(FitLoop(module, datamodule, device, logger, hooks or (), config.precision))
    limit = task.fit_time_limit(config)
    status = "failed"
    with (
        PeakMemory(device.type, interval_s=0.01) as memory,
        time_limit(limit, f"a fit of {task.id} x {variant.id}"),
        loops as loop,
    ):
        if keep_states is not None:
            loop.hooks.append(CurveStates(loop, keep_states))
        try:
            start = time.perf_counter()
            val = loop.fit(config, validate=not test, fast_dev_run=fast_dev_run, curve=test and not fast_dev_run,
                           target=task.speed_target(config))  # fmt: skip
            train_seconds = time.perf_counter() - start
            speed = loop.speed_metrics()  # a speed task's steps to its target: the primary metric of both splits
            val = {**val, **speed}
            test_metrics = {**loop.test(fast_dev_run), **speed} if test else {}
            items = loop.test_items() if test and not fast_dev_run else {}  # a dev run tests one batch
            status = "success"
        finally:
            loop.close(status)
    timings = loop.timings
    return FitResult(
        val=val,
        test=test_metrics,
        train_seconds=train_seconds,
        examples_per_second=timings.examples / timings.batch_seconds if timings.batch_seconds else 0.0,
        peak_memory_bytes=memory.peak_bytes,
        peak_memory_growth_bytes=memory.growth_bytes,
        parameters=sum(p.numel() for p in module.net.parameters()),
        data_source=source.public(data_dir),
        steps=timings.steps,
        step_seconds=timings.step_seconds(),
        eval_seconds=timings.eval_seconds(),
        curve=loop.curve,
        looks=loop.looks,
        item_scores=item_record(task.metric, items),
    )
