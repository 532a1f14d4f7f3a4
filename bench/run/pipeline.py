"""`bench run`, the whole flow on one screen.

suite -> matrix of cells (task x variant) -> per cell: Optuna study (trials = Lightning fits on
the validation split) -> refit the best settings with every seed (test split) -> costs -> results
store (JSON per cell, source of truth) + MLflow (observer) -> paired comparison with the baseline
-> summary table -> static leaderboard from the store.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from bench.console import make_console
from bench.options import RunOptions, storage_url
from bench.plan import matrix
from bench.plan.suites import Suite
from bench.record.store import ResultStore
from bench.registry import tasks as task_registry
from bench.registry import variants as variant_registry
from bench.run import summary as report_run
from bench.run.cells import RunContext, run_cell
from bench.run.data import prepare_tasks
from bench.run.executors import run_cells
from bench.run.progress import RunProgress

__all__ = ["RunOptions", "build_leaderboard", "plan", "run", "storage_url"]


def plan(suite: Suite, options: RunOptions) -> list[matrix.Cell]:
    """Resolve names and expand the matrix; every input error surfaces here, before any work."""
    from bench.plan.validate import check_run_inputs

    check_run_inputs(suite, options, storage_url(options))
    tasks = task_registry().resolve(list(suite.tasks))
    variants = matrix.resolve_variants(suite, variant_registry())
    return matrix.expand(suite, tasks, variants)


def run(suite: Suite, options: RunOptions) -> int:
    """Run (or, with dry_run, show) the suite; returns the process exit status.

    The steps: survey the plan against the store (`_survey`), settle what needs no fit (`_settle`: cells
    that gave up, tasks whose data failed, n/a cells; trivial baselines), run the rest in rounds of seeds
    (`run_rounds`), then report: the summary, the analytic checks and the leaderboard.
    """
    console = make_console()
    store = ResultStore(options.results)
    cells, statuses = _survey(suite, options, store, console)
    if options.dry_run:
        return 0
    started = time.perf_counter()
    todo = _settle(cells, statuses, store, options, console)
    timings: dict[str, float] = {"data_seconds": time.perf_counter() - started}
    if todo:
        tasks = {c.task.id for c in todo}
        run_rounds(todo, [c for c in cells if c.task.id in tasks], store, options, console)
    timings["cells_seconds"] = time.perf_counter() - started - timings["data_seconds"]
    results = report_run.compare_with_baseline(store, cells, suite.baseline)
    report_run.summary_table(console, cells, results, timings)
    _analytic(options.results, console)
    page = build_leaderboard(options.results, console)
    report_run.cards(console, page.parent / "leaderboard.json", {c.variant.id for c in todo})
    return 1 if any(r.status == "failed" for r in results.values()) else 0


def _survey(
    suite: Suite, options: RunOptions, store: ResultStore, console: Any
) -> tuple[list[matrix.Cell], dict[str, str]]:
    """The plan's cells with the seeds they need now, and each one's status against the store (shown)."""
    cells = with_seed_plan(plan(suite, options), store, suite)
    if not options.dry_run:
        store.sweep_torn_writes()
        if options.retry_failed:
            for cell in cells:
                store.forget_attempts(cell.id)
    _storage_ready(storage_url(options), options.results)
    trials = report_run.trials_done(storage_url(options), cells)
    statuses = {cell.id: matrix.status(cell, store, trials.get(cell.id, 0)) for cell in cells}
    for problem in (p for cell in cells for p in store.unreadable(cell.id)):
        console.print(f"[yellow]unreadable:[/] {escape(problem)}; what it held is computed again", highlight=False)
    report_run.matrix_table(console, cells, statuses, suite)
    return cells, statuses


def _settle(
    cells: list[matrix.Cell], statuses: dict[str, str], store: ResultStore, options: RunOptions, console: Any
) -> list[matrix.Cell]:
    """Record every cell that needs no fit (gave up, its task's data failed, n/a), make sure each task's
    trivial baseline is stored; returns the cells left to fit."""
    from bench.record.tracking import NoTracker

    for cell in [c for c in cells if statuses[c.id] == "gave up"]:
        _record_gave_up(store, cell, console)
    todo = [c for c in cells if statuses[c.id] not in ("cached", "gave up")]
    needed = list({c.task.id: c.task for c in todo if not c.na_reason}.values())
    failed_data = {o.task: o.error for o in (prepare_tasks(needed, options.data_dir) if needed else []) if o.error}
    for cell in [c for c in todo if c.task.id in failed_data]:
        _record_data_failure(store, cell, failed_data[cell.task.id])
    todo = [c for c in todo if c.task.id not in failed_data]
    _baselines(todo, store, options.data_dir, console)
    recorder = RunContext(store, storage_url(options), NoTracker(), options.data_dir, RunProgress(console, 0))
    for cell in [c for c in todo if c.na_reason]:  # recorded here: nothing to compute
        run_cell(cell, recorder)
    return [c for c in todo if not c.na_reason]


def with_seed_plan(cells: list[matrix.Cell], store: ResultStore, suite: Suite) -> list[matrix.Cell]:
    """Each cell with the seeds it needs now: all the suite's, or with `looks` the adaptive plan's first n."""
    if not suite.looks:
        return cells
    from bench.run.adaptive import plan_seeds

    wanted = plan_seeds(cells, store, suite.baseline, suite.looks).wanted
    return [c if c.na_reason else c.with_seeds(wanted[c.id]) for c in cells]


def run_rounds(
    todo: list[matrix.Cell], row: list[matrix.Cell], store: ResultStore, options: RunOptions, console: Any
) -> None:
    """Run `todo`, cells of equal seed counts together, the cells that train as another after all others;
    with adaptive seeds, then each later look of the design: the cells of these tasks (`row`) whose
    comparisons ask for more seeds, until none does."""
    from itertools import groupby

    suite = todo[0].suite.full
    failed: set[str] = set()
    for look in range(len(suite.looks) or 1):
        if look:
            row = with_seed_plan(row, store, suite)
            todo = [c for c in row if not c.na_reason and c.id not in failed and _short(c, store)]
        if not todo:
            return
        if suite.looks:
            console.print(f"[bold]seeds, look {look + 1} of {len(suite.looks)}:[/] {len(todo)} cells to run")
        for _, group in groupby(sorted(todo, key=_stage), key=_stage):
            cells = list(group)
            run_cells(cells, cells[0].suite, options, console)
        failed |= {c.id for c in todo if _short(c, store)}  # failed or diverged: not run again this time


def _stage(cell: matrix.Cell) -> tuple[bool, int]:
    """When a cell runs in a look: after every cell that some other trains as (it is scored on their fits,
    `bench.fit.reuse`), then with the cells of its seed count."""
    return cell.trains_as is not None, len(cell.suite.seeds)


def _short(cell: matrix.Cell, store: ResultStore) -> bool:
    """Whether the stored ok result of `cell` lacks some of the seeds it needs now."""
    done = store.record(cell.id)
    have = {s.get("seed") for s in done.get("per_seed", [])} if done.get("status") == "ok" else set()
    return not set(cell.suite.seeds) <= have


def _storage_ready(url: str, results: Path) -> None:
    """Create the Optuna storage's tables once, under a lock: two runs starting at once on a fresh
    folder would both create them, and one would fail."""
    from bench.fit.tuning import optuna_storage
    from bench.record.store import exclusive

    with exclusive(results / "locks" / "optuna-storage.lock"):
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
    from bench.measure import analytic

    try:
        if _json_object(results / analytic.FILE).get("version") == analytic.VERSION:
            return
        console.print(f"analytic checks at the study's shapes: {analytic.write(results)}")
    except (OSError, ValueError, RuntimeError) as exc:  # a check the page can go without: say so, go on
        console.print(f"[yellow]analytic checks not written:[/] {exc}")


def _baselines(todo: list[matrix.Cell], store: ResultStore, data_dir: Path, console: Any) -> None:
    """Each task's trivial baseline, once, before its cells: every cell record carries it."""
    from bench.measure import baselines

    for task_id, entry in baselines.ensure(todo, store, data_dir).items():
        if "error" in entry:
            console.print(f"[yellow]baseline of {task_id}: {entry['error']}; its cells run ungated[/]")


def _record_data_failure(store: ResultStore, cell: matrix.Cell, error: str) -> None:
    from bench.run.cells import base_record

    store.write_cell({**base_record(cell), "status": "failed", "reason": f"data: {error}"})


def _record_gave_up(store: ResultStore, cell: matrix.Cell, console: Any) -> None:
    """A cell that failed `MAX_ATTEMPTS` times is recorded failed with its last outcome, and not run again."""
    from bench.run.cells import base_record

    attempts = store.attempts(cell.id)
    reason = f"failed after {attempts['count']} attempts; the last: {attempts['last']}"
    console.print(f"[red]{cell.label}: {reason}; not tried again (bench run --retry-failed tries it)[/]")
    store.write_cell({**base_record(cell), "status": "failed", "reason": reason, "attempts": attempts["count"]})


def build_leaderboard(results: Path, console: Any, out_dir: Path | None = None, against: Path | None = None) -> Path:
    """The static site from the results store, with stale cells (code changed since) marked and the verdicts
    that changed since an earlier board (`against`, else the page's committed history) listed."""
    from bench.plan.staleness import stale_reasons
    from bench.run.history import earlier
    from bench_leaderboard import build

    records, _ = ResultStore(results).all_cells()  # the records that parse; the board names the others and skips them
    out = out_dir or results / "leaderboard"
    page = build(results, out_dir=out, stale=stale_reasons(records), catalog=variant_catalog(),
                 earlier=earlier(out, against))  # fmt: skip
    console.print(f"leaderboard: {page}")
    return page


def variant_catalog() -> dict[str, dict[str, Any]]:
    """What the registry says of each installed variant that its records do not: its reference, and whether a
    package other than bench registered it."""
    registry = variant_registry()
    return {v.id: {"reference": v.reference, "contributed": registry.origin(v.id) != "bench"} for v in registry}
