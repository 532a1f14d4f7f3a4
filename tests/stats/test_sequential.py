"""Group-sequential comparisons: error rates and power by simulation, known answers, decide's contract.

The simulations apply the design's rule with scipy's own t-tests, vectorised over 20,000 sequences
(`_simulate`), and one test checks that `decide` agrees with that rule sequence by sequence. Monte
Carlo tolerances are three standard errors of a proportion over SIMS sequences: sqrt(p (1 - p) / SIMS).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import optimize, stats

from bench_record.stats.sequential import (
    Design,
    boundaries,
    decide,
    detectable_effect,
    equivalence_boundaries,
    expected_seeds,
    power,
)
from bench_record.stats.testing import tost

SIMS = 20_000
DESIGNS = [
    Design(),
    Design(spending="pocock"),
    Design(looks=(2, 4, 7, 10, 15), alpha=0.1),
    Design(looks=(2, 4, 7, 10, 15), alpha=0.1, spending="pocock"),
]
UNDECIDED, DIFFERS, EQUIVALENT = 0, 1, 2


def _tolerance(p: float) -> float:
    return 3 * math.sqrt(p * (1 - p) / SIMS)


def _normal_diffs(design: Design, mean: float, sd: float = 1.0, seed: int = 1) -> np.ndarray:
    return mean + sd * np.random.default_rng(seed).standard_normal((SIMS, design.looks[-1]))


def _simulate(design: Design, diffs: np.ndarray, margin: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rule with scipy's t-tests on each look's prefix: (outcome code, seeds used) per sequence."""
    outcome = np.full(len(diffs), UNDECIDED)
    used = np.zeros(len(diffs), dtype=int)
    for k, n in enumerate(design.looks):
        prefix, running = diffs[:, :n], outcome == UNDECIDED
        differs = stats.ttest_1samp(prefix, 0.0, axis=1).pvalue < boundaries(design)[k]
        equivalent = np.zeros_like(differs)
        if margin is not None:
            above = stats.ttest_1samp(prefix, -margin, axis=1, alternative="greater").pvalue
            below = stats.ttest_1samp(prefix, margin, axis=1, alternative="less").pvalue
            equivalent = np.maximum(above, below) < equivalence_boundaries(design)[k]
        outcome[running & differs] = DIFFERS
        outcome[running & ~differs & equivalent] = EQUIVALENT
        used[running] = n
    return outcome, used


# (a) false positives under no effect


@pytest.mark.parametrize("design", DESIGNS, ids=lambda d: d.name)
def test_false_positive_rate_is_alpha_across_looks(design: Design) -> None:
    outcome, _ = _simulate(design, _normal_diffs(design, 0.0))
    rate = float(np.mean(outcome == DIFFERS))
    # two-sided: the calibration should spend alpha, not just stay under it
    assert abs(rate - design.alpha) <= _tolerance(design.alpha), rate


def test_naive_repeated_testing_would_inflate_the_error() -> None:
    """The control: p < alpha at every look errs far more often, so the test above has teeth."""
    design = Design()
    diffs = _normal_diffs(design, 0.0)
    naive = np.zeros(SIMS, dtype=bool)
    for n in design.looks:
        naive |= stats.ttest_1samp(diffs[:, :n], 0.0, axis=1).pvalue < design.alpha
    assert naive.mean() > design.alpha + 0.04


@pytest.mark.parametrize("design", DESIGNS[:2], ids=lambda d: d.spending)
@pytest.mark.parametrize(
    ("law", "tolerance"),
    [
        ("t5", 0.015),
        ("triangular", 0.015),  # the difference of two uniform runs
        ("laplace-difference", 0.025),  # the difference of two exponential runs: heavy-tailed, conservative
        # the t-test itself is liberal on 3 uniform differences (7.8% at a nominal 5%): a looser bound
        ("uniform", 0.03),
    ],
)
def test_false_positive_rate_near_alpha_for_non_normal_differences(design: Design, law: str, tolerance: float) -> None:
    rng = np.random.default_rng(2)
    shape = (SIMS, design.looks[-1])
    draws = {
        "t5": lambda: rng.standard_t(5, shape),
        "triangular": lambda: rng.uniform(-1, 1, shape) - rng.uniform(-1, 1, shape),
        "laplace-difference": lambda: rng.exponential(size=shape) - rng.exponential(size=shape),
        "uniform": lambda: rng.uniform(-1, 1, shape),
    }
    outcome, _ = _simulate(design, draws[law]())
    assert abs(float(np.mean(outcome == DIFFERS)) - design.alpha) <= tolerance


