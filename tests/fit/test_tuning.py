"""Tuning: the same candidates for every variant of a task, pruning that stops hopeless trials early (by halving
at T/8, T/4, T/2 for a budget task, at the best trial's steps for a speed task), and the cost it records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

from bench.fit.loop import FitLoop
from bench.fit.tuning import (
    RUNG_EIGHTHS,
    SHARED_SPACE,
    RungPruning,
    SpeedPruning,
    open_study,
    pruning,
    trials_record,
    tune,
)
from bench.plan.suites import default, plus_ablation, smoke
from bench.run.pipeline import RunOptions, run
from bench_tasks.base import SpeedTarget, TaskConfig
from tests.noisy import Noisy, SteepPairs

CONFIG = TaskConfig(d_model=2, n_layers=1, n_heads=1, batch_size=8, max_epochs=4)  # 8 batches an epoch: 32 steps


def _fit(lr: float, hooks: list[Any] = (), target: SpeedTarget | None = None) -> FitLoop:  # type: ignore[assignment]
    torch.manual_seed(0)
    loop = FitLoop(Noisy(lr), SteepPairs(8, 0), torch.device("cpu"), hooks=hooks)
    loop.fit(CONFIG, validate=True, target=target)
    return loop


def _study(tmp_path: Path, higher_is_better: bool) -> optuna.Study:
    return open_study("c", f"sqlite:///{tmp_path / 'optuna.db'}", higher_is_better, sampler_key="t:default")


def test_rung_looks_leave_the_fit_unchanged() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    watched = _fit(1e-2, [RungPruning(study.ask(), "score")])
    plain = _fit(1e-2)
    assert watched.step == plain.step == 32
    for a, b in zip(watched.module.net.parameters(), plain.module.net.parameters(), strict=True):
        assert torch.equal(a, b)  # the looks at T/8, T/4, T/2 scored in a forked RNG
    assert watched.val == plain.val


def test_halving_stops_a_hopeless_trial_early_and_the_cost_is_recorded(tmp_path: Path) -> None:
    study = _study(tmp_path, higher_is_better=True)
    good = study.ask()
    hook = pruning(good, "score", speed=False)
    loop = _fit(5e-2, [hook])
    good.set_user_attr("steps", loop.step)
    study.tell(good, loop.val["score"])
    assert sorted(study.trials[0].intermediate_values) == [1, 2, 4]  # reported at T/8, T/4, T/2 (in eighths)

    hopeless = study.ask()
    with pytest.raises(optuna.TrialPruned, match="at step 4 of 32"):
        _fit(1e-6, [pruning(hopeless, "score", speed=False)])  # stopped at its first rung, T/8
    study.tell(hopeless, state=TrialState.PRUNED)

    record = trials_record(study)
    assert [(t["state"], t["steps"], t["fit_steps"]) for t in record["trials"]] == [
        ("complete", 32, 32), ("pruned", 4, 32)
    ]  # fmt: skip
    assert record["trials"][1]["value"] < record["trials"][0]["value"]  # its score at T/8, worse than the first's
    assert record["steps_trained"] == 36 and record["full_fit_steps"] == 32 and record["cost_full_fits"] == 1.125


def test_a_speed_trial_stops_at_the_best_trials_steps(tmp_path: Path) -> None:
    study = _study(tmp_path, higher_is_better=False)  # steps to the target: lower is better
    best = study.ask()
    study.tell(best, 6.0)  # the best finished trial reached the target at step 6
    never = SpeedTarget("score", target=1e9, every=2)

    slow = study.ask()
    hook = pruning(slow, "steps_to_target", speed=True)
    assert isinstance(hook, SpeedPruning) and hook.best == 6.0
    with pytest.raises(optuna.TrialPruned, match="at step 6 of 32"):
        _fit(1e-2, [hook], target=never)
    study.tell(slow, state=TrialState.PRUNED)
    pruned = trials_record(study)["trials"][1]
    assert (pruned["state"], pruned["steps"], pruned["value"]) == ("pruned", 6, 6.0)  # a lower bound: > 6 steps

    fast = study.ask()  # one that reaches the target by the best's steps is not stopped: it may tie or win
    loop = _fit(1e-2, [pruning(fast, "steps_to_target", speed=True)], target=SpeedTarget("score", -1e9, every=2))
    assert loop.reached == 2


def test_a_speed_trial_is_never_stopped_before_any_trial_finished_nor_at_its_cap(tmp_path: Path) -> None:
    study = _study(tmp_path, higher_is_better=False)
    assert pruning(study.ask(), "steps_to_target", speed=True).best is None  # type: ignore[attr-defined]
    trial = study.ask()
    study.tell(study.ask(), 32.0)  # the best so far never reached the target: it ran to the cap
    loop = _fit(1e-2, [SpeedPruning(trial, 32.0)], target=SpeedTarget("score", 1e9, every=2))
    assert loop.step == 32 and loop.reached is None  # it ends with its censored value, a tie at worst


def test_the_cpu_suites_tune_each_cell_with_two_settings() -> None:
    assert default().trials >= 6 and plus_ablation().trials >= 6
    assert set(SHARED_SPACE) == {"lr", "warmup_frac"} and SHARED_SPACE["lr"][0] == "log"
    assert SHARED_SPACE["warmup_frac"][2] < RUNG_EIGHTHS[0] / 8  # warmup over by the first rung: none judged mid-warmup


def test_every_variant_of_a_task_is_offered_the_same_candidates(tmp_path: Path) -> None:
    """Two cells of one task whose trials score differently (one is pruned often) see the same candidates for
    the trials before TPE starts, and the same budget."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    seen: dict[str, list[dict[str, float]]] = {}
    for cell, prunes in (("a", False), ("b", True)):
        study = open_study(cell, storage, True, sampler_key="reverse:default")
        calls = seen.setdefault(cell, [])

        def objective(
            trial: optuna.Trial, params: dict[str, float], calls: list = calls, prunes: bool = prunes
        ) -> float:
            calls.append(params)
            if prunes and len(calls) % 2 == 0:
                raise optuna.TrialPruned
            return -abs(params["lr"] - 1e-3) * (2 if prunes else 1)

        tune(study, 6, SHARED_SPACE, objective)
    assert len(seen["a"]) == len(seen["b"]) == 6
    assert seen["a"][:5] == seen["b"][:5]  # the defaults, then the random startup draws, in the same order


