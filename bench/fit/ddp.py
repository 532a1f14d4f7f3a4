"""Data-parallel fits: `TaskConfig.devices` processes train one model on shards of the same global batches.

The calling process is rank 0 and keeps everything a fit has (hooks, the MLflow logger, the time
limit, the `FitResult`). `rank_zero` starts ranks 1..N-1 as "spawn" processes; each rebuilds the
same fit from picklable inputs (`FitSpec`: task and variant ids looked up in the registries, the
configs, the seed, the data folder) through the same `build` as rank 0, then runs the same
`FitLoop` without hooks or logger. Every rank reads the same seeded loaders, takes its near-equal
part of each global batch along dim 0 (`shard`), and DDP averages the gradients, so the N processes
take the optimiser steps one process would take on the whole batch. Each rank's loss is weighted
by its share of the batch's examples, so unequal shards (a short last batch) average right too.
Metric sums of train, val and test are added up over the ranks before the means are taken.

Engine: `torch.nn.parallel.DistributedDataParallel` used directly, the engine Lightning's DDP
strategy wraps. Fabric's `DDPStrategy` assumes it owns its process: it writes MASTER_ADDR/PORT into
the environment of the process that calls it, sets Lightning's rank globals, and never destroys the
process group it made, so the next data-parallel fit of a long-lived rank 0 (a tuning study runs
dozens) would find a group whose other ranks are gone. Here the group is made on a store that rank
0 opens on a port the OS picks (no race between finding a free port and binding it when cells run
side by side), and torn down after every fit: gloo on CPU, nccl on CUDA with rank r on cuda:r.

Stopping: a hook on rank 0 that raises after a validation (pruning, a caller's stop) makes rank 0
broadcast a stop flag that the other ranks hear at the same point; a non-finite loss is seen by
all ranks at once (each step's loss value is the whole batch's); anything else that ends rank 0
(its time limit, a hook between steps) ends in rank 0's `finally`, which stops every helper. A
helper that fails sends its error to rank 0, which raises `RankFailed` naming it.

Measured against one process (`tests/fit/test_ddp.py`: the reverse task at smoke scale, 2 CPU processes,
lr 1e-2): the same steps; after 40 steps val and test accuracy and loss identical, after 100 steps
accuracy identical and loss within 3e-7 relative. The test allows 1e-3 absolute on accuracy and
1e-3 relative on loss. Randomness drawn inside a training step (dropout, augmentation) comes from
each rank's own generator, seeded alike, so such fits match one process in distribution only.
Buffers are synced once, not before every step: ours are built alike on every rank and never
change (no batch norm). On CPU (gloo) a helper that dies breaks rank 0's next collective at once;
on CUDA (nccl, not yet run here: no GPU) that may take until the collective timeout.

Imported only when a fit with `devices` above 1 runs (and by its helper processes).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from bench.fit.loop import Diverged, FitHooks, FitLoop, MetricLogger, examples_in

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    import lightning as L

    from bench_tasks.base import DataSource, OptimConfig, SpeedTarget, Task, TaskConfig
    from bench_tasks.module import TaskModule
    from bench_variants.base import VariantSpec

#: `bench.fit.train.build`: the seeded model, data and data source of a fit, the same in every process
Build = Callable[..., "tuple[TaskModule, L.LightningDataModule, DataSource]"]

HOST = "127.0.0.1"
GRACE_S = 30.0  # how long rank 0 waits for helpers to finish after a fit that succeeded


class RankFailed(RuntimeError):
    """A helper process of a data-parallel fit failed; the message carries its error."""


class _Stopped(Exception):
    """A helper heard rank 0 stop the fit (a hook of rank 0 raised): it ends quietly."""


@dataclass(frozen=True)
class FitSpec:
    """Everything a helper needs to rebuild a fit: plain, picklable values."""

    task: str
    variant: str
    init_reference: str | None
    config: TaskConfig
    optim: OptimConfig
    seed: int
    data_dir: Path
    test: bool
    fast_dev_run: bool
    threads: int  # torch threads per process: rank 0's share of its own threads
    timeout_s: float  # the longest any rank waits at one collective, or for the helpers to start

    @classmethod
    def of(
        cls,
        task: Task,
        variant: VariantSpec,
        config: TaskConfig,
        optim: OptimConfig,
        seed: int,
        data_dir: Path,
        test: bool,
        fast_dev_run: bool,
        init_reference: VariantSpec | None,
    ) -> FitSpec:
        """The spec of a fit of these objects; ValueError when a helper could not find them by id."""
        for obj, kind in ((task, "task"), (variant, "variant"), (init_reference, "variant")):
            if obj is not None:
                _check_registered(obj, kind)
        return cls(task.id, variant.id, init_reference.id if init_reference else None, config, optim, seed,
                   Path(data_dir), test, fast_dev_run, threads=max(1, torch.get_num_threads() // config.devices),
                   timeout_s=task.fit_time_limit(config))  # fmt: skip


def _check_registered(obj: Any, kind: str) -> None:
    """Helpers rebuild a fit from registered ids: a stand-in object would silently become another one."""
    from bench.registry import UnknownNameError, tasks, variants

    registry = tasks() if kind == "task" else variants()
    try:
        found = registry.get(obj.id)
    except (UnknownNameError, ImportError) as error:
        raise ValueError(
            f"a data-parallel fit needs a registered {kind}: its other processes look {obj.id!r} up by id "
            f"({error}); register it as a `bench.{kind}s` entry point, or run with devices=1"
        ) from error
    if type(found) is not type(obj) or (dataclasses.is_dataclass(obj) and found != obj):
        raise ValueError(
            f"{kind} {obj.id!r} given to a data-parallel fit differs from the one registered under that id, "
            f"which its other processes would build ({found!r}); run it with devices=1"
        )


def device_of(rank: int) -> torch.device:
    """Rank r's device: cuda:r with GPUs, else the CPU."""
    return torch.device("cuda", rank) if torch.cuda.is_available() else torch.device("cpu")


