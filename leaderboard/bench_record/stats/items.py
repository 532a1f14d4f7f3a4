"""Test-set uncertainty: a paired bootstrap over seeds and test items of a difference in mean accuracy.

A seed-level interval (`intervals.paired`) treats each seed's test accuracy as exact, so it covers the
spread between fits but not the test set's own sampling: two variants scored on the same N items also
differ by which items happened to be drawn. Where each fit recorded what it got right per test item
(`bench_record.schema.ItemScores`), `seed_item_bootstrap` covers both.

Definition: variant and baseline are scored on the same S seeds and the same N test items (in the same
order), a_si and b_si in {0, 1}. The statistic is the mean difference over the S x N (seed, item) cells,
(1/SN) sum_s sum_i (a_si - b_si): the mean over seeds of the accuracy difference. One resample draws S
seed indices and N item indices, each uniformly with replacement: the same seed indices for both variants
(paired by seed) and the same item indices for both and for every drawn seed (paired by item; seeds and
items are crossed, as every fit scores the same test set), and takes the statistic over the drawn cells.
The interval is the percentile interval of B resamples (`BOOT_REPS`) drawn from numpy's default Generator
with a fixed seed (`BOOT_SEED`), so it is the same number on every build.

Computation: the statistic depends on an item only through its column (a_si - b_si) over the seeds, so
items are grouped by column, and a resample's item draw is a multinomial count over the distinct columns:
the same distribution as drawing N indices, in O(B x columns) instead of O(B x N).

Such a two-way bootstrap counts the seed x item interaction twice (Owen, "The pigeonhole bootstrap", Ann.
Appl. Stat. 2007), so where fit-to-fit flips of single items dominate it is a little conservative; with
few seeds, like any bootstrap over seeds, it is narrower than a t interval over them would be.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench_record.stats.aggregate import BOOT_REPS, BOOT_SEED

#: how the page and the records name this interval
METHOD = "seed×item paired bootstrap"


@dataclass(frozen=True)
class SeedItemInterval:
    """Variant minus baseline in mean accuracy over shared seeds and test items, with its bootstrap interval."""

    seeds: int
    items: int
    mean_diff: float
    ci95_low: float
    ci95_high: float
    reps: int
    seed: int
    method: str = METHOD

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cells(scores: Any, name: str) -> np.ndarray:
    """`scores` as an (S seeds, N items) int8 array of 0/1; ValueError naming `name` otherwise."""
    array = np.asarray(scores)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"{name}: expected a non-empty (seeds, items) array of 0/1, got shape {array.shape}")
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name}: expected per-item correctness (0/1 or bool), found other values")
    return array.astype(np.int8)


def seed_item_bootstrap(
    variant: Any, baseline: Any, reps: int = BOOT_REPS, seed: int = BOOT_SEED, level: float = 0.95
) -> SeedItemInterval:
    """The paired seed x item bootstrap of the module docstring.

    Args:
        variant: (S, N) per-item correctness of the variant, row s the fit of the s-th shared seed.
        baseline: The baseline's, the same shape, rows on the same seeds and columns on the same items.
        reps: Resamples B.
        seed: The Generator's seed; the interval is a function of the data and this seed alone.
        level: The interval's coverage (its bounds are the (1 -+ level) / 2 quantiles of the resamples).

    Raises:
        ValueError: arrays that are not (seeds, items) of 0/1, or whose shapes differ.
    """
    a, b = _cells(variant, "variant"), _cells(baseline, "baseline")
    if a.shape != b.shape:
        raise ValueError(f"variant and baseline are scored on different cells: {a.shape} vs {b.shape} (seeds, items)")
    diff_SN = a - b
    n_seeds, n_items = diff_SN.shape
    columns_KS, counts_K = np.unique(diff_SN.T, axis=0, return_counts=True)  # the distinct item columns
    rng = np.random.default_rng(seed)
    items_BK = rng.multinomial(n_items, counts_K / n_items, size=reps)  # how often each column is drawn
    seeds_BS = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=reps)  # how often each seed is
    per_seed_BS = items_BK @ columns_KS.astype(np.int64)  # each seed's summed difference over the drawn items
    stats_B = (seeds_BS * per_seed_BS).sum(axis=1) / (n_seeds * n_items)
    low, high = np.quantile(stats_B, [(1 - level) / 2, (1 + level) / 2])
    return SeedItemInterval(n_seeds, n_items, float(diff_SN.mean()), float(low), float(high), reps, seed)
