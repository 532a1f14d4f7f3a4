"""No redundant fits: a variant that trains as another (an int8 cache over its base) is scored on that
one's fits, with exactly the metrics and curve a fit of its own gives; without the kept states it trains."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bench.plan import matrix
from bench.plan.suites import Suite
from bench.record.store import ResultStore
from bench.record.tracking import NoTracker
from bench.registry import tasks as task_registry
from bench.registry import variants as variant_registry
from bench.run.cells import RunContext, run_cell
from bench.run.progress import RunProgress
from tests.tasks.test_task_lm import tiny_kjv  # the LM task on a tiny generated corpus

SUITE = Suite("reuse", tasks=("lm",), variants=("qkv", "qkv-int8", "tied-kv"), scale="smoke", trials=0, seeds=(0, 1))


def _row(suite: Suite = SUITE) -> dict[str, matrix.Cell]:
    cells = matrix.expand(suite, [task_registry().get("lm")], matrix.resolve_variants(suite, variant_registry()))
    return {c.variant.id: c for c in cells}


def _run(cell: matrix.Cell, results: Path, data_dir: Path) -> dict[str, Any]:
    ctx = RunContext(ResultStore(results), f"sqlite:///{results / 'optuna.db'}", NoTracker(), data_dir,
                     RunProgress(Console(file=io.StringIO()), 0))  # fmt: skip
    return run_cell(cell, ctx)


def test_the_matrix_links_a_variant_to_the_one_it_trains_as() -> None:
    row = _row()
    assert row["qkv-int8"].trains_as is not None and row["qkv-int8"].trains_as.id == row["qkv"].id
    assert row["qkv"].keep_states and row["qkv"].trains_as is None
    assert not row["tied-kv"].keep_states and row["tied-kv"].trains_as is None  # no int8 of it in the suite
    alone = _row(Suite("alone", tasks=("lm",), variants=("qkv-int8",), scale="smoke", baseline="qkv-int8"))
    assert alone["qkv-int8"].trains_as is None  # its base is not in the row: it trains


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Any]:
    """The LM's QKV cell run, its int8 cell run on the kept states, then (the states gone) run again;
    and a fit of QKV int8 of its own, seed 0, as `bench.run.cells` would make it."""
    from bench.fit.train import fit
    from bench.fit.tuning import default_params, optim_config

    tmp = tmp_path_factory.mktemp("reuse")
    monkey = pytest.MonkeyPatch()
    data_dir = tiny_kjv.__wrapped__(tmp, monkey)  # type: ignore[attr-defined]  # the fixture, once for the module
    row = _row()
    task, base, dependent = row["qkv"].task, row["qkv"], row["qkv-int8"]
    try:
        out: dict[str, Any] = {"base": _run(base, tmp / "results", data_dir)}
        out["evaluated"] = _run(dependent, tmp / "results", data_dir)
        out["states"] = sorted(p.name for p in (tmp / "results" / "states" / base.id).iterdir())
        bare = tmp / "bare"  # the base's result as committed from another machine: no states
        shutil.copytree(tmp / "results" / "cells", bare / "cells", ignore=shutil.ignore_patterns(f"*{dependent.id}*"))
        out["trained"] = _run(dependent, bare, data_dir)
        out["own_fit"] = fit(task, dependent.variant, dependent.config, optim_config(default_params(task)), seed=0,
                             data_dir=data_dir, init_reference=base.variant)  # fmt: skip
    finally:
        monkey.undo()
    return out


def test_an_evaluated_int8_cell_gives_exactly_the_metrics_and_curve_of_its_own_fit(fitted: dict[str, Any]) -> None:
    evaluated, own = fitted["evaluated"], fitted["own_fit"]
    assert evaluated["status"] == "ok" and fitted["states"] == ["seed-0.pt", "seed-1.pt"]
    first = evaluated["per_seed"][0]
    assert first["test"] == own.test  # bit for bit: the same weights, the same int8 evaluation
    assert first["curve"] == own.curve and len(own.curve) > 1
    assert first["val"] == own.val and first["parameters"] == own.parameters
    assert first["test"] != fitted["base"]["per_seed"][0]["test"]  # scored through int8, not the base's numbers


def test_an_evaluated_cell_says_what_it_was_scored_on_and_takes_its_bases_settings(fitted: dict[str, Any]) -> None:
    base, evaluated = fitted["base"], fitted["evaluated"]
    assert evaluated["evaluated_on"] == base["cell_id"] and evaluated["fits_saved"] == 2
    assert {s["fit"] for s in evaluated["per_seed"]} == {f"evaluated on {base['cell_id']}"}
    assert evaluated["tuning"]["settings_of"] == base["cell_id"]
    assert evaluated["tuning"]["best_params"] == base["tuning"]["best_params"]
    for mine, theirs in zip(evaluated["per_seed"], base["per_seed"], strict=True):  # the training is the base's
        assert (mine["steps"], mine["train_seconds"]) == (theirs["steps"], theirs["train_seconds"])


def test_without_the_base_state_the_cell_trains_and_says_so(fitted: dict[str, Any]) -> None:
    trained, evaluated = fitted["trained"], fitted["evaluated"]
    assert trained["status"] == "ok" and trained["fits_saved"] == 0
    assert {s["fit"] for s in trained["per_seed"]} == {"trained (base state absent)"}
    for mine, theirs in zip(trained["per_seed"], evaluated["per_seed"], strict=True):
        assert (mine["test"], mine["curve"]) == (theirs["test"], theirs["curve"])


def test_a_look_runs_the_cells_others_train_as_before_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The base on more seeds than its int8 cell (adaptive seeds): seed counts alone would run the int8 first."""
    from bench.options import RunOptions
    from bench.run import pipeline

    row = _row()
    todo = [row["qkv"].with_seeds(2), row["qkv-int8"].with_seeds(1), row["tied-kv"].with_seeds(1)]
    batches: list[list[str]] = []
    monkeypatch.setattr(pipeline, "run_cells", lambda cells, *_: batches.append([c.variant.id for c in cells]))
    pipeline.run_rounds(todo, todo, ResultStore(tmp_path), RunOptions(tmp_path, tmp_path, jobs=2), Console())
    assert sorted(v for batch in batches for v in batch) == ["qkv", "qkv-int8", "tied-kv"]
    assert batches[-1] == ["qkv-int8"]  # alone, after every batch that holds its base


def test_a_cell_that_trains_as_another_counts_that_ones_trials(tmp_path: Path) -> None:
    """It takes the other's settings and runs no study of its own, so it is not short of trials."""
    import optuna

    from bench.run.summary import trials_done

    row, storage = _row(), f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name=f"cell-{row['qkv'].id}", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert trials_done(storage, list(row.values())) == {row["qkv"].id: 2, row["qkv-int8"].id: 2}
