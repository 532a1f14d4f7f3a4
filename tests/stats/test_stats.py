"""Known answers for bench_record.stats: coverage, range, corrections, equivalence, aggregates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench_record.stats import (
    aggregate,
    bh_adjust,
    holm_adjust,
    iqm,
    metric_scale,
    n_for_power,
    normalise,
    paired,
    probability_of_improvement,
    summarize,
    summarize_metric,
    tost,
)


def test_metric_scale() -> None:
    assert metric_scale("accuracy") == "logit"
    assert metric_scale("image_auroc") == "logit"
    assert metric_scale("perplexity", False) == "log"
    assert metric_scale("loss") == "identity"


@pytest.mark.parametrize(
    ("values", "metric", "low", "high"),
    [
        ([1.0, 1.0, 0.99, 1.0, 0.98], "accuracy", 0.0, 1.0),
        ([0.0, 0.01, 0.0, 0.02, 0.0], "accuracy", 0.0, 1.0),
        ([1.0, 1.0, 1.0, 1.0, 1.0], "auroc", 0.0, 1.0),
        ([1.05, 1.3, 1.01, 2.0, 1.1], "perplexity", 1.0, math.inf),
    ],
)
def test_interval_inside_metric_range(values: list[float], metric: str, low: float, high: float) -> None:
    s = summarize_metric(values, metric, metric != "perplexity")
    assert low <= s.ci95_low <= s.ci95_high <= high
    plain = summarize(values)  # the plain t interval may leave the range; the metric's must not
    assert plain.ci95_low <= plain.mean <= plain.ci95_high


def test_single_seed_is_a_point() -> None:
    s = summarize_metric([0.7], "accuracy")
    assert (s.n, s.ci95_low, s.ci95_high, s.std) == (1, 0.7, 0.7, 0.0)


@pytest.mark.parametrize("scale", ["identity", "logit"])
def test_coverage_near_nominal(scale: str) -> None:
    """The interval covers the true centre (the mean; on the logit scale the back-transformed mean) ~95%."""
    rng = np.random.default_rng(1)
    true, hits = 0.8, 0
    for _ in range(400):
        if scale == "logit":
            values = list(1 / (1 + np.exp(-(math.log(true / (1 - true)) + rng.normal(0, 0.2, size=5)))))
        else:
            values = list(true + rng.normal(0, 0.02, size=5))
        s = summarize(values, scale)
        hits += s.ci95_low <= true <= s.ci95_high
    assert 0.90 <= hits / 400 <= 0.99


def test_paired_large_effect_and_no_effect() -> None:
    base = {s: 0.80 + 0.01 * s for s in range(5)}
    better = {s: v + 0.05 + 0.002 * (-1) ** s for s, v in base.items()}
    big = paired(better, base, "logit")
    assert big is not None and big.significant and big.p_value is not None and big.p_value < 0.001
    assert big.ci95_low > 0 and big.scale_ci95_low > 0
    same = paired(base, base, "logit")
    assert same is not None and not same.significant and same.p_value is None
    assert paired({0: 0.5}, {1: 0.5}) is None


def test_bh_false_star_rate_under_no_effect() -> None:
    """10 variants x 14 tasks x 5 paired seeds, no true effect: BH stars stay near the 5% rate."""
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(200):
        base = rng.normal(0.8, 0.02, size=(14, 5))
        noise = rng.normal(0, 0.01, size=(10, 14, 5))
        p_values = []
        for v in range(10):
            for t in range(14):
                c = paired(dict(enumerate(base[t] + noise[v, t])), dict(enumerate(base[t])))
                assert c is not None and c.p_value is not None
                p_values.append(c.p_value)
        rates.append(np.mean(np.array(bh_adjust(p_values)) < 0.05))
    assert np.mean(rates) <= 0.05 + 0.01


def test_holm_known_answer() -> None:
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert bh_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.04, 0.04])
    assert holm_adjust([]) == [] and bh_adjust([]) == []


def test_tost_accepts_equivalent_and_rejects_different() -> None:
    rng = np.random.default_rng(3)
    close = list(rng.normal(0.001, 0.003, size=5))
    far = list(rng.normal(0.05, 0.003, size=5))
    assert tost(close, 0.02).equivalent
    assert not tost(far, 0.02).equivalent
    noisy = [0.03, -0.03, 0.02, -0.025, 0.0]  # not significant, yet not shown equivalent either
    assert not tost(noisy, 0.02).equivalent
    assert not tost([0.0], 0.02).equivalent


def test_power_grows_with_noise() -> None:
    small, large = n_for_power(0.01, 0.01), n_for_power(0.01, 0.03)
    assert small is not None and large is not None and small < large
    assert n_for_power(0.03, 0.01, margin=0.02) is None  # the estimate sits outside the margin
    assert n_for_power(0.0, 0.01, margin=0.02) is not None


def test_iqm_and_normalise() -> None:
    assert iqm([0, 1, 2, 3, 100, -100, 1, 2]) == pytest.approx(1.5)
    assert normalise([0.5, 1.0], baseline=0.5, best=1.0) == [0.0, 1.0]
    assert normalise([20.0, 10.0], baseline=20.0, best=10.0) == [0.0, 1.0]  # perplexity: lower is better


def test_probability_of_improvement() -> None:
    assert probability_of_improvement([2, 3], [0, 1]) == 1.0
    assert probability_of_improvement([1, 1], [1, 1]) == 0.5
    assert probability_of_improvement([10.0], [12.0], higher_is_better=False) == 1.0


def test_aggregate_deterministic_and_ordered() -> None:
    rng = np.random.default_rng(5)
    matrix = {
        f"t{t}": {"qkv": list(rng.normal(0.5, 0.05, 5)), "good": list(rng.normal(0.9, 0.05, 5))} for t in range(6)
    }
    first, second = aggregate(matrix, "qkv", reps=300), aggregate(matrix, "qkv", reps=300)
    assert first == second
    assert [a.variant for a in first] == ["good", "qkv"]
    good = first[0]
    assert good.iqm_low <= good.iqm <= good.iqm_high
    assert good.poi == 1.0 and good.poi_low == 1.0
    assert first[1].poi is None
