"""Adaptive seeds: each cell gets the seeds its comparison with QKV needs, decided from stored results alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.plan.suites import smoke
from bench.record.store import ResultStore
from bench.run import adaptive
from bench.run.cells import base_record
from bench.run.pipeline import RunOptions, plan, run, with_seed_plan
from bench_record import compare

VARIANTS = ("qkv", "tied-kv", "tied-qkv")


def _suite(looks: tuple[int, ...] = (3, 6, 10)) -> Any:
    return smoke().override(variants=VARIANTS, seeds=tuple(range(looks[-1])), looks=looks, trials=0)


def _options(tmp_path: Path) -> RunOptions:
    return RunOptions(results=tmp_path / "results", data_dir=tmp_path / "data", tracking_uri="none")


def _write(store: ResultStore, cell: Any, values: list[float]) -> None:
    """An ok record of `cell` whose seeds scored `values` on its task's metric (the parts the plan does not read
    left empty)."""
    metric = cell.task.metric
    summary = {"metric": metric, "mean": 0.0, "ci95_low": 0.0, "ci95_high": 0.0, "n": len(values)}
    store.write_cell({**base_record(cell), "status": "ok", "summary": summary, "costs": {}, "tuning": {},
                      "seeds": list(range(len(values))),
                      "per_seed": [{"seed": i, "test": {metric: v}} for i, v in enumerate(values)]})  # fmt: skip


QKV = [0.80, 0.82, 0.79, 0.81, 0.80, 0.83]


@pytest.mark.parametrize(
    ("tied_kv", "tied_qkv", "expected"),
    [
        # nothing stored: every cell starts at the first look
        (None, None, {"qkv": 3, "tied-kv": 3, "tied-qkv": 3}),
        # Q=K=V far below at 3 seeds: decided; Q-K=V noisy around QKV: the next look, and QKV with it
        ([0.70, 0.86, 0.81], [0.30, 0.31, 0.29], {"qkv": 6, "tied-kv": 6, "tied-qkv": 3}),
        # both decided at 3 seeds (Q-K=V equivalent within 2 points): nobody needs more
        ([0.801, 0.821, 0.791], [0.30, 0.31, 0.29], {"qkv": 3, "tied-kv": 3, "tied-qkv": 3}),
        # still undecided at 6: the cap
        ([0.70, 0.86, 0.81, 0.75, 0.88, 0.80], [0.30, 0.31, 0.29], {"qkv": 10, "tied-kv": 10, "tied-qkv": 3}),
    ],
)
def test_plan_gives_undecided_comparisons_the_next_look_and_qkv_the_most(
    tied_kv: list[float] | None, tied_qkv: list[float] | None, expected: dict[str, int], tmp_path: Path
) -> None:
    suite = _suite()
    cells = plan(suite, _options(tmp_path))
    store = ResultStore(tmp_path / "results")
    by_variant = {c.variant.id: c for c in cells}
    if tied_kv is not None:
        _write(store, by_variant["qkv"], QKV[: max(len(tied_kv), 3)])
        _write(store, by_variant["tied-kv"], tied_kv)
        _write(store, by_variant["tied-qkv"], tied_qkv or [])
    found = adaptive.plan_seeds(cells, store, "qkv", suite.looks)
    assert {c.variant.id: found.wanted[c.id] for c in cells} == expected
    narrowed = {c.variant.id: c.suite.seeds for c in with_seed_plan(cells, store, suite)}
    assert narrowed == {v: tuple(range(n)) for v, n in expected.items()}
    assert all(c.suite.full is suite for c in with_seed_plan(cells, store, suite))


def test_a_decision_reads_only_the_first_looks_seeds() -> None:
    """Seeds beyond the deciding look (a cell QKV ran for another comparison) never change a decision."""
    design = compare.design_of((3, 6, 10))
    base = dict(enumerate(QKV + [0.8] * 4))
    far = {0: 0.30, 1: 0.31, 2: 0.29}
    first = compare.comparison_look(far, base, range(10), design, 0.02, True)
    later = compare.comparison_look({**far, 3: 0.95, 4: 0.99}, base, range(10), design, 0.02, True)
    assert first.decision == later.decision == "differs" and first.n_used == later.n_used == 3
    ppl = compare.differences({0: 10.0}, {0: 8.0}, [0], higher=False)
    assert ppl == [pytest.approx(0.22314355)]  # perplexity differs by its log ratio
    assert compare.margin_on_scale(0.05, False) == pytest.approx(0.04879016)


def test_an_adaptive_run_gives_each_cell_its_seeds_and_a_second_run_does_nothing(tmp_path: Path) -> None:
    suite = _suite(looks=(2, 3)).override(variants=(*VARIANTS, "gqa8"))  # GQA-8: n/a at the smoke size
    options = _options(tmp_path)
    assert run(suite, options) == 0
    store = ResultStore(options.results)
    records = {r["variant"]["id"]: r for r in store.all_cells()[0]}
    assert records.pop("gqa8")["status"] == "n/a"
    cells = [c for c in plan(suite, options) if not c.na_reason]
    wanted = adaptive.plan_seeds(cells, store, "qkv", suite.looks).wanted
    for cell in cells:
        record = records[cell.variant.id]
        seeds = [s["seed"] for s in record["per_seed"]]
        assert seeds == list(range(wanted[cell.id])) and seeds == record["seeds"]
        assert record["seed_design"] == {"looks": [2, 3], "seeds": [0, 1, 2], "baseline": "qkv",
                                         "spending": "pocock", "alpha": 0.05}  # fmt: skip
        # a speed task's fit looks at its target until it stops, the last look where it stopped
        assert all(s["looks"] and s["looks"][-1]["step"] == s["steps"] for s in record["per_seed"])
    assert len(records["qkv"]["per_seed"]) == max(len(r["per_seed"]) for r in records.values())
    mtimes = {p: p.stat().st_mtime_ns for p in (options.results / "cells").glob("*.json")}
    assert len(mtimes) == 4
    assert run(suite, options) == 0
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # the same decisions: nothing to run or rewrite