def shard(batch: Any, rank: int, world: int) -> Any:
    """Rank `rank`'s part of a global batch: every tensor split along dim 0 into `world` near-equal parts.

    The first `n % world` ranks get one example more (`torch.tensor_split`); sequences and dicts keep
    their shape, other values pass whole. Returns None when this rank's part is empty.
    """
    if isinstance(batch, Tensor):
        part = batch.tensor_split(world)[rank]
        return part if len(part) else None
    if isinstance(batch, dict):
        parts = {key: shard(value, rank, world) for key, value in batch.items()}
        return None if any(p is None for p in parts.values()) else parts
    if isinstance(batch, list | tuple):
        items = [shard(value, rank, world) for value in batch]
        return None if any(p is None for p in items) else type(batch)(items)
    return batch


class _Loss(nn.Module):
    """The module DDP wraps: its forward is a training batch's loss, so DDP syncs the gradients of it."""

    def __init__(self, module: TaskModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch: Any) -> Tensor:
        return self.module.train_batch(batch)


def _no_buffer_sync() -> dict[str, Any]:
    """DDP's switch for syncing buffers before every forward, off: named `broadcast_buffers` in older torch."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    return {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}


class DDPFitLoop(FitLoop):
    """`FitLoop` as one rank of a data-parallel fit: sharded batches, synced gradients, summed metrics."""

    def __init__(
        self,
        module: TaskModule,
        datamodule: L.LightningDataModule,
        device: torch.device,
        logger: MetricLogger | None = None,
        hooks: Iterable[FitHooks] = (),
        precision: str = "32-true",
    ) -> None:
        from torch.nn.parallel import DistributedDataParallel

        super().__init__(module, datamodule, device, logger, hooks, precision)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        ids = [device.index] if device.type == "cuda" else None
        # static_graph: the same parameters take part every step (unused ones included, found once);
        # buffers are synced once here, not every step (ours never change: no batch norm)
        self.ddp = DistributedDataParallel(_Loss(self.module), device_ids=ids, static_graph=True, **_no_buffer_sync())
        self.train_batch = self._train_batch

    def _train_batch(self, part: Any) -> Tensor:
        """This rank's loss, weighted by its share of the batch's examples; its value is the whole batch's loss.

        DDP averages gradients over the ranks, so weighting rank r's mean loss by world x n_r / n makes
        the average the gradient of the whole batch's mean. The returned value is the batch's mean loss
        on every rank (the gradient stays the weighted local one), so all ranks log the same curve and
        meet a non-finite loss at the same step.
        """
        loss = self.ddp(part)
        n = examples_in(part)
        value = loss.detach().float()
        totals = torch.stack([value * n, torch.full_like(value, n)])
        dist.all_reduce(totals)  # (sum of losses x examples, examples) over the ranks
        weighted = loss * (self.world * n / totals[1])
        return weighted + (totals[0] / totals[1] - weighted).detach()

    def _batches(self, loader: Iterable[Any], limit: int | None) -> Iterator[Any]:
        """This rank's parts of the first `limit` global batches (empty parts skipped in scoring)."""
        if limit is None and isinstance(loader, Sized):
            limit = len(loader)
        parts = (shard(batch, self.rank, self.world) for batch in itertools.islice(loader, limit))
        return super()._batches(filter(self._keep, parts), None)

    def _keep(self, part: Any) -> bool:
        """Whether to score `part`; an empty one in training is an error, since every rank must step."""
        if part is None and self.module.training:
            raise ValueError(
                f"a training batch has fewer examples than the {self.world} devices of this fit: pick a batch "
                "size and a train split size whose remainder is 0 or at least the number of devices"
            )
        return part is not None

    def _epoch_metrics(self, stage: str) -> dict[str, float]:
        self.module.reduce_sums(stage, self._all_sum)
        return super()._epoch_metrics(stage)

    def test_items(self) -> dict[str, Tensor]:
        """None: this rank scored only its shards of the test batches, so a data-parallel fit records no item scores."""
        return {}

    def _all_sum(self, sums: dict[str, list[float]]) -> dict[str, list[float]]:
        """Each metric's [sum, count] added up over the ranks; a rank that scored no batch adds nothing."""
        every: list[Any] = [None] * self.world
        dist.all_gather_object(every, sorted(sums))
        names = sorted(set().union(*every))
        if not names:
            return {}
        totals = torch.tensor([sums.get(name, [0.0, 0.0]) for name in names], dtype=torch.float64, device=self.device)
        dist.all_reduce(totals)
        return dict(zip(names, totals.tolist(), strict=True))

    def fit(
        self,
        config: TaskConfig,
        validate: bool,
        fast_dev_run: bool = False,
        curve: bool = False,
        target: SpeedTarget | None = None,
        stop_at_target: bool = True,
    ) -> dict[str, float]:
        """`FitLoop.fit`; then the examples trained on are every rank's (throughput counts the global batch).

        A speed target's looks score every rank's share of the validation split (summed), so every rank
        reads the same value and stops at the same step."""
        val = super().fit(config, validate, fast_dev_run, curve, target, stop_at_target)
        examples = torch.tensor([float(self.timings.examples)], dtype=torch.float64, device=self.device)
        dist.all_reduce(examples)
        self.timings.examples = int(examples.item())
        return val


