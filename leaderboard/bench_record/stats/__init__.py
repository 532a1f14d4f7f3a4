"""Statistics over seeds: metric-aware intervals, paired comparisons, corrections, equivalence, aggregates,
group-sequential designs that choose how many seeds a comparison needs, and a paired bootstrap over seeds and
test items (`items`) that covers the test set's sampling too.

Everything here takes numbers and returns numbers or frozen dataclasses; nothing reads files or
renders HTML. `summarize` and `paired` keep their original meaning (a plain Student t interval)
when called without a scale, so older callers read the same figures.
"""

from bench_record.stats.aggregate import BOOT_REPS, Aggregate, aggregate, iqm, normalise, probability_of_improvement
from bench_record.stats.intervals import (
    CLAMP,
    METHODS,
    Paired,
    Summary,
    interval_scale,
    metric_scale,
    paired,
    summarize,
    summarize_metric,
    to_scale,
)
from bench_record.stats.items import SeedItemInterval, seed_item_bootstrap
from bench_record.stats.sequential import (
    Design,
    Look,
    boundaries,
    decide,
    detectable_effect,
    equivalence_boundaries,
    expected_seeds,
    power,
)
from bench_record.stats.testing import Equivalence, bh_adjust, holm_adjust, n_for_power, tost

__all__ = [
    "BOOT_REPS",
    "CLAMP",
    "METHODS",
    "Aggregate",
    "Design",
    "Equivalence",
    "Look",
    "Paired",
    "SeedItemInterval",
    "Summary",
    "aggregate",
    "bh_adjust",
    "boundaries",
    "decide",
    "detectable_effect",
    "equivalence_boundaries",
    "expected_seeds",
    "holm_adjust",
    "interval_scale",
    "iqm",
    "metric_scale",
    "n_for_power",
    "normalise",
    "paired",
    "power",
    "probability_of_improvement",
    "seed_item_bootstrap",
    "summarize",
    "summarize_metric",
    "to_scale",
    "tost",
]
