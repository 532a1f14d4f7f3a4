"""Group-sequential paired comparisons: adaptive seeds with the error controlled across looks.

A variant is compared with the baseline through paired per-seed differences, added in seed order.
The design looks at planned seed counts (`Design.looks`, e.g. 3/5/8/12). At look k the paired
t-test on the first looks[k] differences decides "differs" when its two-sided p-value falls below
that look's boundary; with a margin, TOST decides "equivalent" when both one-sided p-values fall
below the look's one-sided boundary ("differs" wins a look where both cross). The first crossing
decides; an undecided comparison at the last look (the cap) is "inconclusive". Differences beyond
the cap are ignored, so extra seeds never change a decision, and a resumed run decides the same.

Boundaries: Lan-DeMets spending says how much error each look may have spent in all, at
information fraction t = looks[k] / looks[-1]: O'Brien-Fleming 2 - 2 Phi(z_{1-a/2} / sqrt(t)),
Pocock a log(1 + (e - 1) t). Converting normal boundaries to t is not enough at 2-4 degrees of
freedom, so the nominal levels are calibrated on the t statistics themselves, whose joint null law
does not depend on sigma. Look 1 is exact (its p-value is uniform). For later looks, 400,000 null
sequences are drawn with a fixed seed, as per-block sums (normal) and within-block sums of squares
(chi-square), which have the same law as raw differences. Each later threshold is the order
statistic that makes the still-running sequences spend exactly that look's increment. The overall
error is alpha up to one simulation standard error (about 0.0003). A design calibrates in ~0.1 s,
once: results are cached. Equivalence uses the same spending with alpha one-sided: when the true
mean is +margin the upper one-sided statistic is a central t, so declaring equivalence then
happens at most alpha of the time.

Off the normal law the t-test is only approximate. Symmetric differences keep the error near alpha
(t with 5 df: 0.041-0.045 at alpha 0.05). Skewed ones at 3-5 seeds do not (centred exponential:
0.13-0.15), and differences of two runs are symmetric only when both runs have the same noise.

Power: `power`, `detectable_effect` and `expected_seeds` integrate the decision rule over the same
exact law with scrambled Sobol points (deterministic quasi-Monte Carlo). This computation is
separate from the calibration draws and from `decide`, and the tests compare it with both.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SPENDINGS = {"obrien-fleming": "O'Brien-Fleming", "pocock": "Pocock"}
DECISIONS = ("differs", "equivalent", "continue", "inconclusive")
CALIBRATION_PATHS = 400_000  # one standard error of the overall error: sqrt(0.05 * 0.95 / 4e5) = 0.0003
CALIBRATION_SEED = 20240611
QMC_LOG2_POINTS = 16  # 65,536 Sobol points: power to about +-0.002
QMC_SEED = 7


@dataclass(frozen=True)
class Design:
    """A group-sequential plan: the seed counts to look at, two-sided alpha over all looks, spending."""

    looks: tuple[int, ...] = (3, 5, 8, 12)
    alpha: float = 0.05
    spending: str = "obrien-fleming"
    power: float = 0.8  # the power `detectable_effect` solves for

    def __post_init__(self) -> None:
        looks = tuple(self.looks)
        if not looks or not all(isinstance(n, int | np.integer) and not isinstance(n, bool) for n in looks):
            raise ValueError(f"Design.looks must be whole seed counts such as (3, 5, 8, 12), got {self.looks!r}")
        if looks[0] < 2:
            raise ValueError(f"Design.looks[0] is {looks[0]}: a t-test needs 2 differences, start at 2 or more")
        if any(b <= a for a, b in itertools.pairwise(looks)):
            raise ValueError(f"Design.looks must strictly increase, got {looks}; sort them and drop repeats")
        if not 0 < self.alpha < 1:
            raise ValueError(f"Design.alpha must lie in (0, 1), got {self.alpha!r}; e.g. 0.05")
        if self.spending not in SPENDINGS:
            close = difflib.get_close_matches(str(self.spending), SPENDINGS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"Unknown spending {self.spending!r}; {hint}Available: {', '.join(SPENDINGS)}")
        if not 0 < self.power < 1:
            raise ValueError(f"Design.power must lie in (0, 1), got {self.power!r}; e.g. 0.8")
        object.__setattr__(self, "looks", tuple(int(n) for n in looks))  # hashable, for the caches

    @property
    def name(self) -> str:
        """A one-line description for a page, e.g. "group-sequential paired t-test, ... alpha 0.05"."""
        seeds = "/".join(map(str, self.looks))
        return (
            f"group-sequential paired t-test, Lan-DeMets {SPENDINGS[self.spending]} alpha spending, "
            f"looks at {seeds} seeds, two-sided alpha {self.alpha:g}"
        )


@dataclass(frozen=True)
class Look:
    """What `decide` concluded, at the deciding look or the last complete one."""

    n_used: int  # seeds used at that look; 0 before the first look
    look: int | None  # index into Design.looks; None before the first look
    decision: str  # one of DECISIONS
    next_n: int | None  # seeds to have for the next look; None when decided or at the cap
    p_value: float | None  # two-sided paired t-test at that look
    threshold: float | None  # that look's boundary for p_value
    reason: str
    mean_diff: float | None = None
    equivalence_p: float | None = None  # TOST: the larger one-sided p-value; None without a margin
    equivalence_threshold: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _spent(spending: str, alpha: float, fractions: np.ndarray) -> np.ndarray:
    """Lan-DeMets: the error spent in all by each information fraction."""
    from scipy import stats

    if spending == "pocock":
        return alpha * np.log1p((math.e - 1) * fractions)
    return 2 * stats.norm.sf(stats.norm.isf(alpha / 2) / np.sqrt(fractions))


def _look_stats(
    normals: np.ndarray, within: np.ndarray, looks: tuple[int, ...], effect: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of the first looks[k] differences (sd 1), each (paths, K).

    Seeds between two looks form a block of m: its sum is normal (mean m * effect, variance m) and
    its sum of squares about its own mean is chi-square(m - 1), independent of the sum.
    """
    n = np.asarray(looks, dtype=float)
    m = np.diff(n, prepend=0.0)
    block_sums = effect * m + np.sqrt(m) * normals
    sums = np.cumsum(block_sums, axis=1)
    squares = np.cumsum(within + block_sums**2 / m, axis=1)  # sum of x^2 up to each look
    mean = sums / n
    spread = np.maximum(squares - sums * mean, 0.0)
    return mean, np.sqrt(spread / (n - 1) / n)


