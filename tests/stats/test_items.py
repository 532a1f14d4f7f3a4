"""Known answers for the paired seed x item bootstrap (`bench_record.stats.items`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench_record.stats import seed_item_bootstrap
from bench_record.stats.items import METHOD


def test_identical_correctness_gives_a_zero_interval() -> None:
    correct = np.random.default_rng(0).random((3, 500)) < 0.8
    found = seed_item_bootstrap(correct, correct.copy())
    assert (found.mean_diff, found.ci95_low, found.ci95_high) == (0.0, 0.0, 0.0)
    assert (found.seeds, found.items, found.reps, found.method) == (3, 500, 2000, METHOD)


def test_it_is_deterministic_given_its_seed_and_paired() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random((4, 300)) < 0.7, rng.random((4, 300)) < 0.6
    assert seed_item_bootstrap(a, b) == seed_item_bootstrap(a, b)
    assert seed_item_bootstrap(a, b, seed=7) != seed_item_bootstrap(a, b)
    found = seed_item_bootstrap(a, b)
    assert found.mean_diff == pytest.approx(a.mean() - b.mean())
    # items grouped by column: their order does not matter, only which cells pair up
    order = rng.permutation(300)
    assert seed_item_bootstrap(a[:, order], b[:, order]) == found
    swapped = seed_item_bootstrap(b, a)  # other draws (the columns sort otherwise), the same distribution negated
    assert swapped.mean_diff == -found.mean_diff
    assert swapped.ci95_low == pytest.approx(-found.ci95_high, abs=0.01)
    assert swapped.ci95_high == pytest.approx(-found.ci95_low, abs=0.01)


def test_one_seed_is_an_item_bootstrap_as_wide_as_the_normal_approximation() -> None:
    """With one seed it resamples items alone: the paired difference of two proportions on the same items, whose
    standard error is sqrt((p10 + p01 - (p10 - p01)^2) / N) (p10: only the variant right, p01: only the baseline)."""
    n, rng = 4000, np.random.default_rng(2)
    a, b = np.zeros(n, bool), np.zeros(n, bool)
    order = rng.permutation(n)
    a[order[:3000]], b[order[:2800]], b[order[3000:3100]] = True, True, True  # p10 = 0.05, p01 = 0.025
    found = seed_item_bootstrap(a[None], b[None], reps=4000)
    p10, p01 = 200 / n, 100 / n
    se = math.sqrt((p10 + p01 - (p10 - p01) ** 2) / n)
    assert found.ci95_high - found.ci95_low == pytest.approx(2 * 1.959964 * se, rel=0.08)
    assert (found.ci95_low + found.ci95_high) / 2 == pytest.approx(p10 - p01, abs=0.15 * se)


def test_coverage_of_the_true_difference_is_near_95_percent() -> None:
    """Simulated fits with both seed and item variance: item i has latent ease x_i ~ Beta(2, 1); the variant gets it
    right with probability 0.1 + 0.8 x_i + alpha_s, the baseline 0.1 + 0.75 x_i + beta_s, through one uniform draw per
    (seed, item) (their mistakes overlap, as two models' do); alpha_s, beta_s ~ U(-0.02, 0.02) per seed. The true
    difference is 0.05 E[x] = 1/30."""
    rng, truth, hits, runs = np.random.default_rng(7), 0.05 * 2 / 3, 0, 200
    for _ in range(runs):
        x_N = rng.beta(2, 1, 500)
        alpha_S1, beta_S1 = rng.uniform(-0.02, 0.02, (5, 1)), rng.uniform(-0.02, 0.02, (5, 1))
        u_SN = rng.random((5, 500))
        found = seed_item_bootstrap(u_SN < 0.1 + 0.8 * x_N + alpha_S1, u_SN < 0.1 + 0.75 * x_N + beta_S1, reps=1000)
        hits += found.ci95_low <= truth <= found.ci95_high
    assert 0.90 <= hits / runs <= 0.99


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.ones((2, 5)), np.ones((2, 6)), "different cells"),
        (np.ones(5), np.ones(5), "seeds, items"),
        (np.full((2, 5), 2), np.ones((2, 5)), "0/1"),
    ],
)
def test_bad_input_is_named(a: np.ndarray, b: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        seed_item_bootstrap(a, b)
