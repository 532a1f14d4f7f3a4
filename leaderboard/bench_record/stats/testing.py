"""Corrections for many comparisons, equivalence tests and the seeds a comparison would need."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided paired t-tests (TOST) of |mean difference| < margin on the test's scale."""

    n: int
    mean_diff: float
    ci90_low: float  # the 90% interval: equivalence at 5% holds iff it lies inside (-margin, margin)
    ci90_high: float
    margin: float
    p_value: float | None  # max of the two one-sided p-values; None below 2 pairs
    equivalent: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bh_adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (controls the false discovery rate); same order as given."""
    if not p_values:
        return []
    from scipy import stats

    return [float(q) for q in stats.false_discovery_control(list(p_values), method="bh")]


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (controls the family-wise error); same order as given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def tost(diffs: Sequence[float], margin: float, alpha: float = 0.05) -> Equivalence:
    """Equivalence of paired differences within +-margin: both one-sided t-tests reject at `alpha`."""
    from scipy import stats

    n = len(diffs)
    if n == 0:
        raise ValueError("no differences to test")
    mean = sum(diffs) / n
    if n < 2:
        return Equivalence(n, mean, mean, mean, margin, None, False)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    se = max(sd / math.sqrt(n), 1e-15)
    p_low = float(stats.t.sf((mean + margin) / se, n - 1))  # H0: mean <= -margin
    p_high = float(stats.t.cdf((mean - margin) / se, n - 1))  # H0: mean >= +margin
    half = float(stats.t.ppf(1 - alpha, n - 1)) * se
    p = max(p_low, p_high)
    return Equivalence(n, mean, mean - half, mean + half, margin, p, p < alpha)


def _power_difference(effect: float, n: int, alpha: float) -> float:
    from scipy import stats

    df, nc = n - 1, effect * math.sqrt(n)
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def _power_equivalence(mean: float, sd: float, margin: float, n: int, alpha: float) -> float:
    from scipy import stats

    df, root = n - 1, math.sqrt(n) / sd
    crit = float(stats.t.ppf(1 - alpha, df))
    lower = float(stats.nct.sf(crit, df, (mean + margin) * root))
    upper = float(stats.nct.cdf(-crit, df, (mean - margin) * root))
    return max(0.0, lower + upper - 1)


def n_for_power(
    mean: float, sd: float, margin: float | None = None, power: float = 0.8, alpha: float = 0.05, cap: int = 1000
) -> int | None:
    """Seeds a paired t-test needs for `power` at the observed mean and sd of the differences.

    Without `margin`: the two-sided test of a non-zero difference. With `margin`: TOST equivalence
    within +-margin (only reachable when |mean| < margin). None when `cap` seeds would not do.
    """
    if sd <= 0:
        return 2 if (margin is None and mean != 0) or (margin is not None and abs(mean) < margin) else None
    if margin is not None and abs(mean) >= margin:
        return None
    for n in range(2, cap + 1):
        if margin is None:
            achieved = _power_difference(mean / sd, n, alpha)
        else:
            achieved = _power_equivalence(mean, sd, margin, n, alpha)
        if achieved >= power:
            return n
    return None