def _cut(values: np.ndarray, count: int) -> float:
    """A threshold with exactly `count` of `values` above it (none when count <= 0)."""
    if count <= 0:
        return float(values.max())
    upper = len(values) - min(count, len(values) - 1)
    low, high = np.partition(values, [upper - 1, upper])[[upper - 1, upper]]
    return float(low + high) / 2


@functools.cache
def _levels(looks: tuple[int, ...], alpha: float, spending: str, sides: int) -> tuple[float, ...]:
    """Nominal p-value levels (two-sided when sides == 2) that spend `alpha` as the spending says."""
    from scipy import stats

    rng = np.random.default_rng(CALIBRATION_SEED)
    df = np.diff(looks, prepend=0) - 1
    normals = rng.standard_normal((CALIBRATION_PATHS, len(looks)))
    within = rng.chisquare(np.maximum(df, 1), size=normals.shape) * (df > 0)
    mean, se = _look_stats(normals, within, looks)
    stat = np.abs(mean / se) if sides == 2 else mean / se
    spent = _spent(spending, alpha, np.asarray(looks) / looks[-1])
    running = np.ones(CALIBRATION_PATHS, dtype=bool)
    levels = []
    for k, n in enumerate(looks):
        if k == 0:  # the first look's p-value is exactly uniform: no simulation needed
            level = float(spent[0])
            crit = float(stats.t.isf(level / sides, n - 1))
        else:
            crossed = CALIBRATION_PATHS - int(running.sum())
            crit = _cut(stat[running, k], round(spent[k] * CALIBRATION_PATHS) - crossed)
            level = float(sides * stats.t.sf(crit, n - 1))
        running &= stat[:, k] <= crit
        levels.append(level)
    return tuple(levels)


def boundaries(design: Design) -> tuple[float, ...]:
    """The nominal two-sided p-value below which each look decides "differs"."""
    return _levels(design.looks, design.alpha, design.spending, 2)


def equivalence_boundaries(design: Design) -> tuple[float, ...]:
    """The nominal one-sided level both TOST p-values must fall below at each look."""
    return _levels(design.looks, design.alpha, design.spending, 1)


def _p_values(prefix: np.ndarray, margin: float | None) -> tuple[float, float | None, bool]:
    """The paired t-test's two-sided p, TOST's p (None without a margin) and whether the spread is zero."""
    from scipy import stats

    n, mean, sd = len(prefix), float(prefix.mean()), float(prefix.std(ddof=1))
    if sd <= 1e-12 * float(np.abs(prefix).max()):  # zero spread: both tests' limits as sd -> 0
        tost = None if margin is None else float(abs(mean) >= margin)
        return float(mean == 0), tost, True
    se = sd / math.sqrt(n)
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    if margin is None:
        return p, None, False
    above = stats.t.sf((mean + margin) / se, n - 1)  # H0: mean <= -margin
    below = stats.t.cdf((mean - margin) / se, n - 1)  # H0: mean >= +margin
    return p, float(max(above, below)), False


