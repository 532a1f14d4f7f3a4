"""Speed tasks: a fit looks at its validation metric every few steps, stops at the target, and counts its steps.

The looks score in a forked RNG, so a fit trains exactly as one without them up to where it stops; a fit
that never reaches the target runs to its cap and is flagged; `bench converge` classifies a task from
its variants' runs; the leaderboard labels a speed verdict stable or censored.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.fit.loop import FitLoop
from bench.fit.train import fit
from bench.fit.tuning import optim_config
from bench.measure import converge
from bench.registry import tasks, variants
from bench_leaderboard import budget, tested
from bench_record import SCHEMA_VERSION, CellRecord
from bench_record.stats import metric_scale
from bench_tasks.base import LATER_DEFAULTS, REACHED_TARGET, STEPS_TO_TARGET, SpeedTarget, TaskConfig
from bench_tasks.synthetic import TARGET, cap_of
from tests.noisy import Noisy, Pairs

CONFIG = TaskConfig(d_model=2, n_layers=1, n_heads=1, batch_size=8, max_epochs=4)  # 8 batches an epoch: 32 steps


def _run(target: SpeedTarget | None, stop: bool = True) -> FitLoop:
    torch.manual_seed(0)
    loop = FitLoop(Noisy(), Pairs(8, 0), torch.device("cpu"))
    loop.fit(CONFIG, validate=False, target=target, stop_at_target=stop)
    return loop


def test_looks_do_not_change_the_training_and_an_unreached_target_runs_to_the_cap() -> None:
    plain, looked = _run(None), _run(SpeedTarget("score", math.inf, every=3))
    assert all(torch.equal(a, b) for a, b in zip(plain.module.parameters(), looked.module.parameters(), strict=True))
    assert looked.step == plain.step == 32
    assert [look["step"] for look in looked.looks] == [*range(3, 32, 3), 32]  # every 3 steps, and the last
    assert looked.speed_metrics() == {STEPS_TO_TARGET: 32.0, REACHED_TARGET: 0.0}  # censored at the cap
    assert plain.speed_metrics() == {} and plain.looks == []


def test_a_fit_stops_at_the_first_look_that_reaches_its_target() -> None:
    full = _run(SpeedTarget("score", math.inf, every=2))
    values = [look["val"] for look in full.looks]
    target = sorted(values)[len(values) // 2]  # reached part-way through the fit
    first = next(look["step"] for look in full.looks if look["val"] >= target)
    stopped = _run(SpeedTarget("score", target, every=2))
    assert 2 <= first < 32
    assert stopped.step == first and stopped.looks == full.looks[: len(stopped.looks)]
    assert stopped.speed_metrics() == {STEPS_TO_TARGET: float(first), REACHED_TARGET: 1.0}
    # a convergence run looks at the same steps but goes on to the cap
    kept = _run(SpeedTarget("score", target, every=2), stop=False)
    assert kept.step == 32 and kept.reached == first and kept.looks == full.looks


def test_a_target_on_a_metric_the_task_does_not_log_names_the_problem() -> None:
    with pytest.raises(RuntimeError, match="speed target reads val/accuracy"):
        _run(SpeedTarget("accuracy", 0.5, every=1))


def test_a_digit_task_fit_records_its_steps_to_target_as_its_primary_metric(tmp_path: Path) -> None:
    task = tasks().get("reverse")
    assert task.measures == "speed" and task.metric == STEPS_TO_TARGET and not task.higher_is_better
    config = dataclasses.replace(task.config("smoke"), max_epochs=2)
    target = task.speed_target(config)
    assert target is not None and target.target == TARGET
    result = fit(task, variants().get("qkv"), config, optim_config({"lr": 3e-3}), seed=0, data_dir=tmp_path)
    steps, reached = result.test[STEPS_TO_TARGET], result.test[REACHED_TARGET]
    assert "accuracy" in result.test and result.val[STEPS_TO_TARGET] == steps
    assert result.steps == steps <= cap_of(config)  # the fit ran exactly to where it counted its steps
    assert reached == 1.0 or steps == cap_of(config)
    assert [look["step"] for look in result.looks][-1] == steps


def test_steps_compare_as_ratios() -> None:
    assert metric_scale(STEPS_TO_TARGET, higher_is_better=False) == "log"


def _looks(values: list[float]) -> list[dict[str, Any]]:
    return [{"step": 10 * (i + 1), "val": v} for i, v in enumerate(values)]


def test_convergence_summaries_and_what_a_task_measures() -> None:
    fast = converge.summarize(_looks([0.5, 0.995, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]), 0.99)
    slow = converge.summarize(_looks([0.2, 0.5, 0.8, 0.9, 0.95, 0.985, 0.991, 0.99]), 0.99)
    assert fast["steps_to_target"] == 20 and slow["steps_to_target"] == 70
    assert fast["plateau"] == 1.0 and fast["plateau_reached"]
    speed = converge.classify({"a": fast, "b": slow}, 80)
    assert speed["measures"] == "speed" and speed["suggested_cap"] == math.ceil(70 * converge.CAP_MARGIN)
    low = converge.summarize(_looks([0.2, 0.5, 0.7, 0.8, 0.85, 0.85, 0.851, 0.85]), 0.99)
    assert low["steps_to_target"] is None and low["plateau_reached"]
    capacity = converge.classify({"a": fast, "b": low}, 80)
    assert capacity["measures"] == "capacity" and capacity["plateau_spread"] == pytest.approx(1 - 0.8505)
    rising = converge.summarize(_looks([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]), 0.99)
    assert not rising["plateau_reached"]
    assert converge.classify({"a": fast, "b": rising}, 80)["measures"] == "budget"


def _speed_record(
    steps: dict[int, float], cap: int = 100, task: str = "reverse", measures: str = "speed"
) -> CellRecord:
    """An ok record of a speed task (or, with `measures="budget"`, of one at its budget) whose seeds took `steps`."""
    target = {"metric": "accuracy", "target": TARGET, "every": 2, "cap": cap} if measures == "speed" else None
    return CellRecord.from_dict({
        "schema_version": SCHEMA_VERSION, "cell_id": task, "status": "ok",
        "variant": {"id": "qkv", "display_name": "QKV"},
        "task": {"id": task, "metric": STEPS_TO_TARGET, "higher_is_better": False, "measures": measures,
                 **({"speed_target": target} if target else {})},
        "summary": {"mean": 0.0, "ci95_low": 0.0, "ci95_high": 0.0, "n": len(steps)}, "costs": {}, "tuning": {},
        "seeds": list(steps),
        "per_seed": [{"seed": s, "test": {STEPS_TO_TARGET: v, REACHED_TARGET: float(v < cap)}}
                     for s, v in steps.items()],
    })  # fmt: skip


def test_a_speed_verdict_is_stable_unless_a_fit_is_censored_at_the_cap() -> None:
    qkv = _speed_record({0: 40, 1: 42, 2: 38})
    found = budget.verdict(_speed_record({0: 50, 1: 52, 2: 48}), qkv)
    assert found["label"] == budget.STABLE and "every fit of both reached" in found["text"]
    censored = budget.verdict(_speed_record({0: 50, 1: 100, 2: 48}), qkv)
    assert censored["label"] == budget.CENSORED and "seeds 1" in censored["text"]
    assert budget.censored_seeds(_speed_record({0: 100, 1: 20})) == [0]


def test_a_claim_says_how_it_reads_each_task() -> None:
    speed = {"qkv": _speed_record({0: 40, 1: 42})}
    at_budget = {"qkv": _speed_record({0: 40}, task="mnist", measures="budget")}
    cells = {"reverse": speed, "swap": speed, "mnist": at_budget}
    assert tested.read_as(cells, [("reverse", "tied-qkv", "qkv"), ("swap", "tied-qkv", "qkv")]) == tested.SPEED
    assert tested.read_as(cells, [("mnist", "tied-kv", "qkv")]) == tested.AT_BUDGET
    both = tested.read_as(cells, [("reverse", "a", "qkv"), ("mnist", "a", "qkv")])
    assert both == f"{tested.SPEED} on reverse; {tested.AT_BUDGET} on mnist"


def _speed_tasks() -> list[str]:
    return sorted(task.id for task in tasks() if task.measures == "speed")


@pytest.mark.parametrize("task_id", _speed_tasks())
def test_a_speed_task_rests_on_its_convergence_record(task_id: str) -> None:
    """Its record ran the task as it is now (version and settings, the run's length aside) on the tuning seed,
    found that every study variant reaches the target, and its cap is the one the record suggests."""
    task = tasks().get(task_id)
    record = converge.load(task_id)
    assert record is not None, f"no convergence record for {task_id}: run `bench converge --task {task_id} --steps 480`"
    config = task.config("default")
    stretched = ("max_steps", "max_epochs")
    assert record["task_version"] == task.version
    recorded = {**LATER_DEFAULTS, **record["config"]}  # a field added since, at its default, changes nothing
    assert {k: v for k, v in recorded.items() if k not in stretched} == {
        "type": type(config).__name__,
        **{k: v for k, v in dataclasses.asdict(config).items() if k not in stretched},
    }
    assert record["run"]["seed"] == converge.TUNING_SEED and record["run"]["split"] == "validation"
    assert set(record["variants"]) == set(converge.STUDY_VARIANTS)
    assert record["verdict"]["measures"] == "speed"
    assert cap_of(config) == record["verdict"]["suggested_cap"]
    assert record["target"]["target"] == task.speed_target(config).target
