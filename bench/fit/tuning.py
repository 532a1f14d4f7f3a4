"""One Optuna study per cell: a seeded TPE sampler, pruning, and a search space shared by every variant of
a task (so each variant gets the same budget and the same candidates). Tuning sees only the validation split.

A cell's tuning costs at most about two of its full fits (the record's `cost_full_fits` measures it):
- a task that measures its metric at the budget: each trial trains `TUNING_HORIZON` (half) of the cell's steps,
  its schedule spanning them (`tuning_config`: each epoch's batches cut, the same epochs), and successive halving
  (Optuna's `SuccessiveHalvingPruner`, reduction factor 2) on the validation metric at the points T/8, T/4 and T/2
  of that fit of T steps (`RungPruning`, scored mid-fit in a forked RNG: training is unchanged) stops the worse
  half of each rung. Halving alone let every trial that beat the ones before it run in full (CIFAR-100: 2.9-3.4
  fits with 6 trials); the half horizon halves that, at the price of choosing settings at half the budget (the
  usual direction of that bias: a shorter run favours a higher learning rate);
- a speed task (steps to a target): a trial still short of the target at the best finished trial's
  steps cannot beat it, so it stops there (`SpeedPruning`): exact, it never stops a possible winner.

Storage: SQLite (the default, one machine) or a server database (PostgreSQL, MySQL) that many
processes and machines share. On a server database each process keeps a one-connection pool, and a
running trial sends heartbeats (Optuna records them only inside `study.optimize`; we ask and tell, so
we send them ourselves): a trial silent for the grace period (`heartbeat_seconds`) was cut short, and
is failed and queued again with its parameters, while a live trial of another process is left alone.
On SQLite the cell's claim (`ResultStore.claim`) rules out a live trial elsewhere, so any trial left
running is cut short.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, cast

from bench.fit.loop import CURVE_POINTS, FitHooks

if TYPE_CHECKING:
    import optuna

    from bench.fit.loop import FitLoop, Plan
    from bench_tasks.base import OptimConfig, Task, TaskConfig

#: name -> (kind, low, high); shared by every task, which may add its own through `Task.search_space`.
#: Two settings, so a handful of trials covers them: the learning rate, and the warmup that decides whether a
#: high one is stable and (speed tasks) how soon learning starts; warmup ends by T/10, before the first rung
#: of halving (T/8), so no trial is judged mid-warmup. Weight decay stays at its default: our fits are short
#: and underfit rather than overfit, and at the default it shrinks weights by lr x wd x steps, under 0.1%
#: over the longest default-scale fit (MNIST, 1,752 steps), so a trial spent on it is a trial lost.
SHARED_SPACE: dict[str, tuple[str, float, float]] = {
    "lr": ("log", 3e-4, 1e-2),
    "warmup_frac": ("float", 0.0, 0.1),
}
#: bump when the sampling scheme changes (it is part of every cell id)
SAMPLER_VERSION = "tpe-task-seeded-4"  # 2: reseeded per finished trial (resume-fair); 3: lr + warmup, halving;
# 4: trials of a task measured at its budget train half the cell's steps (`TUNING_HORIZON`)
#: the seed of every tuning fit (data order and initial values): disjoint from the test seeds, so a
#: final fit never repeats a tuning fit, and the same for every variant of a task
TUNING_SEED = 1_000_000
#: the first trial of every study: settings that train every built-in task reasonably
DEFAULT_PARAMS: dict[str, float] = {"lr": 3e-3, "weight_decay": 1e-4, "warmup_frac": 0.05}
#: successive halving's reduction factor: at each rung a trial goes on only when it is in the better half
HALVING = 2
#: the rungs of successive halving, as eighths of a fit: T/8, T/4, T/2 (the curve's points before the end)
RUNG_EIGHTHS = (1, 2, 4)
#: the share of a cell's training steps a tuning trial trains, for a task measured at its budget (a speed task's
#: trials train to its target or cap: `SpeedPruning` stops them)
TUNING_HORIZON = 0.5


#: seconds between a running trial's heartbeats on a server database, and how long one may stay silent
#: before it counts as cut short (`heartbeat_seconds`: $BENCH_HEARTBEAT_S, $BENCH_GRACE_S override them)
HEARTBEAT_S, GRACE_S = 20, 120


def _seconds(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"${name} {value!r}: give a positive whole number of seconds (default {default}), or unset it")
    return int(value)


def heartbeat_seconds() -> tuple[int, int]:
    """The heartbeat interval and grace period: shorter on a cluster that loses nodes often, so a trial
    cut short there is run again sooner (the grace must stay well above the interval)."""
    interval, grace = _seconds("BENCH_HEARTBEAT_S", HEARTBEAT_S), _seconds("BENCH_GRACE_S", GRACE_S)
    if grace <= interval:
        raise ValueError(f"$BENCH_GRACE_S ({grace}) must exceed $BENCH_HEARTBEAT_S ({interval}): a live trial "
                         "would be taken for a silent one; e.g. BENCH_HEARTBEAT_S=5 BENCH_GRACE_S=30")  # fmt: skip
    return interval, grace


#: per process: one connection kept, two more for a moment (the heartbeat thread; Optuna nests a
#: session in places), each checked before use (servers drop idle ones): thirty workers stay within
#: PostgreSQL's default of 100 connections
POOL = {"pool_size": 1, "max_overflow": 2, "pool_pre_ping": True, "pool_recycle": 600}


def tuning_config(config: TaskConfig, horizon: float = TUNING_HORIZON) -> TaskConfig:
    """`config` as a tuning trial trains it: each epoch's batches (and a step bound, if any) cut to `horizon` of
    them, the epochs the same, so the schedule spans the shorter run and the validation after each epoch stays."""
    import dataclasses

    if horizon == 1.0:
        return config
    limit = config.limit_train_batches
    whole = isinstance(limit, int) and not isinstance(limit, bool)
    batches: int | float = max(1, round(limit * horizon)) if whole else float(limit) * horizon
    steps = max(1, round(config.max_steps * horizon)) if config.max_steps > 0 else config.max_steps
    return dataclasses.replace(config, limit_train_batches=batches, max_steps=steps)


def default_params(task: Task) -> dict[str, float]:
    """Trial 0 of every study of `task`, and the settings used with no tuning: shared defaults + the task's."""
    return {**DEFAULT_PARAMS, **task.optim_defaults()}


