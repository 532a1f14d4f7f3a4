"""Seed statistics: mean, standard deviation, 95% t-interval, and the paired comparison with a baseline."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for a single seed
    ci95_low: float
    ci95_high: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Paired:
    """Variant minus baseline over the seeds both ran (same seeds: same data order and initial draws)."""

    n: int
    mean_diff: float
    ci95_low: float
    ci95_high: float
    p_value: float | None  # two-sided paired t-test; None below 2 pairs or with zero spread
    significant: bool  # the 95% interval excludes 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _t_quantile(df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def summarize(values: list[float]) -> Summary:
    """Mean and 95% confidence interval (Student t) of per-seed values."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = sum(values) / n
    if n == 1:
        return Summary(1, mean, 0.0, mean, mean)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = _t_quantile(n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def paired(variant: dict[int, float], baseline: dict[int, float]) -> Paired | None:
    """Paired comparison over common seeds; None when they share no seed."""
    seeds = sorted(set(variant) & set(baseline))
    if not seeds:
        return None
    diffs = [variant[s] - baseline[s] for s in seeds]
    s = summarize(diffs)
    p_value = None
    if s.n >= 2 and s.std > 0:
        from scipy import stats

        t_stat = s.mean / (s.std / math.sqrt(s.n))
        p_value = float(2 * stats.t.sf(abs(t_stat), s.n - 1))
    significant = s.n >= 2 and (s.ci95_low > 0 or s.ci95_high < 0)
    return Paired(s.n, s.mean, s.ci95_low, s.ci95_high, p_value, significant)