# (b) power


@pytest.mark.parametrize("design", DESIGNS, ids=lambda d: d.name)
def test_simulated_power_matches_power_and_the_design(design: Design) -> None:
    effect = detectable_effect(design)
    assert power(design, effect) == pytest.approx(design.power, abs=0.002)
    for shift in (effect, effect / 2):
        outcome, _ = _simulate(design, _normal_diffs(design, shift, seed=3))
        predicted = power(design, shift)
        # the simulation's error plus about 0.003 for power's quasi-Monte Carlo integral
        assert abs(float(np.mean(outcome == DIFFERS)) - predicted) <= _tolerance(predicted) + 0.003
    outcome, _ = _simulate(design, _normal_diffs(design, effect, seed=4))
    assert float(np.mean(outcome == DIFFERS)) >= design.power - _tolerance(design.power)


@pytest.mark.parametrize("effect", [0.5, 0.9, 1.4])
def test_single_look_power_is_the_noncentral_t(effect: float) -> None:
    n, alpha = 10, 0.05
    crit = stats.t.isf(alpha / 2, n - 1)
    exact = stats.nct.sf(crit, n - 1, effect * math.sqrt(n)) + stats.nct.cdf(-crit, n - 1, effect * math.sqrt(n))
    assert power(Design(looks=(n,), alpha=alpha), effect) == pytest.approx(exact, abs=0.003)


def test_power_at_no_effect_is_alpha_and_looks_cost_little_power() -> None:
    design = Design()
    assert power(design, 0.0) == pytest.approx(design.alpha, abs=0.002)
    fixed = Design(looks=(design.looks[-1],))
    effect = detectable_effect(fixed)
    assert power(fixed, effect) - 0.05 < power(design, effect) < power(fixed, effect)


@pytest.mark.parametrize("design", DESIGNS[:2], ids=lambda d: d.spending)
@pytest.mark.parametrize("effect", [0.0, 1.0])
def test_expected_seeds_match_simulation(design: Design, effect: float) -> None:
    _, used = _simulate(design, _normal_diffs(design, effect, seed=5))
    assert expected_seeds(design, effect) == pytest.approx(float(used.mean()), abs=0.1)


def test_a_large_effect_stops_near_the_first_look() -> None:
    design = Design(spending="pocock")
    assert expected_seeds(design, 8.0) < design.looks[0] + 0.5
    # O'Brien-Fleming's first boundary is strict (t > 75 at 2 degrees of freedom): it waits for look 2
    assert expected_seeds(Design(), 8.0) == pytest.approx(Design().looks[1], abs=0.3)


# (c) equivalence


@pytest.mark.parametrize("design", DESIGNS, ids=lambda d: d.name)
def test_equivalence_boundaries_spend_one_sided_alpha(design: Design) -> None:
    """At true mean = +margin the upper TOST statistic is a central t: its crossings must spend alpha."""
    diffs = _normal_diffs(design, 0.0, seed=6)  # the differences minus the margin
    crossed = np.zeros(SIMS, dtype=bool)
    for k, n in enumerate(design.looks):
        below = stats.ttest_1samp(diffs[:, :n], 0.0, axis=1, alternative="less").pvalue
        crossed |= below < equivalence_boundaries(design)[k]
    assert abs(float(crossed.mean()) - design.alpha) <= _tolerance(design.alpha)


@pytest.mark.parametrize("design", DESIGNS[:2], ids=lambda d: d.spending)
@pytest.mark.parametrize("margin", [0.5, 2.0])
def test_equivalence_is_rarely_declared_at_the_margin(design: Design, margin: float) -> None:
    outcome, _ = _simulate(design, _normal_diffs(design, margin, seed=7), margin)
    rate = float(np.mean(outcome == EQUIVALENT))
    assert rate <= design.alpha + _tolerance(design.alpha)
    assert rate == pytest.approx(power(design, margin, margin), abs=_tolerance(design.alpha) + 0.003)


