"""Per-cell intervals and paired differences that respect the metric's range.

Bounded metrics (accuracy, AUROC in [0, 1]) get a Student t interval on the logit scale, perplexity
(> 1) one on log(perplexity - 1), while its paired differences are tested on log perplexity (a
ratio); the end points are mapped back, so an interval never leaves the metric's range.
Values at 0 or 1 are clamped to [CLAMP, 1 - CLAMP] before the logit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

CLAMP = 1e-4  # logit of exactly 0 or 1 is infinite: clamp to [CLAMP, 1 - CLAMP]
IDENTITY, LOGIT, LOG, LOG_EXCESS = "identity", "logit", "log", "log-excess"
BOUNDED = ("accuracy", "acc", "auroc", "auc", "f1", "precision", "recall")
METHODS = {
    IDENTITY: "Student t interval over seeds",
    LOGIT: f"Student t interval on the logit scale over seeds, mapped back (values clamped to [{CLAMP}, {1 - CLAMP}])",
    LOG: "Student t interval on the log scale over seeds, mapped back",
    LOG_EXCESS: "Student t interval on log(perplexity - 1) over seeds, mapped back (so it stays above 1)",
}


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1) on the natural scale; 0 for a single seed
    ci95_low: float
    ci95_high: float
    method: str = IDENTITY  # the scale the interval was computed on

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Paired:
    """Variant minus baseline over the seeds both ran (same seeds: same data order and initial draws).

    `mean_diff` and its interval are on the natural scale; `scale_diff` and its interval on the
    test's scale (a log ratio for perplexity, a log odds ratio for bounded metrics). `p_value` is the
    two-sided paired t-test on the test's scale; `significant` is p < 0.05 before any correction.
    """

    n: int
    mean_diff: float
    ci95_low: float
    ci95_high: float
    p_value: float | None  # None below 2 pairs or with zero spread
    significant: bool
    scale: str = IDENTITY
    scale_diff: float = 0.0
    scale_ci95_low: float = 0.0
    scale_ci95_high: float = 0.0
    scale_std: float = 0.0  # sd of the per-seed differences on the test's scale

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def metric_scale(metric: str, higher_is_better: bool = True) -> str:
    """The scale a metric's intervals are computed on: "logit" (bounded), "log" (perplexity, steps), else "identity"."""
    name = metric.lower()
    if "perplexity" in name or name in ("ppl", "loss_exp") or name.startswith("steps"):  # ratios: ppl, steps to target
        return LOG
    if any(name == b or name.endswith("_" + b) or name.startswith(b) for b in BOUNDED):
        return LOGIT
    return IDENTITY


def to_scale(scale: str) -> Callable[[float], float]:
    """The map from the natural scale onto `scale` (clamped logit, log, log(x - 1) or identity)."""
    if scale == LOGIT:
        return lambda v: math.log(min(max(v, CLAMP), 1 - CLAMP) / (1 - min(max(v, CLAMP), 1 - CLAMP)))
    if scale == LOG:
        return lambda v: math.log(max(v, 1e-12))
    if scale == LOG_EXCESS:
        return lambda v: math.log(max(v - 1, 1e-12))
    return lambda v: v


def _backward(scale: str) -> Callable[[float], float]:
    if scale == LOGIT:
        return lambda z: 1 / (1 + math.exp(-z))
    if scale == LOG:
        return math.exp
    if scale == LOG_EXCESS:
        return lambda z: 1 + math.exp(z)
    return lambda z: z


def _t_quantile(df: int, level: float = 0.95) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df))


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd


def summarize(values: Sequence[float], scale: str = IDENTITY) -> Summary:
    """Mean and 95% confidence interval of per-seed values; the interval is a t interval on `scale`."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean, std = _mean_sd(values)
    if n == 1:
        return Summary(1, mean, 0.0, mean, mean, scale)
    f, b = to_scale(scale), _backward(scale)
    z_mean, z_sd = _mean_sd([f(v) for v in values])
    half = _t_quantile(n - 1) * z_sd / math.sqrt(n)
    return Summary(n, mean, std, b(z_mean - half), b(z_mean + half), scale)


def interval_scale(metric: str, higher_is_better: bool = True) -> str:
    """The scale a cell's interval is computed on: as `metric_scale`, but perplexity on log(ppl - 1) (> 1)."""
    scale = metric_scale(metric, higher_is_better)
    return LOG_EXCESS if scale == LOG else scale


def summarize_metric(values: Sequence[float], metric: str, higher_is_better: bool = True) -> Summary:
    """`summarize` on the metric's interval scale (see `interval_scale`): the interval stays in range."""
    return summarize(values, interval_scale(metric, higher_is_better))


def paired(variant: dict[int, float], baseline: dict[int, float], scale: str = IDENTITY) -> Paired | None:
    """Paired comparison over common seeds; None when they share no seed.

    Args:
        variant: seed -> the variant's test metric.
        baseline: seed -> the baseline's test metric on the same seed.
        scale: "identity", "logit" or "log": where the t-test and `scale_diff` are computed.
    """
    seeds = sorted(set(variant) & set(baseline))
    if not seeds:
        return None
    f = to_scale(scale)
    natural = summarize([variant[s] - baseline[s] for s in seeds])
    on_scale = summarize([f(variant[s]) - f(baseline[s]) for s in seeds])
    p_value = None
    if on_scale.n >= 2 and on_scale.std > 1e-15:
        from scipy import stats

        t_stat = on_scale.mean / (on_scale.std / math.sqrt(on_scale.n))
        p_value = float(2 * stats.t.sf(abs(t_stat), on_scale.n - 1))
    significant = p_value is not None and p_value < 0.05
    return Paired(
        natural.n, natural.mean, natural.ci95_low, natural.ci95_high, p_value, significant,
        scale, on_scale.mean, on_scale.ci95_low, on_scale.ci95_high, on_scale.std,
    )  # fmt: skip
