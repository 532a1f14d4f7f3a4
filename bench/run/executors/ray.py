"""Cells as Ray tasks on a cluster (`bench run --ray auto|ADDRESS|local`).

The driver claims each cell in the results store and counts its attempt, as a local run does, then
submits it as a Ray task that asks for the resources its task config declares (`Task.resources`), so
Ray packs cells onto the nodes. A node reads nothing of the results store: it gets the cell's saved
seeds and baseline from a small actor on the driver's node (`ResultSink`) and sends every seed and the
cell's record back through it, before going on, so the driver's machine alone writes the store and the
nodes share no file system. Trials live in the Optuna storage, which every node reaches (PostgreSQL on
a cluster). A node that dies mid-cell costs the fit in flight: Ray runs the task again elsewhere
(`RETRIES`) and the cell resumes from its finished trials and saved seeds.
"""

from __future__ import annotations

import collections
import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.options import RAY_MISSING, RunOptions, storage_url
from bench.record.store import ResultStore, Superseded
from bench.run.cells import close_left_runs, run_claimed, saved_fits
from bench.run.executors.local import longest_first, outcome, rebuild_cell, record_lost, run_context
from bench.run.progress import RunProgress

if TYPE_CHECKING:
    from bench.plan.matrix import Cell
    from bench.plan.suites import Suite
    from bench_tasks.base import Resources

#: times Ray runs a cell's task again after the worker or node running it died
RETRIES = 3


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(RAY_MISSING) from None
    return ray


def connect(ray: Any, address: str) -> None:
    """Join the cluster at `address` ("auto": the one `ray start` made on this machine, or $RAY_ADDRESS);
    "local" starts a one-node Ray here for this run."""
    import logging

    try:
        ray.init(address=None if address == "local" else address, logging_level=logging.WARNING,
                 log_to_driver=False, include_dashboard=False, configure_logging=False)  # fmt: skip
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ValueError(
            f"--ray {address}: cannot join a Ray cluster ({exc}). Start one first (`ray start --head` here, "
            "`ray start --address HEAD:6379` on the other nodes) and pass auto or the head's address, "
            "or --ray local for a one-node Ray on this machine"
        ) from None


def check_cluster(ray: Any, options: RunOptions) -> None:
    """Across machines, the trials and runs must live on servers every node reaches, not in local files."""
    import socket

    hosts = {n["NodeManagerHostname"] for n in ray.nodes() if n.get("Alive")}
    if hosts <= {socket.gethostname()}:
        return  # every node on this machine: the local files serve them all
    url = storage_url(options)
    if url.startswith("sqlite"):
        raise ValueError(
            f"--ray: the cluster spans {len(hosts)} machines and the Optuna storage is a local SQLite file; "
            "pass --storage postgresql://USER@HOST/DB, a server every node reaches"
        )
    tracking = options.tracking_uri
    if tracking != "none" and not (tracking or "").startswith(("http://", "https://")):
        raise ValueError(
            f"--ray: the cluster spans {len(hosts)} machines and MLflow logs to a local store; pass "
            "--tracking-uri http://HOST:5000 (an `mlflow server` every node reaches), or --tracking-uri none"
        )


class ResultSink:
    """A Ray actor on the driver's node: the one writer of the results store, and a node's view of it.

    Each run of a cell takes a lease when it pulls the cell's files, and only the newest lease writes:
    a run that Ray retried elsewhere (its node seen lost) may still be computing where it was, and its
    late seeds would otherwise land beside the retry's, a seed fitted twice.
    """

    def __init__(self, results: str, tracking_uri: str | None) -> None:
        self.store, self.tracking_uri = ResultStore(Path(results)), tracking_uri
        self.leases: dict[str, int] = {}

    def files(self, cell_id: str, task_id: str) -> tuple[int, dict[str, str]]:
        """A new lease on the cell, and its saved seeds and its task's baselines by path relative to the store."""
        self.leases[cell_id] = lease = self.leases.get(cell_id, 0) + 1
        root = self.store.root
        paths = [*(root / "partial" / cell_id).glob("seed-*.json"), *(root / "baselines").glob(f"{task_id}__*.json")]
        return lease, {str(p.relative_to(root)): p.read_text() for p in paths if p.is_file()}

    def _check(self, cell_id: str, lease: int) -> None:
        if self.leases.get(cell_id) != lease:
            raise Superseded(f"cell {cell_id}: a newer run of it (lease {self.leases.get(cell_id)}) holds it; "
                             f"this run's (lease {lease}) writes are refused")  # fmt: skip

    def write_seed(self, cell_id: str, record: dict[str, Any], lease: int) -> None:
        self._check(cell_id, lease)
        self.store.write_seed(cell_id, record)

    def write_cell(self, record: dict[str, Any], lease: int) -> tuple[str, str]:
        """Store the record as a local run would; returns where it went (relative) and what was written."""
        from bench.record.tracking import public_uri

        self._check(record["cell_id"], lease)
        if "mlflow" in record and self.tracking_uri:  # named from the driver's store, not the node's scratch
            record["mlflow"]["tracking_uri"] = public_uri(self.tracking_uri, self.store.root)
        path = self.store.write_cell(record)
        return str(path.relative_to(self.store.root)), path.read_text()


