"""Verdicts against budget: paired differences along the fits' curves, stable or moving, and the claims they hold up."""

from __future__ import annotations

from typing import Any

import pytest

from bench_leaderboard import budget
from bench_leaderboard import tested as tested_mod
from bench_leaderboard.build import render_html
from tests.leaderboard.test_leaderboard import LOW5, Q5, board, group, record, typed

STEPS = (5, 10, 20, 40)


def with_curve(rec: dict[str, Any], at: dict[int, list[float]]) -> dict[str, Any]:
    """`rec` whose seeds carry test curves: step -> per-seed values (the last step's are the seeds' test values)."""
    metric = rec["task"]["metric"]
    for i, entry in enumerate(rec["per_seed"]):
        entry["curve"] = [{"step": s, "test": {metric: at[s][i]}} for s in STEPS]
    return rec


def shifted(values: list[float], by: float) -> list[float]:
    return [v + by for v in values]


def cells(task: str, worse_at_half: float, worse_at_end: float) -> list[dict[str, Any]]:
    """QKV and Q=K=V on `task`; Q=K=V's gap to QKV at half budget and at the end as given."""
    qkv_curve = {5: shifted(Q5, -0.3), 10: shifted(Q5, -0.2), 20: shifted(Q5, -0.1), 40: Q5}
    noise = [0.004, -0.003, 0.002, -0.004, 0.001]
    end = [q - worse_at_end + e for q, e in zip(Q5, noise, strict=True)]
    half = [q - worse_at_half + e for q, e in zip(qkv_curve[20], noise, strict=True)]
    low_curve = {5: shifted(qkv_curve[5], -0.05), 10: shifted(qkv_curve[10], -0.05), 20: half, 40: end}
    return [with_curve(record(task, "qkv", Q5, Q5), qkv_curve),
            with_curve(record(task, "tied-qkv", end, Q5), low_curve)]  # fmt: skip


@pytest.mark.parametrize(
    ("half", "end", "label", "direction"),
    [
        (0.2, 0.2, budget.STABLE, None),  # worse at half and at full budget
        (0.0, 0.0, budget.STABLE, None),  # the same at both
        (0.2, 0.0, budget.MOVING, "closing"),  # worse at half, caught up by the end: a verdict on speed
        (0.0, 0.2, budget.MOVING, "widening"),
    ],
)
def test_a_verdict_is_stable_only_when_half_and_full_budget_decide_alike(
    half: float, end: float, label: str, direction: str | None
) -> None:
    qkv, low = cells("reverse", half, end)
    found = budget.verdict(typed(low), typed(qkv))
    assert [p["step"] for p in found["points"]] == list(STEPS) and found["points"][-1]["fraction"] == 1.0
    assert (found["label"], found["direction"]) == (label, direction), found["text"]
    assert found["points"][2]["mean_diff"] == pytest.approx(-half, abs=1e-9)
    assert found["points"][-1]["mean_diff"] == pytest.approx(-end, abs=1e-9)


def test_records_without_curves_say_so() -> None:
    assert budget.verdict(typed(record("reverse", "tied-qkv", LOW5)), typed(record("reverse", "qkv", Q5)))["label"] == (
        budget.NO_CURVE
    )


@pytest.mark.parametrize(("half", "status"), [(0.2, tested_mod.HELD), (0.0, tested_mod.INCONCLUSIVE)])
def test_a_claim_on_a_moving_verdict_is_inconclusive(half: float, status: str) -> None:
    """Claim (c), Q=K=V below QKV on REVERSE and SWAP: held only where that holds at half budget too."""
    data = board([*cells("reverse", half, 0.2), *cells("swap", half, 0.2)], [], {})
    claim = next(c for c in data["tested_claims"] if c["id"] == "c")
    assert claim["status"] == status, claim["evidence"]
    assert claim["budget"] == (budget.STABLE if half else budget.MOVING)
    assert ("a longer budget is what it needs" in claim["evidence"]) is (not half)
    row = next(r for r in group(data, "reverse")["rows"] if r["variant"] == "tied-qkv")
    assert row["budget"]["label"] == (budget.STABLE if half else budget.MOVING)


def test_variants_that_ran_few_tasks_are_never_ranked_beside_those_that_ran_many() -> None:
    """MQA on the LM alone (1 of 3 ranked tasks) sits in its own list, however well it did there."""
    from tests.leaderboard.test_leaderboard import DIGITS, LM_QKV, REV_QKV

    lm_best = [19.0, 19.1, 19.05]
    records = [
        *(record(t, "qkv", xs, xs) for t, xs in (("reverse", REV_QKV), ("mnist", DIGITS), ("lm", LM_QKV))),
        *(record(t, "tied-kv", xs, base) for t, xs, base in
          (("reverse", [0.69, 0.70, 0.70], REV_QKV), ("mnist", [0.97, 0.975, 0.972], DIGITS), ("lm", lm_best, LM_QKV))),
        record("lm", "mqa", [18.0, 18.1, 18.05], LM_QKV),
    ]  # fmt: skip
    data = board(records, [], {})
    overview = data["overview"]
    assert overview["ranked_tasks"] == 3
    assert {v["variant"] for v in overview["mean_ranks"]} == {"qkv", "tied-kv"}
    assert [(v["variant"], v["tasks"]) for v in overview["mean_ranks_partial"]] == [("mqa", 1)]
    assert {a["variant"] for a in overview["aggregates"]["rows"]} == {"qkv", "tied-kv"}
    assert [a["variant"] for a in overview["aggregates"]["partial"]] == ["mqa"]
    assert "Ran on fewer than half of the 3 ranked tasks" in render_html(data)