def search_space(task: Task) -> dict[str, tuple[str, float, float]]:
    """The shared space plus what the task adds (a task may not redefine a shared name)."""
    extra = task.search_space()
    clash = set(extra) & set(SHARED_SPACE)
    if clash:
        raise ValueError(f"task {task.id!r} redefines shared search-space names {sorted(clash)}")
    return {**SHARED_SPACE, **extra}


def suggest(trial: optuna.Trial, space: dict[str, tuple[str, float, float]]) -> dict[str, float]:
    params = {}
    for name, (kind, low, high) in space.items():
        if kind == "int":
            params[name] = float(trial.suggest_int(name, int(low), int(high)))
        else:
            params[name] = trial.suggest_float(name, low, high, log=kind == "log")
    return params


def optim_config(params: dict[str, Any]) -> OptimConfig:
    """The optimiser settings of a trial's (or the best) parameters; unknown names are the task's own."""
    from bench_tasks.base import OptimConfig

    fields = {k: float(v) for k, v in params.items() if k in OptimConfig.__dataclass_fields__}
    return OptimConfig(**fields)  # type: ignore[arg-type]


def open_study(
    cell_id: str, storage: str, higher_is_better: bool, sampler_key: str = "", defaults: dict[str, float] | None = None
) -> optuna.Study:
    """The cell's study, created or resumed; trials left RUNNING by a killed run are marked failed.

    The first trial is `defaults` (`DEFAULT_PARAMS` when None); the sampler is seeded by
    `sampler_key` (the task and scale), not by the cell, so every variant of a task is offered the
    same candidates in the same order: with a small budget, a variant cannot win or lose by a lucky
    draw of its learning rate.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=f"cell-{cell_id}",
        storage=optuna_storage(storage),
        direction="maximize" if higher_is_better else "minimize",
        load_if_exists=True,
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=HALVING),
    )
    # a trial cut short (a killed run) is failed and queued again with the same parameters, so the
    # study's candidates stay the same; with heartbeats only a silent one is, never a live one elsewhere
    if _heartbeat_storage(study):
        with _heartbeats_quietly():
            optuna.storages.fail_stale_trials(study)  # its callback queues the trial again
    else:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
            if trial.params:
                study.enqueue_trial(dict(trial.params), skip_if_exists=False)
    wanted = defaults or DEFAULT_PARAMS
    kept = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING, TrialState.RUNNING)  # running: live
    # a trial holds only the searched names: the defaults trial is one whose every parameter is the default
    if not any(t.params and t.params.items() <= wanted.items() for t in study.get_trials(deepcopy=False, states=kept)):
        study.enqueue_trial(wanted, skip_if_exists=False)  # the default-settings trial always runs
    study.set_user_attr("sampler_key", sampler_key or cell_id)
    reseed(study, finished_trials(study))
    return study


@contextmanager
def _heartbeats_quietly() -> Iterator[None]:
    """Optuna marks heartbeats experimental and warns when a study that keeps them is asked, not optimised:
    both are how bench means to use them, so neither is news to the user."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