class MirrorStore(ResultStore):
    """A node's results store: a scratch copy of what the cell reads, every write sent to the driver's
    store first (and kept here too, so the run's MLflow artifact is the file the driver wrote)."""

    def __init__(self, scratch: Path, sink: Any, ray: Any) -> None:
        super().__init__(scratch)
        self.sink, self.ray, self.lease = sink, ray, 0

    def pull(self, cell_id: str, task_id: str) -> None:
        self.lease, files = self.ray.get(self.sink.files.remote(cell_id, task_id))
        for relative, text in files.items():
            path = self.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def write_seed(self, cell_id: str, seed_result: dict[str, Any]) -> None:
        self._sent(self.sink.write_seed.remote(cell_id, seed_result, self.lease))  # saved on the driver first
        super().write_seed(cell_id, seed_result)

    def _sent(self, call: Any) -> Any:
        """What the sink answered; `Superseded` where a newer run of the cell refused this one's write."""
        try:
            return self.ray.get(call)
        except self.ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, Superseded):
                raise exc.cause from None
            raise

    def write_cell(self, result: dict[str, Any]) -> Path:
        relative, text = self._sent(self.sink.write_cell.remote(result, self.lease))
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


def run_cell_on_node(
    suite: Suite, options: RunOptions, task_id: str, variant_id: str, sink: Any, threads: int
) -> dict[str, Any]:
    """A Ray task: one claimed cell, run on whichever node Ray chose, its files going through `sink`."""
    import io

    import ray
    import torch
    from rich.console import Console

    torch.set_num_threads(threads)
    cell = rebuild_cell(suite, task_id, variant_id)
    with tempfile.TemporaryDirectory(prefix="bench-cell-") as scratch:
        store = MirrorStore(Path(scratch), sink, ray)
        store.pull(cell.id, task_id)
        ctx = run_context(options, store, Console(file=io.StringIO()), 1, worker=True)
        record = run_claimed(cell, ctx)
    ended: dict[str, Any] = {key: record[key] for key in ("status", "reason", "kept_ok_result") if key in record}
    return {**ended, "node": ray.get_runtime_context().get_node_id()[:8]}


def run_on_ray(todo: list[Cell], suite: Suite, options: RunOptions, console: Any) -> None:
    """Claim each cell, run it as a Ray task, and record how each ended; the store is written here only."""
    ray = import_ray()
    connect(ray, options.ray or "auto")
    try:
        check_cluster(ray, options)
        _Driver(ray, options, console, len(todo)).run(todo, suite)
    finally:
        ray.shutdown()


