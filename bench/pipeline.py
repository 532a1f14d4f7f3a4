"""`bench run`, the whole flow on one screen.

suite -> matrix of cells (task x variant) -> per cell: Optuna study (trials = Lightning fits on
the validation split) -> refit the best settings with every seed (test split) -> costs -> results
store (JSON per cell, source of truth) + MLflow (observer) -> paired comparison with the baseline
-> summary table -> static leaderboard from the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape

from bench import matrix, report_run
from bench.cells import RunContext, run_cell
from bench.data import prepare_tasks
from bench.progress import RunProgress
from bench.registry import tasks as task_registry
from bench.registry import variants as variant_registry
from bench.report import make_console
from bench.store import ResultStore
from bench.suites import Suite

#: dispatch order of the task families under --jobs: the longest fits first, so no worker idles at the end
FAMILY_COST_RANK = {"vision": 0, "anomaly": 1, "lm": 2, "synthetic": 3}


@dataclass(frozen=True)
class RunOptions:
    results: Path
    data_dir: Path
    storage: str | None = None  # Optuna RDB URL; default: SQLite under the results folder
    tracking_uri: str | None = None  # MLflow; default: SQLite under the results folder; "none" disables
    jobs: int = 1
    dry_run: bool = False
    retry_failed: bool = False  # try again cells that failed `MAX_ATTEMPTS` times


def storage_url(options: RunOptions) -> str:
    return options.storage or f"sqlite:///{(options.results / 'optuna.db').resolve()}"


def plan(suite: Suite, options: RunOptions) -> list[matrix.Cell]:
    """Resolve names and expand the matrix; every input error surfaces here, before any work."""
    from bench.validate import check_run_inputs

    check_run_inputs(suite, options, storage_url(options))
    tasks = task_registry().resolve(list(suite.tasks))
    variants = matrix.resolve_variants(suite, variant_registry())
    return matrix.expand(suite, tasks, variants)


def run(suite: Suite, options: RunOptions) -> int:
    """Run (or, with dry_run, show) the suite; returns the process exit status."""
    console = make_console()
    cells = plan(suite, options)
    store = ResultStore(options.results)
    if not options.dry_run:
        store.sweep_torn_writes()
    _storage_ready(storage_url(options), options.results)
    trials = report_run.trials_done(storage_url(options), cells)
    if options.retry_failed and not options.dry_run:
        for cell in cells:
            store.forget_attempts(cell.id)
    statuses = {cell.id: matrix.status(cell, store, trials.get(cell.id, 0)) for cell in cells}
    for problem in (p for cell in cells for p in store.unreadable(cell.id)):
        console.print(f"[yellow]unreadable:[/] {escape(problem)}; what it held is computed again", highlight=False)
    report_run.matrix_table(console, cells, statuses, suite)
    if options.dry_run:
        return 0
    started = time.perf_counter()
    for cell in [c for c in cells if statuses[c.id] == "gave up"]:
        _record_gave_up(store, cell, console)
    todo = [c for c in cells if statuses[c.id] not in ("cached", "gave up")]
    needed = list({c.task.id: c.task for c in todo if not c.na_reason}.values())
    prepared = prepare_tasks(needed, options.data_dir) if needed else []
    failed_data = {o.task: o.error for o in prepared if o.error}
    timings: dict[str, float] = {"data_seconds": time.perf_counter() - started}
    for cell in [c for c in todo if c.task.id in failed_data]:
        _record_data_failure(store, cell, failed_data[cell.task.id])
    todo = [c for c in todo if c.task.id not in failed_data]
    _baselines(todo, store, options.data_dir, console)
    recorder = RunContext(store, storage_url(options), None, options.data_dir, RunProgress(console, 0))
    for cell in [c for c in todo if c.na_reason]:  # recorded here: nothing to compute
        run_cell(cell, recorder)
    todo = [c for c in todo if not c.na_reason]
    if options.jobs > 1 and len(todo) > 1:
        _run_parallel(todo, suite, options, console)
    elif todo:
        ctx = _context(options, store, console, len(todo))
        with ctx.progress:
            for cell in todo:
                ctx.progress.start_cell(cell.label, suite.trials + len(suite.seeds))
                run_cell(cell, ctx)
                ctx.progress.end_cell()
    timings["cells_seconds"] = time.perf_counter() - started - timings["data_seconds"]
    results = report_run.compare_with_baseline(store, cells, suite.baseline)
    report_run.summary_table(console, cells, results, timings)
    _analytic(options.results, console)
    build_leaderboard(options.results, console)
    return 1 if any(r.get("status") == "failed" for r in results.values()) else 0


def _storage_ready(url: str, results: Path) -> None:
    """Create the Optuna storage's tables once, under a lock: two runs starting at once on a fresh
    folder would both create them, and one would fail."""
    import fcntl

    from bench.tuning import optuna_storage

    lock = results / "locks" / "optuna-storage.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
        optuna_storage(url)


def _json_object(path: Path) -> dict[str, Any]:
    """A JSON file's top-level object; empty when the file holds anything else or cannot be read."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _analytic(results: Path, console: Any) -> None:
    """The study's cache reductions and parameter counts measured at its shapes, once per version."""
    from bench import analytic

    try:
        if _json_object(results / analytic.FILE).get("version") == analytic.VERSION:
            return
        console.print(f"analytic checks at the study's shapes: {analytic.write(results)}")
    except (OSError, ValueError, RuntimeError) as exc:  # a check the page can go without: say so, go on
        console.print(f"[yellow]analytic checks not written:[/] {exc}")


