"""The fit loop: a `TaskModule` trained on one device, epoch by epoch, validated, then tested.

It does what a Lightning `Trainer` did for our fits, in the same order and with the same arithmetic
(seeded data order, AdamW, gradient-norm clipping, a per-step schedule, validation after each full
epoch, exact epoch means), so every result is the same number; it leaves out the Trainer's per-step
machinery (hook dispatch, progress and result bookkeeping: about 1 ms of a 10 ms CPU step, `bench
perf` shows the ratio to a bare loop). The data stay Lightning DataModules, and MLflow curves go
through the same Lightning `MLFlowLogger` (`bench.record.tracking.batched_logger`). A config's `precision`
is what the Trainer's `precision=` did: "bf16-mixed" runs each forward pass and loss, training and scoring,
under torch's bf16 autocast (`autocast`), with fp32 weights and an untouched optimizer.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import lightning as L
    import torch

    from bench_tasks.base import SpeedTarget, TaskConfig
    from bench_tasks.module import TaskModule

LOG_EVERY = 50  # steps between training-loss curve points (a point per step would cost a SQLite write each)
#: points of a fit's metric curve: the steps T/2^(n-1), ..., T/4, T/2, T of a fit of T steps (log-spaced,
#: the last the end), so a verdict can be read at half and at full budget
CURVE_POINTS = 4


def curve_steps(total: int, points: int = CURVE_POINTS) -> tuple[int, ...]:
    """The optimiser steps after which a fit of `total` steps records its curve (distinct, the last `total`)."""
    if total < 1:
        return ()
    return tuple(sorted({max(1, round(total / 2**k)) for k in range(points)}))


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """Where a forward pass and its loss run under `precision` (`bench_tasks.base.PRECISIONS`): "bf16-mixed" is
    torch's bf16 autocast (its listed ops in bf16; weights, gradients and the optimizer's state stay fp32, so
    backward and the step run outside it), "32-true" nothing at all, so an fp32 fit is what it always was."""
    import torch

    from bench_tasks.base import PRECISIONS

    if precision not in PRECISIONS:
        raise ValueError(
            f"precision {precision!r} is not one of {', '.join(map(repr, PRECISIONS))} (Lightning's names)"
        )
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext()


class Diverged(RuntimeError):
    """A fit whose training loss became non-finite: the cell is reported "diverged", never ranked."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training loss became {loss} at step {step}")
        self.step, self.loss = step, loss


class MetricLogger(Protocol):
    """Where curves go: Lightning's logger interface (`log_metrics`, `save`, `finalize`)."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def save(self) -> None: ...
    def finalize(self, status: str) -> None: ...


class FitHooks:
    """What a caller watches during a fit (progress bars, pruning); every method a no-op here."""

    def fit_started(self, loop: FitLoop, plan: Plan) -> None:
        """Before the first step of `loop`'s fit, which runs as `plan` says (a hook may keep `loop` to read it
        mid-fit: `FitLoop.peek`). A data-parallel fit (`bench.fit.ddp`) does not pass it on: a look there would have
        to run on every rank, so its hooks never look mid-fit."""

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        """Before the first batch of `epoch` (0-based) of `epochs`, which has `batches` batches."""

    def batch_ended(self, step: int) -> None:
        """After optimiser step `step` (1-based: the number of steps taken so far)."""

    def validated(self, epoch: int, metrics: dict[str, float]) -> None:
        """After the validation that ends `epoch`; `metrics` unprefixed. May raise to stop the fit."""


@dataclass(frozen=True)
class Plan:
    """How long a fit runs: Lightning's `max_epochs`, `max_steps` and `limit_*_batches` semantics."""

    epochs: int
    batches: int  # training batches per epoch
    steps: int  # optimiser steps in all (what the schedule spans)
    eval_batches: int | None = None  # per validation and test pass; None: all

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """The steps after which a fit that records its curve scores itself (`curve_steps`)."""
        return curve_steps(self.steps)

    @classmethod
    def of(cls, config: TaskConfig, loader_length: int, fast_dev_run: bool = False) -> Plan:
        if fast_dev_run:  # one batch of each stage: a check of the whole path
            return cls(epochs=1, batches=min(1, loader_length), steps=1, eval_batches=1)
        limit = config.limit_train_batches
        whole = isinstance(limit, int) and not isinstance(limit, bool)
        batches = min(loader_length, int(limit)) if whole else int(loader_length * float(limit))
        steps = batches * config.max_epochs
        steps = min(steps, config.max_steps) if config.max_steps > 0 else steps
        return cls(epochs=config.max_epochs, batches=batches, steps=steps)