class _Driver:
    """Submits cells while the cluster has room for them, and records each as it ends.

    Only as many cells are in flight as the live nodes' CPUs and GPUs hold: a Ray task blocked in
    `ray.get` (a node sending a seed to the driver) lends its CPUs back to Ray, which would start the
    next queued cell beside it, so a node would run more cells than it has CPUs. Cells are claimed as
    they are submitted, so a second driver on the same results takes the cells this one has not.
    """

    def __init__(self, ray: Any, options: RunOptions, console: Any, n_cells: int) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from bench.record.tracking import default_tracking_uri

        self.ray, self.options = ray, options
        self.store = ResultStore(options.results)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        uri = None if options.tracking_uri == "none" else options.tracking_uri or default_tracking_uri(options.results)
        sink = ray.remote(ResultSink).options(num_cpus=0, scheduling_strategy=here)
        self.sink = sink.remote(str(options.results.resolve()), uri)  # starts while the driver gets ready
        # the MLflow store made once here, before the nodes race to make it; its tracker closes what lost nodes leave
        self.tracker = run_context(options, self.store, console, 0).tracker
        self.task = ray.remote(run_cell_on_node)
        self.progress = RunProgress(console, n_cells)
        self.running: dict[Any, tuple[Cell, Resources, contextlib.ExitStack]] = {}

    def run(self, todo: list[Cell], suite: Suite) -> None:
        pending = collections.deque(longest_first(todo))
        try:
            with self.progress:
                while pending or self.running:
                    while pending and (room := self._room_for(pending[0])) != "later":
                        cell = pending.popleft()
                        self._submit(cell, suite) if room == "now" else self._unplaceable(cell)
                    if self.running:
                        done, _ = self.ray.wait(list(self.running), num_returns=1, timeout=5.0)
                        for ref in done:
                            self._finish(ref)
        finally:  # stopped (Ctrl-C, the cluster gone): the claims go; a next run resumes the cells
            for _, _, held in self.running.values():
                held.close()

    def _room_for(self, cell: Cell) -> str:
        """Whether `cell` fits beside the cells in flight ("now"), will once some end ("later"), or fits
        no cluster of the live nodes even alone ("never": submitted, it would wait for ever)."""
        total = self.ray.cluster_resources()  # live nodes only: a lost node's CPUs are gone
        need = cell.task.resources(cell.config)
        if need.cpus > total.get("CPU", 0) or need.gpus > total.get("GPU", 0):
            return "never"
        busy = [r for _, r, _ in self.running.values()]
        free_cpus = total.get("CPU", 0) - sum(r.cpus for r in busy)
        free_gpus = total.get("GPU", 0) - sum(r.gpus for r in busy)
        return "now" if need.cpus <= free_cpus and need.gpus <= free_gpus else "later"

    def _submit(self, cell: Cell, suite: Suite) -> None:
        held = contextlib.ExitStack()
        if not held.enter_context(self.store.claim(cell.id)):
            self.progress.log(f"[yellow]{cell.label}: another run is working on this cell; left to it[/]")
            self.progress.end_cell()
            return
        need = cell.task.resources(cell.config)
        self.store.start_attempt(cell.id, saved_fits(cell, self.store, storage_url(self.options)))
        task = self.task.options(num_cpus=need.cpus, num_gpus=need.gpus, max_retries=RETRIES, retry_exceptions=False)
        ref = task.remote(suite, self.options, cell.task.id, cell.variant.id, self.sink, need.cpus)
        self.running[ref] = (cell, need, held)

    def _unplaceable(self, cell: Cell) -> None:
        from bench.run.cells import base_record

        need, total = cell.task.resources(cell.config), self.ray.cluster_resources()
        reason = (
            f"needs {need.cpus} CPU(s) and {need.gpus} GPU(s) on one node (Task.resources); the Ray cluster has "
            f"{total.get('CPU', 0):g} CPU(s) and {total.get('GPU', 0):g} GPU(s) in all: add a node that has them"
        )
        with self.store.claim(cell.id) as mine:
            if mine:
                self.store.write_cell({**base_record(cell), "status": "failed", "reason": reason})
        self.progress.log(f"{cell.label}: failed (no node has the resources it needs)")
        self.progress.end_cell()

    def _finish(self, ref: Any) -> None:
        cell, _, held = self.running.pop(ref)
        try:
            self.progress.log(f"{cell.label}: {_collect(self.ray, ref, self.store, cell)}")
            close_left_runs(cell, self.tracker)  # still held: a run left RUNNING died with a lost node
        finally:
            held.close()  # the claim goes as soon as the cell is recorded
        self.progress.end_cell()


def _collect(ray: Any, ref: Any, store: ResultStore, cell: Cell) -> str:
    """How a cell's task ended, its attempt recorded; a task Ray gave up on is recorded failed."""
    try:
        record = ray.get(ref)
    except ray.exceptions.RayError as exc:  # the worker or node died RETRIES + 1 times, or the cluster went
        how = f"its Ray worker or node died while running it, {RETRIES + 1} times ({type(exc).__name__})"
        store.end_attempt(cell.id, "failed", how)
        return record_lost(store, cell, how)
    store.end_attempt(cell.id, record["status"], record.get("reason", ""))
    return f"{outcome(record)} (on node {record['node']})"