def _baselines(todo: list[matrix.Cell], store: ResultStore, data_dir: Path, console: Any) -> None:
    """Each task's trivial baseline, once, before its cells: every cell record carries it."""
    from bench import baselines

    for task_id, entry in baselines.ensure(todo, store, data_dir).items():
        if "error" in entry:
            console.print(f"[yellow]baseline of {task_id}: {entry['error']}; its cells run ungated[/]")


def _context(options: RunOptions, store: ResultStore, console: Any, n_cells: int) -> RunContext:
    from bench.tracking import Tracker, default_tracking_uri

    tracker = None
    if options.tracking_uri != "none":
        uri = options.tracking_uri or default_tracking_uri(options.results)
        try:
            local = not uri.startswith(("http://", "https://"))  # a server keeps its runs' artifacts itself
            tracker = Tracker(uri, artifact_root=options.results / "mlartifacts" if local else None)
        except Exception as exc:  # MLflow observes: without it the run goes on, and says so
            from bench.tracking import redact

            console.print(f"[yellow]MLflow unavailable ({type(exc).__name__}: {redact(str(exc))[:200]}); "
                          "running without tracking[/]")  # fmt: skip
    return RunContext(store, storage_url(options), tracker, options.data_dir, RunProgress(console, n_cells))


def _run_parallel(todo: list[matrix.Cell], suite: Suite, options: RunOptions, console: Any) -> None:
    """Cells in `jobs` worker processes, torch threads split between them; progress per cell."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // options.jobs)
    store = ResultStore(options.results)
    _context(options, store, console, 0)  # create the MLflow store once, not racing
    context = multiprocessing.get_context("spawn")
    pending = sorted(todo, key=lambda c: FAMILY_COST_RANK.get(c.task.family, 0))  # long cells first: no idle tail

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
                    progress.log(f"{cell.label}: {_record_lost(store, cell)}")
                    progress.end_cell()
            if cut:
                progress.log(
                    f"[yellow]a worker process died: {len(started)} cell(s) it cut short ran again alone, "
                    f"{len(cut) - len(started)} waiting cell(s) went to new workers[/]"
                )
            pending = [c for c in cut if c not in started]
            if pending and len(pending) == len(cut) and not started:  # workers die before any cell starts
                for cell in pending:
                    progress.log(f"{cell.label}: {_record_lost(store, cell)}")
                break


def _record_lost(store: ResultStore, cell: matrix.Cell) -> str:
    from bench.cells import base_record

    reason = (
        "its worker process died while running it, also when run alone (killed by the system, e.g. out of "
        "memory, or by a signal); finished seeds are kept in partial/ and a later run resumes from them"
    )
    store.write_cell({**base_record(cell), "status": "failed", "reason": reason})
    return "failed (its worker died)"


def _run_one(suite: Suite, options: RunOptions, task_id: str, variant_id: str, threads: int) -> str:
    """Worker process: rebuild the one cell from the registries and run it without live display."""
    import io

    import torch
    from rich.console import Console

    torch.set_num_threads(threads)
    task = task_registry().get(task_id)
    # the task's whole row, so a variant that coincides with another keeps its n/a reason
    row = matrix.expand(suite, [task], matrix.resolve_variants(suite, variant_registry()))
    (cell,) = [c for c in row if c.variant.id == variant_id]
    store = ResultStore(options.results)
    ctx = _context(options, store, Console(file=io.StringIO()), 1)
    record = run_cell(cell, ctx)
    kept = "; the earlier ok result is kept (the attempt is in attempts/)" if record.get("kept_ok_result") else ""
    return f"{record['status']}{kept}"


def _record_data_failure(store: ResultStore, cell: matrix.Cell, error: str) -> None:
    from bench.cells import base_record

    store.write_cell({**base_record(cell), "status": "failed", "reason": f"data: {error}"})


def _record_gave_up(store: ResultStore, cell: matrix.Cell, console: Any) -> None:
    """A cell that failed `MAX_ATTEMPTS` times is recorded failed with its last outcome, and not run again."""
    from bench.cells import base_record

    attempts = store.attempts(cell.id)
    reason = f"failed after {attempts['count']} attempts; the last: {attempts['last']}"
    console.print(f"[red]{cell.label}: {reason}; not tried again (bench run --retry-failed tries it)[/]")
    store.write_cell({**base_record(cell), "status": "failed", "reason": reason, "attempts": attempts["count"]})


def build_leaderboard(results: Path, console: Any, out_dir: Path | None = None) -> Path:
    """The static site from the results store, with stale cells (code changed since) marked."""
    from bench.staleness import stale_reasons
    from bench_leaderboard import build
    from bench_leaderboard.load import schema_problems

    records, _ = ResultStore(results).all_cells()
    valid = [r for r in records if not schema_problems(r)]  # the board names the others and skips them
    page = build(results, out_dir=out_dir, stale=stale_reasons(valid))
    console.print(f"leaderboard: {page}")
    return page
