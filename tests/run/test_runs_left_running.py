"""No MLflow run stays RUNNING once its fit is gone: a fit cut short by a lost node or a killed worker cannot
close its run, so whoever holds its cell next does.

The next attempt at the cell (a retry on any node) holds the cell's claim, or its lease on a cluster, so no
other attempt at it is live: before it logs a run of its own it ends the runs of the cell left RUNNING, KILLED
with a tag saying why, and leaves other cells' runs alone. A driver that records a cell whose every attempt
died does the same, and a fit that fails closes its own run. The real thing, a Ray node killed mid-cell, is
`tests/run/test_ray.py`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bench.plan import matrix
from bench.plan.suites import Suite
from bench.record.store import ResultStore
from bench.record.tracking import ENDED_TAG, Tracker
from bench.registry import tasks as task_registry
from bench.registry import variants as variant_registry
from bench.run.cells import RunContext, close_left_runs, run_cell
from bench.run.progress import RunProgress

SUITE = Suite("left", tasks=("sub",), variants=("qkv",), scale="smoke", trials=0, seeds=(0,), max_epochs=1)
OTHER = "0ther"  # another cell of the same store, live in another process


def _cell() -> matrix.Cell:
    (cell,) = matrix.expand(SUITE, [task_registry().get("sub")], matrix.resolve_variants(SUITE, variant_registry()))
    return cell


def _tracker(tmp_path: Path) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=tmp_path / "mlartifacts")


def _context(tmp_path: Path, tracker: Tracker) -> RunContext:
    return RunContext(ResultStore(tmp_path / "results"), f"sqlite:///{tmp_path / 'optuna.db'}", tracker,
                      tmp_path / "data", RunProgress(Console(file=io.StringIO()), 0))  # fmt: skip


def _left_running(tracker: Tracker, cell: matrix.Cell) -> tuple[str, str, str]:
    """What an attempt killed mid-fit leaves: its cell's run and its fit's run, RUNNING; and another cell's
    fit, RUNNING too. Their ids: (cell run, fit run, the other cell's fit run)."""
    parent = tracker.cell_run(cell.id, cell.label, {"cell_id": cell.id})
    other = tracker.cell_run(OTHER, "other", {"cell_id": OTHER})
    assert parent and other
    dead = tracker.child_run(parent, "seed-0", {"cell_id": cell.id}, {"seed": 0})
    live = tracker.child_run(other, "trial-0", {"cell_id": OTHER}, {})
    assert dead and live
    return parent, dead, live


def _runs(tracker: Tracker) -> dict[str, Any]:
    return {run.info.run_id: run for run in tracker.client.search_runs([tracker.experiment_id])}


def _of(runs: dict[str, Any], cell_id: str) -> list[tuple[str, str]]:
    """(run name, status) of each run of a cell, sorted."""
    return sorted((r.data.tags["mlflow.runName"], r.info.status) for r in runs.values()
                  if r.data.tags.get("cell_id") == cell_id)  # fmt: skip


def test_a_retried_cell_ends_the_runs_its_dead_attempt_left_running(tmp_path: Path, one_thread: None) -> None:
    cell, tracker = _cell(), _tracker(tmp_path)
    parent, dead, live = _left_running(tracker, cell)
    record = run_cell(cell, _context(tmp_path, tracker))  # the retry: one fit of seed 0
    assert record["status"] == "ok" and record["mlflow"]["run_id"] == parent  # the cell's run is carried on
    runs = _runs(tracker)
    assert runs[dead].info.status == "KILLED"
    assert runs[dead].data.tags[ENDED_TAG].startswith("superseded by a retry of this cell on ")
    assert _of(runs, cell.id) == sorted([(cell.label, "FINISHED"), ("seed-0", "FINISHED"), ("seed-0", "KILLED")])
    assert runs[live].info.status == "RUNNING" and ENDED_TAG not in runs[live].data.tags  # not this cell's


def test_a_cell_whose_attempts_all_died_has_its_runs_closed_by_the_driver(tmp_path: Path) -> None:
    cell, tracker = _cell(), _tracker(tmp_path)
    parent, dead, live = _left_running(tracker, cell)
    close_left_runs(cell, tracker)  # the driver, holding the cell it has just recorded failed
    runs = _runs(tracker)
    assert [runs[r].info.status for r in (parent, dead, live)] == ["KILLED", "KILLED", "RUNNING"]
    assert "ended without closing it" in runs[dead].data.tags[ENDED_TAG]
    assert not tracker.problems


def test_a_fit_that_fails_closes_its_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def breaks(*args: object) -> None:
        raise RuntimeError("the fit broke")

    monkeypatch.setattr("bench.run.cells._final_fit", breaks)
    cell, tracker = _cell(), _tracker(tmp_path)
    record = run_cell(cell, _context(tmp_path, tracker))
    assert record["status"] == "failed" and "the fit broke" in record["reason"]
    assert _of(_runs(tracker), cell.id) == sorted([(cell.label, "FAILED"), ("seed-0", "FAILED")])