def _broadcast_stop(stop: bool, device: torch.device) -> bool:
    """Rank 0's `stop`, on every rank (the others pass False)."""
    flag = torch.tensor([int(stop)], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


class _RankZeroHooks(FitHooks):
    """Rank 0's hooks, then the stop flag after every validation: set when one of them raised."""

    def __init__(self, hooks: Iterable[FitHooks], device: torch.device) -> None:
        self.hooks, self.device = list(hooks), device

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        for hook in self.hooks:
            hook.epoch_started(epoch, epochs, batches)

    def batch_ended(self, step: int) -> None:
        for hook in self.hooks:
            hook.batch_ended(step)

    def validated(self, epoch: int, metrics: dict[str, float]) -> None:
        try:
            for hook in self.hooks:
                hook.validated(epoch, metrics)
        except BaseException:
            with suppress(Exception):  # the hook's exception is the one to report
                _broadcast_stop(True, self.device)
            raise
        _broadcast_stop(False, self.device)


class _Listen(FitHooks):
    """A helper's one hook: after each validation, stop when rank 0 says so."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def validated(self, epoch: int, metrics: dict[str, float]) -> None:
        if _broadcast_stop(False, self.device):
            raise _Stopped


def _join_group(rank: int, world: int, store: dist.Store, device: torch.device, timeout_s: float) -> None:
    """Join the fit's process group: gloo on CPU, nccl on CUDA."""
    if dist.is_initialized():
        raise RuntimeError("this process already belongs to a process group; run one data-parallel fit at a time")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))