@functools.cache
def optuna_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage at `url`, made once per process (making one costs about 45 ms): on SQLite as Optuna
    makes it; on a server database with a small connection pool and heartbeats (a silent trial is
    retried with its parameters)."""
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, get_storage

    if url.startswith("sqlite"):
        return get_storage(url)
    pool = {**POOL, "connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else POOL
    interval, grace = heartbeat_seconds()
    with _heartbeats_quietly():
        return get_storage(
            RDBStorage(
                url,
                engine_kwargs=pool,
                heartbeat_interval=interval,
                grace_period=grace,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(),
            )
        )


class _Heartbeats(Protocol):
    def record_heartbeat(self, trial_id: int) -> None: ...


def _heartbeat_storage(study: optuna.Study) -> _Heartbeats | None:
    """The study's storage when it keeps heartbeats (a server database), else None."""
    storage = study._storage  # Optuna exposes a study's storage only so (a cache around our RDBStorage)
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    return cast(_Heartbeats, storage) if interval else None


@contextmanager
def heartbeats(trial: optuna.Trial) -> Iterator[None]:
    """While the block runs, record `trial`'s heartbeat every interval (when its storage keeps them)."""
    storage = _heartbeat_storage(trial.study)
    if storage is None:
        yield
        return
    trial_id, stop = trial._trial_id, threading.Event()  # the id Optuna's own optimize loop beats for
    interval = heartbeat_seconds()[0]

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a lost connection: the next beat retries
                storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def reseed(study: optuna.Study, k: int) -> None:
    """The sampler for the study's k-th finished trial, seeded by (task, k) alone: every variant of a
    task, resumed or not, is offered the same random candidates in the same order."""
    import optuna

    key = study.user_attrs.get("sampler_key", study.study_name)
    seed = int(hashlib.sha256(f"{key}:{k}".encode()).hexdigest()[:8], 16)
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def finished_trials(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _running_trials(study: optuna.Study) -> int:
    """Trials running elsewhere now (a shared server database), after failing the silent ones."""
    import optuna
    from optuna.trial import TrialState

    if not _heartbeat_storage(study):
        return 0
    with _heartbeats_quietly():
        optuna.storages.fail_stale_trials(study)
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def tune(
    study: optuna.Study,
    n_trials: int,
    space: dict[str, tuple[str, float, float]],
    objective: Callable[[optuna.Trial, dict[str, float]], float],
    on_trial_end: Callable[[], None] | None = None,
    defaults: dict[str, float] | None = None,
) -> dict[str, float]:
    """Run trials until `n_trials` have finished (completed or pruned); return the best parameters.

    The budget counts trials running elsewhere on a shared server database, so a cell never gets more
    than `n_trials` whichever processes run it. Falls back to `defaults` (the task's default optimiser
    settings) when no trial completed.
    """
    import optuna

    while (finished := finished_trials(study)) < n_trials:
        if finished + _running_trials(study) >= n_trials:  # the rest of the budget runs elsewhere: wait
            time.sleep(heartbeat_seconds()[0])  # for it to finish, or to go silent and be queued again for us
            continue
        reseed(study, finished)
        with _heartbeats_quietly():
            trial = study.ask()
        params = suggest(trial, space)
        try:
            with heartbeats(trial):
                value = objective(trial, params)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except Exception:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        else:
            study.tell(trial, value)
        if on_trial_end:
            on_trial_end()
    try:
        return dict(study.best_params)
    except ValueError:  # no completed trial (or no tuning): the task's defaults
        return dict(defaults or DEFAULT_PARAMS)


class _TrialHooks(FitHooks):
    """What both prunings share: the fit's loop and length, and the steps a stopped trial trained (user attrs
    `steps` and `fit_steps`, read by `trials_record`)."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.loop: FitLoop | None = None
        self.fit_steps = 0  # the fit's steps (its plan: T; a speed task's cap)

    def fit_started(self, loop: FitLoop, plan: Plan) -> None:
        self.loop, self.fit_steps = loop, plan.steps
        self.trial.set_user_attr("fit_steps", plan.steps)

    def _prune(self, step: int, why: str) -> NoReturn:
        import optuna

        self.trial.set_user_attr("steps", step)
        raise optuna.TrialPruned(f"Trial was pruned at step {step} of {self.fit_steps}: {why}.")


class RungPruning(_TrialHooks):
    """Successive halving inside a trial's fit: the validation `metric` at T/8, T/4 and T/2 reported to the
    study's pruner (step = eighths of the fit), the fit stopped when it falls in the worse half of its rung."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        super().__init__(trial)
        self.metric = metric
        self.rungs: dict[int, int] = {}

    def fit_started(self, loop: FitLoop, plan: Plan) -> None:
        super().fit_started(loop, plan)
        eighths = 2 ** (CURVE_POINTS - 1)
        self.rungs = {max(1, round(plan.steps * k / eighths)): k for k in RUNG_EIGHTHS}
        self.rungs.pop(plan.steps, None)  # a fit too short for a rung before its end: its end decides

    def batch_ended(self, step: int) -> None:
        if step not in self.rungs or self.loop is None:
            return
        value = self.loop.peek().get(self.metric)
        if value is None:  # the task logged no such metric; `_tune` names the problem after the fit
            return
        self.trial.report(value, step=self.rungs[step])
        if self.trial.should_prune():
            self._prune(step, f"val/{self.metric} {value:.4g} in the worse half at {self.rungs[step]}/8 of the fit")


class SpeedPruning(_TrialHooks):
    """A speed task's trial stopped at `best` steps (the best finished trial's steps to the target) when it has
    not reached the target by then: its steps would exceed the best's, so it cannot win. It is told pruned
    with that lower bound as its last intermediate value (it is worse than the best, by an unknown amount)."""

    def __init__(self, trial: optuna.Trial, best: float | None) -> None:
        super().__init__(trial)
        self.best = best

    def batch_ended(self, step: int) -> None:
        if self.best is None or step < self.best or step >= self.fit_steps or self.loop is None:
            return  # at its last step a fit ends anyway, with its censored value: a tie at worst
        if self.loop.reached is not None:
            return
        self.trial.report(float(step), step=step)
        self._prune(step, f"short of the target at the best trial's {self.best:.0f} steps")


def pruning(trial: optuna.Trial, metric: str, speed: bool) -> FitHooks:
    """The hook that prunes `trial`'s fit: at the best finished trial's steps for a speed task, else by halving."""
    if speed:
        return SpeedPruning(trial, best_value(trial.study))
    return RungPruning(trial, metric)


def best_value(study: optuna.Study) -> float | None:
    """The best completed trial's value; None before any trial completed."""
    try:
        return float(study.best_value)
    except ValueError:
        return None


def trials_record(study: optuna.Study, horizon: float = 1.0) -> dict[str, Any]:
    """What was tried: each finished trial (numbered in the order trials finished, as the sampler counts them: a
    trial cut short and run again keeps its place, so a resumed study records what an uncut one does; 0 is the
    task's defaults) with its parameters, state, value and steps trained, and the measured cost: steps
    trained by all trials over the steps of one full fit of the cell (a trial's fit over `horizon`). A pruned
    trial's value is the last one it reported (the validation metric where it stopped; for a speed task the
    steps it stopped at, a lower bound of its steps to the target), None for one that diverged."""
    from optuna.trial import TrialState

    trials: list[dict[str, Any]] = []
    steps: list[int | None] = []
    fit_steps: list[int] = []
    for number, t in enumerate(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))):
        reported = t.intermediate_values
        value = t.value if t.state == TrialState.COMPLETE else reported[max(reported)] if reported else None
        steps.append(t.user_attrs.get("steps"))
        fit_steps += [t.user_attrs["fit_steps"]] if "fit_steps" in t.user_attrs else []
        trials.append({"number": number, "params": dict(t.params), "state": t.state.name.lower(), "value": value,
                       "steps": steps[-1], "fit_steps": t.user_attrs.get("fit_steps")})  # fmt: skip
    full = round(max(fit_steps) / horizon) if fit_steps else None
    trained = sum(s for s in steps if s is not None) if steps and None not in steps else None
    cost = round(trained / full, 3) if trained is not None and full else None
    return {"trials": trials, "steps_trained": trained, "full_fit_steps": full, "cost_full_fits": cost}