@dataclass
class Timings:
    """Examples trained on, time inside training steps (throughput), and the span of the steps."""

    examples: int = 0
    batch_seconds: float = 0.0
    steps: int = 0
    first: float | None = None
    last: float = 0.0
    evals: list[tuple[float, float]] = field(default_factory=list)

    def step_seconds(self) -> float:
        """First step's start to last step's end, validation passes taken out."""
        if self.first is None:
            return 0.0
        inside = [(a, b) for a, b in self.evals if a >= self.first and b <= self.last]
        return self.last - self.first - sum(b - a for a, b in inside)

    def eval_seconds(self) -> float:
        return sum(b - a for a, b in self.evals)


def examples_in(batch: Any) -> int:
    """The examples of a batch: the length of its first tensor (batches are sequences or dicts of tensors)."""
    first = batch[0] if isinstance(batch, list | tuple) else next(iter(batch.values()))
    return len(first)


class FitLoop:
    """One fit of `module` on `datamodule`: `fit()` trains (and validates), `test()` scores the test split."""

    def __init__(
        self,
        module: TaskModule,
        datamodule: L.LightningDataModule,
        device: torch.device,
        logger: MetricLogger | None = None,
        hooks: Iterable[FitHooks] = (),
        precision: str = "32-true",
    ) -> None:
        self.module, self.datamodule, self.device = module.to(device), datamodule, device
        self.precision = precision  # of every forward pass, training and scoring alike (`autocast`)
        autocast(device, precision)  # an unknown one fails here, before any work
        #: a batch's loss to back-propagate; a data-parallel loop (`bench.fit.ddp`) puts its own here
        self.train_batch: Callable[[Any], torch.Tensor] = self.module.train_batch
        self.logger, self.hooks = logger, list(hooks)
        self.timings = Timings()
        self.step = 0  # optimiser steps taken
        self.epoch = 0  # epochs completed
        self.val: dict[str, float] = {}
        #: the metric along the fit: {"step", "val", "test"} at each of `Plan.checkpoints` (when asked for)
        self.curve: list[dict[str, Any]] = []
        self._curve_at: frozenset[int] = frozenset()
        self._curve_loaders: dict[str, Iterable[Any]] = {}
        self._eval_batches: int | None = None
        self._final_step = 0
        #: a speed task's target (`fit(target=...)`), its validation metric at every look {"step", "val"},
        #: and the step at which it was first reached (None: not yet, or never: the fit ran to its cap)
        self.target: SpeedTarget | None = None
        self.looks: list[dict[str, Any]] = []
        self.reached: int | None = None
        self._stop_at_target = True

    def _batches(self, loader: Iterable[Any], limit: int | None) -> Iterator[Any]:
        """The first `limit` batches (all of a sized loader when None), on the device.

        It stops once it has them, never asking the loader for one more: a shuffling sampler draws its
        next permutation only when exhausted, and the data order of later epochs depends on that draw.
        """
        from lightning.fabric.utilities.apply_func import move_data_to_device

        if limit is None and isinstance(loader, Sized):
            limit = len(loader)
        on_cpu = self.device.type == "cpu"
        for batch in itertools.islice(loader, limit):
            yield batch if on_cpu else move_data_to_device(batch, self.device)

    def _log(self, stage: str, metrics: dict[str, float], step: int) -> None:
        if self.logger and metrics:
            self.logger.log_metrics({**{f"{stage}/{k}": v for k, v in metrics.items()}, "epoch": self.epoch}, step)

    def fit(
        self,
        config: TaskConfig,
        validate: bool,
        fast_dev_run: bool = False,
        curve: bool = False,
        target: SpeedTarget | None = None,
        stop_at_target: bool = True,
    ) -> dict[str, float]:
        """Train as `config` says; validate after each full epoch when `validate`. Returns the last validation.

        `fast_dev_run` trains one batch and validates one, whatever `validate` says: a check of the whole path.
        With `curve`, the validation and test splits are scored at each of the plan's checkpoints
        (`self.curve`; the last point's test is `test()`'s), without changing the training's arithmetic.
        With a speed `target`, the validation metric is scored every `target.every` steps and at the last
        (`self.looks`, in a forked RNG like the curve); the fit stops at the first look that reaches it
        (`self.reached`) unless `stop_at_target` is False (a convergence run, `bench converge`).
        """
        validate = validate or fast_dev_run
        self.datamodule.prepare_data()
        self.datamodule.setup("fit")
        train_loader = self.datamodule.train_dataloader()
        plan = Plan.of(config, len(train_loader), fast_dev_run)
        val_loader = self.datamodule.val_dataloader() if validate else None
        if curve:
            self._start_curve(plan)
        if target is not None and not fast_dev_run:
            self.target, self._stop_at_target = target, stop_at_target
            self._final_step = plan.steps
        self.optimizer = optimizer = self.module.build_optimizer()
        self.scheduler = scheduler = self.module.build_scheduler(optimizer, plan.steps)
        params = [p for group in optimizer.param_groups for p in group["params"]]  # clipped in this order
        for hook in self.hooks:
            hook.fit_started(self, plan)
        self.module.train()
        while self.epoch < plan.epochs and self.step < plan.steps and not self._stopped():
            for hook in self.hooks:
                hook.epoch_started(self.epoch, plan.epochs, plan.batches)
            taken = 0
            for batch in self._batches(train_loader, plan.batches):
                self._train_step(batch, optimizer, scheduler, params)
                taken += 1
                if self.step >= plan.steps or self._stopped():
                    break
            if val_loader is not None and taken == plan.batches:
                self._validate(val_loader, plan.eval_batches)
            self._log("train", self._epoch_metrics("train"), self.step - 1)
            self.epoch += 1
            if self.logger:
                self.logger.save()
        return self.val

    def _train_step(
        self, batch: Any, optimizer: torch.optim.Optimizer, scheduler: Any, params: list[torch.nn.Parameter]
    ) -> None:
        """Loss, backward, clip, AdamW, schedule; stops the fit at a non-finite loss."""
        import torch

        start = time.perf_counter()
        self.timings.first = start if self.timings.first is None else self.timings.first
        with autocast(self.device, self.precision):
            loss = self.train_batch(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.module.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, self.module.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        value = float(loss.detach().float().mean())
        if self.logger and self.step % LOG_EVERY == 0:
            self.logger.log_metrics({"train/loss_step": value}, self.step)
        self.step += 1
        if not math.isfinite(value):
            raise Diverged(self.step, value)
        now = time.perf_counter()
        self.timings.examples += examples_in(batch)
        self.timings.batch_seconds += now - start
        self.timings.steps, self.timings.last = self.timings.steps + 1, now
        if self.step in self._curve_at:
            self._curve_point()
        if self.target and (self.step % self.target.every == 0 or self.step == self._final_step):
            self._look()
        for hook in self.hooks:
            hook.batch_ended(self.step)

    def speed_metrics(self) -> dict[str, float]:
        """A speed task's primary metric, the steps to its target (censored at the cap), and whether it was
        reached; {} without a target."""
        if self.target is None:
            return {}
        from bench_tasks.base import REACHED_TARGET, STEPS_TO_TARGET

        steps = self.reached if self.reached is not None else self._final_step
        return {STEPS_TO_TARGET: float(steps), REACHED_TARGET: float(self.reached is not None)}

    def _stopped(self) -> bool:
        """Whether a speed task's fit has reached its target and stops there."""
        return self.reached is not None and self._stop_at_target

    def _look(self) -> None:
        """Score the target's validation metric at this step (in a forked RNG, as a curve point is)."""
        assert self.target is not None
        val = self.peek()
        value = val.get(self.target.metric)
        if value is None:
            raise RuntimeError(f"the speed target reads val/{self.target.metric}, which the task does not log; "
                               f"it logs {sorted(val)}: fix the task's speed_target metric")  # fmt: skip
        self.looks.append({"step": self.step, "val": value})
        self._log("target", {self.target.metric: value}, self.step - 1)
        if self.reached is None and self.target.reached(value):
            self.reached = self.step

    def peek(self) -> dict[str, float]:
        """The validation metrics of the model now, mid-fit (for a hook: `FitHooks.fit_started`), scored in a
        forked RNG as a curve point is, so the fit trains as it would have without the look."""
        import torch

        started = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            val = self._score("val", self.datamodule.val_dataloader(), self._eval_batches)
        self.timings.evals.append((started, time.perf_counter()))
        return val

    def _start_curve(self, plan: Plan) -> None:
        self.datamodule.setup("test")
        self._curve_loaders = {"val": self.datamodule.val_dataloader(), "test": self.datamodule.test_dataloader()}
        self._curve_at, self._eval_batches = frozenset(plan.checkpoints), plan.eval_batches
        self._final_step = plan.steps

    def _curve_point(self) -> None:
        """Score the curve's splits at this step, in a forked RNG: the fit draws what it would have drawn
        without the point (the same batches, masks and dropout), so its result does not depend on the curve.
        The last point's test score is `test()`'s, not a second pass."""
        import torch

        started = time.perf_counter()
        point: dict[str, Any] = {"step": self.step}
        with torch.random.fork_rng(devices=[]):
            for stage, loader in self._curve_loaders.items():
                if stage == "test" and self.step == self._final_step:
                    continue
                point[stage] = self._score(stage, loader, self._eval_batches)
        self.curve.append(point)
        self.timings.evals.append((started, time.perf_counter()))
        for stage in ("val", "test"):
            if stage in point:
                self._log(f"curve_{stage}", point[stage], self.step - 1)

    @contextmanager
    def _scoring(self) -> Iterator[None]:
        """Eval mode without autograd for a validation or test pass; training mode again after."""
        import torch

        self.module.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.module.train()

    def _score(self, stage: str, loader: Iterable[Any], limit: int | None) -> dict[str, float]:
        with self._scoring(), autocast(self.device, self.precision):
            for batch in self._batches(loader, limit):
                self.module.eval_batch(stage, batch)
        return self._epoch_metrics(stage)

    def _epoch_metrics(self, stage: str) -> dict[str, float]:
        """The stage's epoch means (a data-parallel loop first adds up every process's sums)."""
        return self.module.epoch_metrics(stage)

    def _validate(self, loader: Iterable[Any], limit: int | None) -> None:
        started = time.perf_counter()
        self.val = self._score("val", loader, limit)
        self.timings.evals.append((started, time.perf_counter()))
        self._log("val", self.val, self.step - 1)
        for hook in self.hooks:
            hook.validated(self.epoch, self.val)

    def test(self, fast_dev_run: bool = False) -> dict[str, float]:
        """The test split's metrics (unprefixed) for the model as trained."""
        self.datamodule.setup("test")
        metrics = self._score("test", self.datamodule.test_dataloader(), 1 if fast_dev_run else None)
        self._log("test", metrics, self.step)
        if self.curve and self.curve[-1]["step"] == self.step and "test" not in self.curve[-1]:
            self.curve[-1]["test"] = metrics  # the end of the curve is the fit's test score
        return metrics

    def test_items(self) -> dict[str, torch.Tensor]:
        """metric -> what the last test pass got right per test item (bool, in the test split's fixed order), for a
        task that keeps per-item values (`TaskModule.item_scores`); {} otherwise."""
        return self.module.item_scores("test")

    def close(self, status: str = "success") -> None:
        """Write the curve points still held by the logger."""
        if self.logger:
            self.logger.finalize(status)
