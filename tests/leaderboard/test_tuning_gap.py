"""The gap to QKV on the tuning seed, untuned (the variant at QKV's best settings) and tuned, from records
built by hand: QKV's best trial completed in the variant's study, pruned there, or absent from it."""

from __future__ import annotations

from typing import Any

import pytest

from bench_leaderboard.build import board as board_of
from bench_leaderboard.build import render_html
from bench_leaderboard.tuning_gap import NOT_AMONG, tuning_gaps
from bench_record import CellRecord
from bench_record.schema import Tuning

from .test_leaderboard import REV_QKV, record

DEFAULTS = {"lr": 0.003, "warmup_frac": 0.05}
DRAWN = [{"lr": 0.004534875065104954, "warmup_frac": 0.07413853822334333},  # the same task-seeded draws
         {"lr": 0.00041145440451063794, "warmup_frac": 0.06647085550894105}]  # fmt: skip
OWN = {"lr": 0.0081, "warmup_frac": 0.0097}  # a later, value-driven candidate: this study's alone


def trial(number: int, params: dict[str, float], value: float, state: str = "complete", steps: int = 800) -> dict:
    return {"number": number, "params": params, "value": value, "state": state, "steps": steps, "fit_steps": 800}


def tuning(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """A study's record; its best is its best complete trial (higher is better), `best_params` with the fixed
    weight decay as the records hold it."""
    best = max((t for t in trials if t["state"] == "complete"), key=lambda t: t["value"])
    return {"trials_budget": len(trials), "trials_finished": len(trials), "search_space": {"lr": ["log", 3e-4, 1e-2]},
            "best_params": {**best["params"], "weight_decay": 1e-4}, "best_value": best["value"],
            "trials": trials}  # fmt: skip


#: QKV's study: its best is trial 1, the first draw
QKV = tuning([trial(0, DEFAULTS, 0.70), trial(1, DRAWN[0], 0.73), trial(2, DRAWN[1], 0.05, "pruned", 100)])
#: the variant's trials as the records show them: the same draws, floats round-tripped within 1e-9
CASES = {
    "complete": [trial(0, DEFAULTS, 0.69), trial(1, {k: v * (1 + 1e-12) for k, v in DRAWN[0].items()}, 0.68),
                 trial(2, OWN, 0.71)],
    "pruned": [trial(0, DEFAULTS, 0.69), trial(1, DRAWN[0], 0.40, "pruned", 100), trial(2, OWN, 0.71)],
    "absent": [trial(0, DEFAULTS, 0.69), trial(1, OWN, 0.71)],
}  # fmt: skip
EXPECTED = {
    "complete": {"tuned": 0.71 - 0.73, "untuned": 0.68 - 0.73, "untuned_trial": 1, "untuned_note": None},
    "pruned": {"tuned": 0.71 - 0.73, "untuned": None, "untuned_trial": 1,
               "untuned_note": "pruned at step 100 of 800: lost to the variant's own trials"},
    "absent": {"tuned": 0.71 - 0.73, "untuned": None, "untuned_trial": None, "untuned_note": NOT_AMONG},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_untuned_gap_is_the_variant_at_qkvs_best_settings(case: str) -> None:
    gaps = tuning_gaps(Tuning.from_dict(tuning(CASES[case])), Tuning.from_dict(QKV))
    assert gaps is not None
    assert gaps.keys() == EXPECTED[case].keys()
    for key, want in EXPECTED[case].items():
        assert gaps[key] == (pytest.approx(want) if isinstance(want, float) else want), key


def test_no_gap_without_best_values_or_for_borrowed_settings() -> None:
    qkv = Tuning.from_dict(QKV)
    assert tuning_gaps(None, qkv) is None
    assert tuning_gaps(Tuning.from_dict({**tuning(CASES["complete"]), "best_value": None}), qkv) is None
    # an int8 cell scores its base's fits: the study, and so the gap, is the base cell's
    assert tuning_gaps(Tuning.from_dict({**tuning(CASES["complete"]), "settings_of": "abc"}), qkv) is None
    no_trials = tuning_gaps(Tuning.from_dict(tuning(CASES["complete"])), Tuning.from_dict({**QKV, "trials": None}))
    assert no_trials is not None and no_trials["untuned"] is None and no_trials["untuned_note"]


def test_board_and_page_show_each_case() -> None:
    variants = {"complete": "tied-kv", "pruned": "tied-qk", "absent": "tied-qkv"}
    records = [record("reverse", "qkv", REV_QKV, REV_QKV, tuning=QKV)] + [
        record("reverse", v, [0.69, 0.70, 0.71], REV_QKV, tuning=tuning(CASES[case])) for case, v in variants.items()
    ]
    data = board_of([CellRecord.from_dict(r) for r in records], [], {})
    rows = {r["variant"]: r for g in data["groups"] for r in g["rows"]}
    assert rows["qkv"]["tuning_gaps"] is None
    for case, variant in variants.items():
        assert rows[variant]["tuning_gaps"]["untuned_note"] == EXPECTED[case]["untuned_note"]
    html = render_html(data)
    assert f"untuned {0.68 - 0.73:+.4g} (trial 1), tuned {0.71 - 0.73:+.4g}" in html
    assert "untuned <i>pruned at step 100 of 800: lost to the variant&#39;s own trials</i>" in html
    assert f"untuned <i>{NOT_AMONG.replace(chr(39), '&#39;')}</i>" in html