@pytest.mark.parametrize("design", DESIGNS[:2], ids=lambda d: d.spending)
def test_equivalence_found_early_when_the_spread_is_small(design: Design) -> None:
    outcome, used = _simulate(design, _normal_diffs(design, 0.0, sd=0.1), margin=1.0)
    # the rest are the false "differs" that no effect still produces at rate alpha
    assert np.mean(outcome == EQUIVALENT) >= 1 - design.alpha - _tolerance(design.alpha)
    assert np.mean(used <= design.looks[1]) > 0.95
    found = float(np.mean(outcome == EQUIVALENT))  # the same case in sd units: margin 10 sd
    assert power(design, 0.0, margin=10.0) == pytest.approx(found, abs=_tolerance(design.alpha) + 0.003)


def test_single_look_equivalence_is_tost() -> None:
    design, rng = Design(looks=(8,)), np.random.default_rng(8)
    for _ in range(50):
        diffs = rng.normal(0.2, 0.5, 8)
        expected = tost(diffs.tolist(), 0.6, alpha=0.05)
        look = decide(diffs, design, margin=0.6)
        if look.decision != "differs":
            assert (look.decision == "equivalent") == expected.equivalent
            assert look.equivalence_p == pytest.approx(expected.p_value)


# (d) known answers for the boundaries


def test_obrien_fleming_is_strict_early_and_lenient_late() -> None:
    design = Design()
    levels = boundaries(design)
    assert all(a < b for a, b in itertools.pairwise(levels))
    assert levels[0] < design.alpha / 100
    assert 0.75 * design.alpha < levels[-1] < design.alpha


def test_pocock_is_roughly_flat() -> None:
    levels = boundaries(Design(spending="pocock"))
    assert max(levels) / min(levels) < 1.7
    assert all(0.01 < level < 0.025 for level in levels)


def _normal_theory_levels(design: Design) -> list[float]:
    """Lan-DeMets two-sided z boundaries by multivariate normal integration, as nominal p-values."""
    t = np.asarray(design.looks) / design.looks[-1]
    if design.spending == "pocock":
        spent = design.alpha * np.log(1 + (math.e - 1) * t)
    else:
        spent = 2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - design.alpha / 2) / np.sqrt(t))
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    bounds: list[float] = []
    for k in range(len(t)):
        law = stats.multivariate_normal(cov=cov[: k + 1, : k + 1])

        def gap(b: float, law=law, k=k) -> float:
            upper = np.array([*bounds, b])
            return 1 - law.cdf(upper, lower_limit=-upper, rng=0) - spent[k]

        bounds.append(optimize.brentq(gap, 0.5, 8.0, xtol=1e-5))
    return [float(2 * stats.norm.sf(b)) for b in bounds]


@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock"])
def test_many_seeds_give_the_normal_theory_boundaries(spending: str) -> None:
    """At 100+ degrees of freedom t is nearly normal: the calibration must find the classic boundaries."""
    design = Design(looks=(100, 200, 300, 400), spending=spending)
    assert boundaries(design) == pytest.approx(_normal_theory_levels(design), rel=0.1)


def test_single_look_is_the_paired_t_test() -> None:
    design, rng = Design(looks=(6,)), np.random.default_rng(9)
    assert boundaries(design) == pytest.approx((design.alpha,))
    for _ in range(50):
        diffs = rng.normal(0.8, 1.0, 6)
        look = decide(diffs, design)
        reference = stats.ttest_1samp(diffs, 0.0)
        assert look.p_value == pytest.approx(reference.pvalue)
        assert (look.decision == "differs") == (reference.pvalue < design.alpha)
        assert look.decision in ("differs", "inconclusive")


def test_boundaries_are_deterministic() -> None:
    from bench_record.stats import sequential

    first = boundaries(Design(looks=(3, 6, 9)))
    sequential._levels.cache_clear()
    assert boundaries(Design(looks=(3, 6, 9))) == first


# (e) decide's contract