def _leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclass
class _Helper:
    """A helper process and rank 0's end of the pipe it reports on."""

    rank: int
    process: BaseProcess
    conn: Connection

    def report(self) -> str | None:
        """What the helper said went wrong, if it said so (without waiting)."""
        with suppress(EOFError, OSError):
            while self.conn.poll():
                kind, text = self.conn.recv()
                if kind == "failed":
                    return f"rank {self.rank} failed: {text}"
        return None


def _start_helpers(spec: FitSpec, build: Build, helpers: list[_Helper]) -> None:
    """Start ranks 1..N-1 into `helpers` (each one as soon as it runs, so a failed start still stops the others)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    for rank in range(1, spec.config.devices):
        ours, theirs = context.Pipe()
        process = context.Process(target=_helper_main, args=(rank, spec, build, theirs), daemon=True,
                                  name=f"bench-ddp-rank{rank}")  # fmt: skip
        process.start()
        theirs.close()
        helpers.append(_Helper(rank, process, ours))


def _await_ready(helpers: list[_Helper], timeout_s: float) -> None:
    """Wait until every helper has rebuilt the fit; RankFailed at once when one fails or dies instead."""
    from multiprocessing.connection import wait

    waiting = {h.rank: h for h in helpers}
    deadline = time.monotonic() + timeout_s
    while waiting:
        ready = wait([h.conn for h in waiting.values()] + [h.process.sentinel for h in waiting.values()],
                     timeout=max(0.0, deadline - time.monotonic()))  # fmt: skip
        if not ready:
            raise RankFailed(f"ranks {sorted(waiting)} did not rebuild the fit within {timeout_s:.0f} s")
        for helper in list(waiting.values()):
            message = None
            with suppress(EOFError, OSError):
                message = helper.conn.recv() if helper.conn.poll() else None
            if message is not None and message[0] == "ready":
                del waiting[helper.rank]
            elif message is not None:
                raise RankFailed(f"rank {helper.rank} could not rebuild the fit: {message[1]}")
            elif not helper.process.is_alive():
                raise RankFailed(f"rank {helper.rank} exited (code {helper.process.exitcode}) before joining the fit")


def _stop_helpers(helpers: list[_Helper], grace_s: float) -> None:
    """Let helpers finish for `grace_s`, then terminate (then kill) whatever still runs."""
    deadline = time.monotonic() + grace_s
    for helper in helpers:
        helper.process.join(max(0.0, deadline - time.monotonic()))
    for helper in helpers:
        if helper.process.is_alive():
            helper.process.terminate()
        helper.process.join(5.0)
        if helper.process.is_alive():
            helper.process.kill()
            helper.process.join()
        helper.conn.close()


def _helper_failure(helpers: list[_Helper], error: BaseException) -> RankFailed | None:
    """A helper's own failure that caused `error` on rank 0 (a collective cut short), if there is one.

    Rank 0's own exceptions (a hook's, its time limit, a divergence) pass unchanged; only an error of
    the process group itself is traced back to the helper that failed, which reported before exiting.
    """
    if not (isinstance(error, dist.DistError) or type(error) is RuntimeError):
        return None
    for _ in range(20):  # the report may trail the broken connection by a moment
        for helper in helpers:
            report = helper.report()
            if report is not None:
                return RankFailed(report)
            if not helper.process.is_alive() and helper.process.exitcode:
                return RankFailed(f"rank {helper.rank} exited with code {helper.process.exitcode}")
        time.sleep(0.05)
    return None


@contextmanager
def rank_zero(
    spec: FitSpec,
    build: Build,
    module: TaskModule,
    datamodule: L.LightningDataModule,
    logger: MetricLogger | None,
    hooks: Iterable[FitHooks],
) -> Iterator[FitLoop]:
    """Rank 0's loop of a data-parallel fit of `module` (built by `build` from `spec`), helpers running.

    On exit every helper has ended and the process group is gone, whatever happened.
    """
    if device_of(0).type == "cuda" and spec.config.devices > torch.cuda.device_count():
        raise ValueError(f"the config asks for {spec.config.devices} devices and this machine has "
                         f"{torch.cuda.device_count()} GPUs; set devices to at most that")  # fmt: skip
    threads, done = torch.get_num_threads(), False
    helpers: list[_Helper] = []
    try:
        _start_helpers(spec, build, helpers)
        _await_ready(helpers, spec.timeout_s)
        store = dist.TCPStore(HOST, 0, spec.config.devices, True, timedelta(seconds=spec.timeout_s),
                              wait_for_workers=False)  # fmt: skip
        for helper in helpers:
            helper.conn.send(store.port)
        _join_group(0, spec.config.devices, store, device_of(0), spec.timeout_s)
        torch.set_num_threads(spec.threads)
        yield DDPFitLoop(
            module, datamodule, device_of(0), logger, [_RankZeroHooks(hooks, device_of(0))], spec.config.precision
        )
        done = True
    except BaseException as error:
        failure = _helper_failure(helpers, error)
        if failure is not None:
            raise failure from error
        raise
    finally:
        _stop_helpers(helpers, GRACE_S if done else 0.0)
        _leave_group()
        torch.set_num_threads(threads)


def _exit_with_parent() -> None:
    """End this helper when rank 0's process ends, however it ends (no orphan waits for its timeout)."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch(parent: BaseProcess) -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, args=(parent,), daemon=True).start()


