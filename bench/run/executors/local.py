"""Cells on this machine: one after another in this process, or in `--jobs N` worker processes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from bench.options import RunOptions, storage_url
from bench.plan import matrix
from bench.record.store import ResultStore
from bench.registry import tasks as task_registry
from bench.registry import variants as variant_registry
from bench.run.cells import RunContext, base_record, close_left_runs, run_cell
from bench.run.progress import RunProgress

if TYPE_CHECKING:
    from bench.plan.suites import Suite
    from bench.record.tracking import Tracker

#: dispatch order of the task families under --jobs: the longest fits first, so no worker idles at the end
FAMILY_COST_RANK = {"vision": 0, "anomaly": 1, "lm": 2, "synthetic": 3}


def longest_first(cells: list[matrix.Cell]) -> list[matrix.Cell]:
    return sorted(cells, key=lambda c: FAMILY_COST_RANK.get(c.task.family, 0))


#: trackers a worker process keeps between the cells it runs (making one costs seconds: MLflow's client,
#: its store's schema check); keyed by tracking URI and artifact folder
_WORKER_TRACKERS: dict[tuple[str, Path | None], Tracker] = {}


def run_context(
    options: RunOptions, store: ResultStore, console: Any, n_cells: int, worker: bool = False
) -> RunContext:
    """The store, trial storage, MLflow tracker (None when off or unreachable) and progress of a run.

    A `worker` (a process that runs cell after cell for a driver) keeps its tracker for the next cell.
    """
    from bench.record.tracking import NoTracker, Tracker, default_tracking_uri

    tracker: Tracker | None = None
    if options.tracking_uri != "none":
        uri = options.tracking_uri or default_tracking_uri(options.results)
        local = not uri.startswith(("http://", "https://"))  # a server keeps its runs' artifacts itself
        key = (uri, options.results / "mlartifacts" if local else None)
        try:
            tracker = _WORKER_TRACKERS.get(key) if worker else None
            if tracker is None:
                tracker = Tracker(uri, artifact_root=key[1])
                for problem in tracker.problems:
                    console.print(f"[yellow]{escape(problem)}[/]", highlight=False)
        except Exception as exc:  # MLflow observes: without it the run goes on, and says so
            from bench_record.uris import redact

            console.print(f"[yellow]MLflow unavailable ({type(exc).__name__}: {redact(str(exc))[:200]}); "
                          "running without tracking[/]")  # fmt: skip
        if worker and tracker:
            _WORKER_TRACKERS[key] = tracker
    return RunContext(
        store, storage_url(options), tracker or NoTracker(), options.data_dir, RunProgress(console, n_cells)
    )


def rebuild_cell(suite: Suite, task_id: str, variant_id: str) -> matrix.Cell:
    """A cell rebuilt from the registries in another process: the task's whole row is expanded, so a
    variant that coincides with another keeps its n/a reason."""
    task = task_registry().get(task_id)
    row = matrix.expand(suite, [task], matrix.resolve_variants(suite, variant_registry()))
    (cell,) = [c for c in row if c.variant.id == variant_id]
    return cell


def outcome(record: dict[str, Any]) -> str:
    """A cell's end as the progress log says it."""
    kept = "; the earlier ok result is kept (the attempt is in attempts/)" if record.get("kept_ok_result") else ""
    return f"{record['status']}{kept}"


def run_here(todo: list[matrix.Cell], suite: Suite, options: RunOptions, console: Any) -> None:
    """One cell after another in this process, with live progress down to the batch."""
    ctx = run_context(options, ResultStore(options.results), console, len(todo))
    with ctx.progress:
        for cell in todo:
            ctx.progress.start_cell(cell.label, suite.trials + len(suite.seeds))
            run_cell(cell, ctx)
            ctx.progress.end_cell()


def run_in_processes(todo: list[matrix.Cell], suite: Suite, options: RunOptions, console: Any) -> None:
    """Cells in `jobs` worker processes, torch threads split between them; progress per cell."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // options.jobs)
    store = ResultStore(options.results)
    tracker = run_context(options, store, console, 0).tracker  # the MLflow store made once, not racing
    context = multiprocessing.get_context("spawn")
    pending = longest_first(todo)  # long cells first: no idle tail

    def pool_round(cells: list[matrix.Cell], workers: int, progress: RunProgress) -> list[matrix.Cell]:
        """Run `cells`; return those cut short because a worker process died (the pool breaks for all)."""
        cut: list[matrix.Cell] = []
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_run_one, suite, options, c.task.id, c.variant.id, threads): c for c in cells}
            for future in as_completed(futures):
                cell = futures[future]
                try:
                    status = future.result()
                except BrokenProcessPool:
                    cut.append(cell)
                    continue
                progress.log(f"{cell.label}: {status}")
                progress.end_cell()
        return cut

    with RunProgress(console, len(pending)) as progress:
        for _ in range(len(pending) + 1):  # each round finishes a cell or fails one, or no worker can start
            if not pending:
                break
            cut = pool_round(pending, options.jobs, progress)
            # a worker died (OOM killer, kill -9): the cells it and its siblings were running left a claim
            # behind; each of those runs again alone, so a cell that kills its worker fails by itself
            started = [c for c in cut if store.claim_left(c.id)]
            for cell in started:
                if pool_round([cell], 1, progress):
                    progress.log(f"{cell.label}: {record_lost(store, cell)}")
                    with store.claim(cell.id) as mine:  # its dead worker's claim is stale: taken over
                        if mine:
                            close_left_runs(cell, tracker)
                    progress.end_cell()
            if cut:
                progress.log(
                    f"[yellow]a worker process died: {len(started)} cell(s) it cut short ran again alone, "
                    f"{len(cut) - len(started)} waiting cell(s) went to new workers[/]"
                )
            pending = [c for c in cut if c not in started]
            if pending and len(pending) == len(cut) and not started:  # workers die before any cell starts
                for cell in pending:
                    progress.log(f"{cell.label}: {record_lost(store, cell)}")
                break


def record_lost(
    store: ResultStore, cell: matrix.Cell, how: str = "its worker process died while running it, also when run alone"
) -> str:
    """Record a cell failed because whatever ran it died each time it was tried; `how` says what died."""
    reason = (
        f"{how} (killed by the system, e.g. out of memory, or by a signal); finished seeds are kept in "
        "partial/ and a later run resumes from them"
    )
    store.write_cell({**base_record(cell), "status": "failed", "reason": reason})
    return "failed (its worker died)"


def _run_one(suite: Suite, options: RunOptions, task_id: str, variant_id: str, threads: int) -> str:
    """Worker process: rebuild the one cell from the registries and run it without live display."""
    import io

    import torch
    from rich.console import Console

    torch.set_num_threads(threads)
    cell = rebuild_cell(suite, task_id, variant_id)
    store = ResultStore(options.results)
    record = run_cell(cell, run_context(options, store, Console(file=io.StringIO()), 1, worker=True))
    return outcome(record)