@pytest.mark.parametrize("design", DESIGNS[:2], ids=lambda d: d.spending)
def test_decide_agrees_with_the_vectorised_rule(design: Design) -> None:
    diffs = _normal_diffs(design, 0.7, seed=10)[:300]
    outcome, used = _simulate(design, diffs, margin=1.5)
    names = {UNDECIDED: "inconclusive", DIFFERS: "differs", EQUIVALENT: "equivalent"}
    for row, code, n in zip(diffs, outcome, used, strict=True):
        look = decide(row, design, margin=1.5)
        assert (look.decision, look.n_used) == (names[code], n)
    assert len(set(outcome.tolist())) == 3  # all three outcomes occurred, so each was compared


def test_appending_differences_after_a_decision_changes_nothing() -> None:
    design, rng = Design(spending="pocock"), np.random.default_rng(11)
    decided = 0
    for _ in range(100):
        diffs = rng.normal(1.0, 1.0, 20)
        final = decide(diffs, design)
        if final.decision == "differs":
            decided += 1
            for m in range(final.n_used, 21):  # from the deciding look on, more seeds change nothing
                assert decide(diffs[:m], design) == final
    assert decided > 50


def test_continue_until_the_next_look_and_inconclusive_at_the_cap() -> None:
    design = Design()
    early = decide([0.1, -0.2], design)
    assert (early.decision, early.next_n, early.n_used, early.look) == ("continue", 3, 0, None)
    zigzag = [1.0, -1.0, 0.5, -0.5, 0.2, -0.2, 0.1, -0.1, 0.3, -0.3, 0.4, -0.4]
    between = decide(zigzag[:6], design)  # 6 seeds: look 2 (5 seeds) is the last complete one
    assert (between.decision, between.look, between.n_used, between.next_n) == ("continue", 1, 5, 8)
    assert "look 2 of 4 (5 seeds)" in between.reason
    final = decide([*zigzag, 50.0, 60.0], design)  # beyond the cap: ignored
    assert (final.decision, final.n_used, final.next_n) == ("inconclusive", 12, None)


def test_zero_spread_decides_without_crashing() -> None:
    design = Design()
    same = decide([0.0] * 3, design, margin=0.1)
    assert same.decision == "equivalent" and "zero spread" in same.reason
    shifted = decide([0.3] * 5, design)
    assert (shifted.decision, shifted.look, shifted.n_used) == ("differs", 0, 3)
    assert decide([0.0] * 12, design).decision == "inconclusive"


def test_reason_reads_like_the_spec() -> None:
    look = decide([1.0, 1.1, 0.9, 1.05, 0.95], Design())
    assert look.decision == "differs"
    assert look.reason.startswith("differs at look 2 of 4 (5 seeds): p ")
    assert "< boundary 0.0023" in look.reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"looks": (3, 3, 8)}, "strictly increase"),
        ({"looks": (5, 3)}, "strictly increase"),
        ({"looks": (1, 4)}, "start at 2"),
        ({"looks": ()}, "whole seed counts"),
        ({"looks": (3.5, 6)}, "whole seed counts"),
        ({"alpha": 0.0}, r"alpha must lie in \(0, 1\)"),
        ({"alpha": 1.5}, r"alpha must lie in \(0, 1\)"),
        ({"spending": "pocok"}, "did you mean 'pocock'"),
        ({"spending": "obrien"}, "did you mean 'obrien-fleming'"),
        ({"power": 1.0}, r"power must lie in \(0, 1\)"),
    ],
)
def test_bad_designs_say_how_to_fix_them(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Design(**kwargs)


def test_bad_inputs_to_decide_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        decide([0.1, math.nan, 0.2], Design())
    with pytest.raises(ValueError, match="positive"):
        decide([0.1, 0.2, 0.3], Design(), margin=0.0)


def test_name_describes_the_design() -> None:
    assert Design().name == (
        "group-sequential paired t-test, Lan-DeMets O'Brien-Fleming alpha spending, "
        "looks at 3/5/8/12 seeds, two-sided alpha 0.05"
    )
    assert Design(looks=[3, 6], spending="pocock").looks == (3, 6)  # type: ignore[arg-type]  # a list is coerced