def test_a_tuned_cell_records_what_was_tried_and_what_it_cost(tmp_path: Path) -> None:
    """The whole path: two variants of a speed task, tuned with pruning; each record says what was tried."""
    suite = smoke().override(tasks=("reverse",), variants=("qkv", "tied-kv"), trials=4, seeds=(0,), max_steps=12)
    options = RunOptions(results=tmp_path / "results", data_dir=tmp_path / "data", tracking_uri="none", jobs=1)
    assert run(suite, options) == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "results/cells").glob("*.json")]
    assert len(records) == 2
    for record in records:
        tuning = record["tuning"]
        trials = tuning["trials"]
        assert len(trials) == tuning["trials_finished"] == 4
        assert trials[0]["params"] == {"lr": tuning["defaults"]["lr"], "warmup_frac": tuning["defaults"]["warmup_frac"]}
        assert all(t["state"] in ("complete", "pruned") and 1 <= t["steps"] <= t["fit_steps"] for t in trials)
        assert tuning["steps_trained"] == sum(t["steps"] for t in trials)
        assert tuning["cost_full_fits"] == round(tuning["steps_trained"] / tuning["full_fit_steps"], 3)
        assert set(tuning["best_params"]) == {"lr", "warmup_frac", "weight_decay"}  # weight decay: its default
        assert record["per_seed"][0]["params"] == tuning["best_params"]
    tried = [[t["params"] for t in record["tuning"]["trials"]] for record in records]
    assert tried[0] == tried[1]  # every variant offered the same candidates


def test_a_tuning_trial_trains_the_horizons_share_of_each_epoch() -> None:
    from bench.fit.tuning import tuning_config
    from bench_tasks.base import TaskConfig

    config = TaskConfig(d_model=8, n_layers=1, n_heads=1, batch_size=4, max_epochs=3, limit_train_batches=1600)
    half = tuning_config(config, 0.5)
    assert (half.limit_train_batches, half.max_epochs, half.max_steps) == (800, 3, -1)  # the epochs stay
    fraction = tuning_config(dataclasses.replace(config, limit_train_batches=1.0, max_steps=90), 0.5)
    assert (fraction.limit_train_batches, fraction.max_steps) == (0.5, 45)
    assert tuning_config(config, 1.0) is config
    assert tuning_config(dataclasses.replace(config, limit_train_batches=1), 0.5).limit_train_batches == 1


def test_the_cost_counts_full_fits_of_the_cell_not_of_the_shorter_trial(tmp_path: Path) -> None:
    study = _study(tmp_path, higher_is_better=True)
    for steps in (32, 4):  # a trial's fit of 32 steps, at half the cell's 64; one stopped at its first rung
        trial = study.ask()
        trial.set_user_attr("fit_steps", 32)
        trial.set_user_attr("steps", steps)
        study.tell(trial, 0.5)
    record = trials_record(study, horizon=0.5)
    assert record["full_fit_steps"] == 64 and record["steps_trained"] == 36 and record["cost_full_fits"] == 0.562