def _evaluate(prefix: np.ndarray, k: int, design: Design, margin: float | None) -> Look:
    """The verdict of look k on its own prefix of looks[k] differences."""
    p, eq_p, flat = _p_values(prefix, margin)
    n, mean, last = len(prefix), float(prefix.mean()), k == len(design.looks) - 1
    bound = boundaries(design)[k]
    eq_bound = None if margin is None else equivalence_boundaries(design)[k]
    where = f"look {k + 1} of {len(design.looks)} ({n} seeds)"
    note = f" (all differences equal {mean:.3g}: zero spread, p is the t-test's limit)" if flat else ""
    tost = "" if eq_p is None else f"; TOST within ±{margin:.3g} p {eq_p:.2g} vs boundary {eq_bound:.2g}"
    if p < bound:
        decision, next_n = "differs", None
        reason = f"differs at {where}: p {p:.2g} < boundary {bound:.2g}{tost}{note}"
    elif eq_p is not None and eq_bound is not None and eq_p < eq_bound:
        decision, next_n = "equivalent", None
        reason = f"equivalent within ±{margin:.3g} at {where}: TOST p {eq_p:.2g} < boundary {eq_bound:.2g}{note}"
    else:
        decision = "inconclusive" if last else "continue"
        next_n = None if last else design.looks[k + 1]
        then = "the cap is reached" if last else f"run {next_n} seeds for the next look"
        reason = f"{decision} at {where}: p {p:.2g} ≥ boundary {bound:.2g}{tost}{note}; {then}"
    return Look(n, k, decision, next_n, p, bound, reason, mean, eq_p, eq_bound)


def decide(diffs: Sequence[float] | np.ndarray, design: Design, margin: float | None = None) -> Look:
    """Replay the design's looks on the paired differences given, in seed order; the first crossing decides.

    Args:
        diffs: per-seed differences (variant minus baseline, on the test's scale), seeds 0, 1, ...
            Only the first looks[k] enter look k; those beyond the cap are ignored.
        design: the looks, alpha and spending.
        margin: with a margin (> 0, on the same scale), TOST may also decide "equivalent".
    """
    values = np.asarray(diffs, dtype=float).ravel()
    if not np.isfinite(values).all():
        raise ValueError(f"differences must be finite, got {values.tolist()}; drop or rerun the failed seeds")
    if margin is not None and not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a positive number on the test's scale, got {margin!r}")
    first = design.looks[0]
    if len(values) < first:
        reason = f"{len(values)} of the {first} seeds of the first look; run {first} seeds"
        return Look(0, None, "continue", first, None, None, reason)
    complete = sum(n <= len(values) for n in design.looks)
    for k in range(complete):
        look = _evaluate(values[: design.looks[k]], k, design, margin)
        if look.decision in ("differs", "equivalent"):
            return look
    return look


@functools.cache
def _sobol_blocks(looks: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Block normals and within-block chi-squares at scrambled Sobol points (fixed, so deterministic)."""
    from scipy import stats
    from scipy.stats import qmc

    k, df = len(looks), np.diff(looks, prepend=0) - 1
    u = qmc.Sobol(2 * k, scramble=True, rng=QMC_SEED).random_base2(QMC_LOG2_POINTS)
    u = np.clip(u, 1e-12, 1 - 1e-12)
    return stats.norm.ppf(u[:, :k]), stats.chi2.ppf(u[:, k:], np.maximum(df, 1)) * (df > 0)


def _stopping(design: Design, effect: float, margin: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of first deciding "differs" and "equivalent" at each look (sd 1, mean `effect`)."""
    from scipy import stats

    mean, se = _look_stats(*_sobol_blocks(design.looks), design.looks, effect)
    df = np.asarray(design.looks) - 1
    differs = np.abs(mean) > stats.t.isf(np.asarray(boundaries(design)) / 2, df) * se
    equivalent = np.zeros_like(differs)
    if margin is not None:
        crit = stats.t.isf(np.asarray(equivalence_boundaries(design)), df) * se
        equivalent = (mean + margin > crit) & (mean - margin < -crit) & ~differs
    decided = differs | equivalent
    first = decided & (np.cumsum(decided, axis=1) == 1)
    return (first & differs).mean(axis=0), (first & equivalent).mean(axis=0)


def power(design: Design, effect: float, margin: float | None = None) -> float:
    """Probability of deciding "differs" by the cap at a standardised effect (true mean / sd).

    With `margin` (also in sd units) the probability of deciding "equivalent" instead, both tests
    running as in `decide`.
    """
    differs, equivalent = _stopping(design, effect, margin)
    return float((differs if margin is None else equivalent).sum())


def expected_seeds(design: Design, effect: float, margin: float | None = None) -> float:
    """Average seeds a comparison uses at a standardised effect (and margin, in sd units)."""
    differs, equivalent = _stopping(design, effect, margin)
    stops = differs + equivalent
    n = np.asarray(design.looks, dtype=float)
    return float((stops * n).sum() + (1 - stops.sum()) * n[-1])


def detectable_effect(design: Design) -> float:
    """The smallest standardised effect (mean / sd of the differences) with power >= design.power."""
    from scipy import optimize

    def gap(effect: float) -> float:
        return power(design, effect) - design.power

    high = 1.0
    while gap(high) < 0:
        if high > 1e3:
            raise ValueError(f"{design.name} never reaches power {design.power}")
        high *= 2
    return float(optimize.brentq(gap, 0.0, high, xtol=1e-4))