def _task(spec: FitSpec) -> Task:
    from bench.registry import tasks

    return tasks().get(spec.task)


def _rebuild(spec: FitSpec, build: Build) -> tuple[TaskModule, L.LightningDataModule]:
    """The fit rank 0 built, from registered ids."""
    from bench.registry import tasks, variants

    task, variant = tasks().get(spec.task), variants().get(spec.variant)
    reference = variants().get(spec.init_reference) if spec.init_reference else None
    module, datamodule, _ = build(task, variant, spec.config, spec.optim, spec.seed, spec.data_dir, reference)
    torch.set_num_threads(spec.threads)
    return module, datamodule


def _helper_main(rank: int, spec: FitSpec, build: Build, conn: Connection) -> None:
    """A helper's life: rebuild the fit, say so, join the group, run the loop; report any failure to rank 0."""
    _exit_with_parent()
    try:
        module, datamodule = _rebuild(spec, build)
    except BaseException as error:
        conn.send(("failed", f"{type(error).__name__}: {error}"))
        raise SystemExit(1) from None
    conn.send(("ready", ""))
    try:
        store = dist.TCPStore(HOST, conn.recv(), spec.config.devices, False, timedelta(seconds=spec.timeout_s))
        _join_group(rank, spec.config.devices, store, device_of(rank), spec.timeout_s)
        loop = DDPFitLoop(
            module, datamodule, device_of(rank), hooks=[_Listen(device_of(rank))], precision=spec.config.precision
        )
        loop.fit(spec.config, validate=not spec.test, fast_dev_run=spec.fast_dev_run,
                 curve=spec.test and not spec.fast_dev_run,
                 target=_task(spec).speed_target(spec.config))  # as rank 0's (bench.fit.train.fit)  # fmt: skip
        if spec.test:
            loop.test(spec.fast_dev_run)
    except (_Stopped, Diverged):
        pass  # rank 0 stopped the fit, or meets the same divergence and reports it
    except BaseException as error:
        conn.send(("failed", f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=-3)}"))
        raise SystemExit(1) from None
    finally:
        _leave_group()
