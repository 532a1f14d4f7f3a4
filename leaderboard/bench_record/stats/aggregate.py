"""Across tasks: interquartile mean of normalised scores and the probability of improvement.

Scores are normalised per task between its trivial baseline (0) and its best cell (1); the formula
(x - baseline) / (best - baseline) serves both directions (for perplexity both differences are
negative). Intervals are a stratified bootstrap: seeds are resampled within each task, with the
same seed indices for every variant so the pairing is kept; the generator's seed is fixed so the
page is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BOOT_SEED = 20240611
BOOT_REPS = 2000

#: task id -> variant id -> per-seed values, in the same seed order for every variant of a task
Matrix = Mapping[str, Mapping[str, Sequence[float]]]


@dataclass(frozen=True)
class Aggregate:
    variant: str
    tasks: int
    iqm: float
    iqm_low: float
    iqm_high: float
    poi: float | None  # probability of improvement over the reference (None for the reference itself)
    poi_low: float | None
    poi_high: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (scipy's 25% trimmed mean)."""
    from scipy import stats

    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25))


def normalise(values: Sequence[float], baseline: float, best: float) -> list[float]:
    """(x - baseline) / (best - baseline): 0 at the trivial baseline, 1 at the task's best cell."""
    span = best - baseline
    return [(v - baseline) / span if span else 0.0 for v in values]


def probability_of_improvement(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, higher_is_better: bool = True
) -> float:
    """Mann-Whitney P(X better than Y) + 0.5 P(tie) over all pairs of seeds."""
    a, b = np.asarray(x, dtype=float)[:, None], np.asarray(y, dtype=float)[None, :]
    better = (a > b) if higher_is_better else (a < b)
    return float(better.mean() + 0.5 * (a == b).mean())


def _poi_tasks(
    scores: Mapping[str, Mapping[str, np.ndarray]], variant: str, reference: str, tasks: Sequence[str]
) -> float:
    # normalised scores are higher-is-better in both directions, so compare them directly
    return float(np.mean([probability_of_improvement(scores[t][variant], scores[t][reference]) for t in tasks]))


def aggregate(normalised: Matrix, reference: str, reps: int = BOOT_REPS, seed: int = BOOT_SEED) -> list[Aggregate]:
    """IQM and probability of improvement over `reference` per variant, with stratified bootstrap 95% CIs.

    Args:
        normalised: task -> variant -> normalised per-seed scores (higher is better), seed-aligned.
        reference: The variant the probability of improvement is taken against (QKV).
        reps: Bootstrap replications.
        seed: The generator's seed (fixed: the page is deterministic).

    Returns:
        One `Aggregate` per variant, most tasks first, then best IQM; a variant is aggregated over the tasks it ran.
    """
    rng = np.random.default_rng(seed)
    tasks = sorted(normalised)
    arrays = {t: {v: np.asarray(s, dtype=float) for v, s in normalised[t].items()} for t in tasks}
    draws = {t: rng.integers(0, _n_seeds(arrays[t]), size=(reps, _n_seeds(arrays[t]))) for t in tasks}
    variants = sorted({v for t in tasks for v in arrays[t]})
    out = []
    for variant in variants:
        mine = [t for t in tasks if variant in arrays[t]]
        pooled = np.concatenate([arrays[t][variant] for t in mine])
        boot = np.concatenate([arrays[t][variant][draws[t]] for t in mine], axis=1)
        boot_iqm = _trim_mean_rows(boot)
        poi = low = high = None
        shared = [t for t in mine if reference in arrays[t]]
        if variant != reference and shared:
            poi = _poi_tasks(arrays, variant, reference, shared)
            per_task = [_poi_boot(arrays[t][variant][draws[t]], arrays[t][reference][draws[t]]) for t in shared]
            boots = np.mean(per_task, axis=0)
            low, high = float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))
        iqm_low, iqm_high = (float(np.percentile(boot_iqm, q)) for q in (2.5, 97.5))
        out.append(Aggregate(variant, len(mine), iqm(pooled), iqm_low, iqm_high, poi, low, high))
    # a variant that ran fewer tasks is not comparable with one that ran all: most tasks first, then IQM
    return sorted(out, key=lambda a: (-a.tasks, -a.iqm, a.variant))


def _trim_mean_rows(boot: np.ndarray) -> np.ndarray:
    from scipy import stats

    return np.asarray(stats.trim_mean(boot, 0.25, axis=1), dtype=float)


def _poi_boot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Probability of improvement per bootstrap row: x, y are (reps, seeds) resampled together."""
    a, b = x[:, :, None], y[:, None, :]
    return np.asarray((a > b).mean(axis=(1, 2)) + 0.5 * (a == b).mean(axis=(1, 2)), dtype=float)


def _n_seeds(by_variant: Mapping[str, np.ndarray]) -> int:
    return min(len(a) for a in by_variant.values())
