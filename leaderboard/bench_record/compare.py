"""Derived values of cell records, computed in one place for bench and the board alike.

    paired_with     two cells' paired comparison over their shared seeds, on the metric's test scale
    item_comparison the same difference with a seed x item interval, where both cells' fits recorded what they got
                    right per test item (`bench_record.stats.items`): it covers the test set's sampling too
    with_baseline   what an ok record stores as its `baseline_comparison` (bench writes it after a run; the
                    board computes it again from the seeds with `paired_with`, and reads the stored one only
                    where its baseline cell is stale or absent)
    comparison_look the adaptive seeds' decision on a comparison (`bench_record.stats.sequential`)

    BASELINE        the variant every other is compared with by default: the study's QKV

Bounded metrics (higher is better) differ in metric units on the decision scale; perplexity (lower is better)
by its log ratio, so an equivalence margin of m reads "within m points" or "within a factor 1 + m".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bench_record.schema import BaselineComparison, CellRecord
from bench_record.stats.intervals import Paired, metric_scale, paired
from bench_record.stats.items import SeedItemInterval, seed_item_bootstrap
from bench_record.stats.sequential import Design, Look, decide

#: the variant every other is compared with (a suite may name another: `Suite.baseline`)
BASELINE = "qkv"

#: Pocock's spending, not O'Brien-Fleming's: at 3 seeds (2 degrees of freedom) O'Brien-Fleming's first boundary
#: asks for |t| > 75 and never stops a comparison there, so every cell would run the second look's seeds
SPENDING = "pocock"
ALPHA = 0.05


def paired_with(
    mine: Mapping[int, float], base: Mapping[int, float], metric: str, higher_is_better: bool
) -> Paired | None:
    """`mine` minus `base` over the seeds both ran, tested on the metric's scale (`metric_scale`); None when they
    share no seed.

    Args:
        mine: seed -> the variant's test metric.
        base: seed -> the baseline's test metric on the same seed.
        metric: The task's primary metric.
        higher_is_better: Its direction.
    """
    return paired(dict(mine), dict(base), metric_scale(metric, higher_is_better))


def item_comparison(record: CellRecord, base: CellRecord) -> SeedItemInterval | None:
    """`record` minus `base` in mean per-item accuracy with its seed x item bootstrap interval, over the seeds the
    seed-level comparison pairs; None unless every one of those seeds of both cells recorded item scores of the
    task's metric, on test sets of the same size."""
    seeds = sorted(set(record.seed_values()) & set(base.seed_values()))
    mine, theirs = record.seed_items(), base.seed_items()
    if not seeds or any(s not in mine or s not in theirs for s in seeds) or record.task.metric != base.task.metric:
        return None
    if len({scores.n for s in seeds for scores in (mine[s], theirs[s])}) != 1:
        return None
    return seed_item_bootstrap([mine[s].unpack() for s in seeds], [theirs[s].unpack() for s in seeds])


def item_fields(found: SeedItemInterval | None) -> dict[str, Any]:
    """What a comparison carries of `found` beside its seed-level interval: {} without it."""
    if found is None:
        return {}
    return {"item_interval": [found.ci95_low, found.ci95_high], "item_interval_method": found.method,
            "n_items": found.items}  # fmt: skip


def with_baseline(record: CellRecord, base: CellRecord) -> BaselineComparison:
    """The record's paired comparison with `base` (the task's baseline cell): `{"baseline": its variant}` and,
    where they share seeds, the figures of `paired_with`, and where their fits recorded item scores the seed x item
    interval (`item_comparison`, `item_fields`)."""
    found = paired_with(record.seed_values(), base.seed_values(), record.task.metric, record.task.higher_is_better)
    items = item_fields(item_comparison(record, base)) if found else {}
    return BaselineComparison.from_dict({"baseline": base.variant.id, **(found.as_dict() if found else {}), **items})


def design_of(looks: Sequence[int], spending: str = SPENDING) -> Design:
    """A suite's design: its looks, the harness's alpha and `spending`."""
    return Design(looks=tuple(looks), alpha=ALPHA, spending=spending)


def differences(
    mine: Mapping[int, float], base: Mapping[int, float], seeds: Sequence[int], higher: bool
) -> list[float]:
    """Paired differences on the decision scale over `seeds` in order, stopping at the first seed either lacks."""
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
