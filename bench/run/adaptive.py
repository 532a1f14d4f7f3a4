"""Adaptive seeds: how many paired seeds each cell needs, decided from the stored results alone.

A suite with `looks` runs every cell of a task on its first `looks[0]` seeds, then compares each variant
with the baseline through a group-sequential design (`bench_record.compare.comparison_look`): a comparison that is
decided (the variant differs, or is equivalent within the task's margin) stops; an undecided one asks
for the next look's seeds, up to the last look. The baseline runs the most seeds any comparison of its
task asks for, so every comparison stays paired (the same seeds, data order and initial values).

The decisions read nothing but the per-seed test metrics in the results store, so a run stopped and
resumed (or run on another machine) asks for the same seeds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench_record.compare import comparison_look, design_of
from bench_record.stats.sequential import Look

if TYPE_CHECKING:
    from bench.plan.matrix import Cell
    from bench.record.store import ResultStore


def _seed_values(store: ResultStore, cell: Cell | None) -> dict[int, float]:
    """seed -> primary test metric of the cell's stored ok record; {} for none."""
    record = store.cell(cell.id) if cell else None
    return record.seed_values() if record else {}


@dataclass(frozen=True)
class SeedPlan:
    """Seeds each cell must have (a count: the suite's first n seeds) and each comparison's decision."""

    wanted: dict[str, int]
    looks: dict[str, Look]


def plan_seeds(cells: Sequence[Cell], store: ResultStore, baseline: str, looks: Sequence[int]) -> SeedPlan:
    """The seeds every runnable cell needs now, task by task (see the module docstring)."""
    design = design_of(looks)
    by_task: dict[str, list[Cell]] = defaultdict(list)
    for cell in cells:
        if not cell.na_reason:
            by_task[cell.task.id].append(cell)
    wanted: dict[str, int] = {}
    decisions: dict[str, Look] = {}
    for row in by_task.values():
        base = next((c for c in row if c.variant.id == baseline), None)
        base_values = _seed_values(store, base)
        need_base = design.looks[0]
        for cell in row:
            if cell is base:
                continue
            task, seeds = cell.task, cell.suite.seeds
            look = comparison_look(_seed_values(store, cell), base_values, seeds, design,
                                   task.equivalence_margin, task.higher_is_better)  # fmt: skip
            decisions[cell.id] = look
            wanted[cell.id] = look.next_n or max(look.n_used, design.looks[0])
            need_base = max(need_base, wanted[cell.id])
        if base is not None:
            wanted[base.id] = need_base
    return SeedPlan(wanted, decisions)
