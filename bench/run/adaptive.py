"""Adaptive seeds: how many paired seeds each cell needs, decided from the stored results alone.

A suite with `looks` runs every cell of a task on its first `looks[0]` seeds, then compares each variant
with the baseline through a group-sequential design (`bench.stats.sequential`): a comparison that is
decided (the variant differs, or is equivalent within the task's margin) stops; an undecided one asks
for the next look's seeds, up to the last look. The baseline runs the most seeds any comparison of its
task asks for, so every comparison stays paired (the same seeds, data order and initial values).

The decisions read nothing but the per-seed test metrics in the results store, so a run stopped and
resumed (or run on another machine) asks for the same seeds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.stats.sequential import Design, Look, decide

if TYPE_CHECKING:
    from bench.plan.matrix import Cell
    from bench.record.store import ResultStore


#: Pocock's spending, not O'Brien-Fleming's: at 3 seeds (2 degrees of freedom) O'Brien-Fleming's first boundary
#: asks for |t| > 75 and never stops a comparison there, so every cell would run the second look's seeds
SPENDING = "pocock"
ALPHA = 0.05


def design_of(looks: Sequence[int], spending: str = SPENDING) -> Design:
    """The suite's design: its looks, the harness's alpha and spending."""
    return Design(looks=tuple(looks), alpha=ALPHA, spending=spending)


def differences(
    mine: Mapping[int, float], base: Mapping[int, float], seeds: Sequence[int], higher: bool
) -> list[float]:
    """Paired differences on the decision scale over `seeds` in order, stopping at the first seed either lacks.

    Bounded metrics (higher is better) differ in metric units; perplexity (lower is better) by its log ratio,
    so an equivalence margin of m reads "within m points" or "within a factor 1 + m".
    """
    out = []
    for seed in seeds:
        if seed not in mine or seed not in base:
            break
        a, b = mine[seed], base[seed]
        out.append(a - b if higher else math.log(a) - math.log(b))
    return out


def margin_on_scale(margin: float, higher: bool) -> float:
    """A task's equivalence margin on the decision scale of `differences`."""
    return margin if higher else math.log1p(margin)


def comparison_look(
    mine: Mapping[int, float], base: Mapping[int, float], seeds: Sequence[int], design: Design,
    margin: float, higher: bool,
) -> Look:  # fmt: skip
    """The design's decision on one variant's comparison with the baseline, from their per-seed values."""
    diffs = differences(mine, base, seeds, higher)
    return decide(diffs, design, margin_on_scale(margin, higher))


def seed_values(record: Mapping[str, Any] | None) -> dict[int, float]:
    """seed -> primary test metric of an ok record; {} otherwise."""
    if not record or record.get("status") != "ok":
        return {}
    metric = record.get("summary", {}).get("metric")
    out: dict[int, float] = {}
    for entry in record.get("per_seed", []):
        value = entry.get("test", {}).get(metric)
        if isinstance(value, int | float) and math.isfinite(value):
            out[int(entry["seed"])] = float(value)
    return out


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
        base_values = seed_values(store.record(base.id)) if base else {}
        need_base = design.looks[0]
        for cell in row:
            if cell is base:
                continue
            task, seeds = cell.task, cell.suite.seeds
            look = comparison_look(seed_values(store.record(cell.id)), base_values, seeds, design,
                                   task.equivalence_margin, task.higher_is_better)  # fmt: skip
            decisions[cell.id] = look
            wanted[cell.id] = look.next_n or max(look.n_used, design.looks[0])
            need_base = max(need_base, wanted[cell.id])
        if base is not None:
            wanted[base.id] = need_base
    return SeedPlan(wanted, decisions)
