"""A variant's gap to QKV on the tuning seed's validation split: at QKV's best settings, and tuned.

Every variant of a task gets the same Optuna candidates in the same order: trial 0 the task's defaults,
then a TPE sampler seeded by the task and the number of finished trials, whose first 5 trials are random
draws and so identical across variants (the committed records agree: trials 0-4 carry the same settings
in every cell of a task; trial 5, the first drawn from the trials' values, differs in a few). QKV's best
trial is therefore usually one of the variant's own trials, and the untuned gap (the variant at QKV's
best settings against QKV there) costs no fit. The trial is found by its settings, not its number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

from bench_record.schema import Trial, Tuning

#: relative tolerance of two settings being the same candidate (the records round-trip floats through JSON)
REL_TOL = 1e-9
NOT_AMONG = "QKV's best was not among its trials"
NOT_RECORDED = "QKV's best trial is not recorded"


def _same(a: Any, b: Any) -> bool:
    numbers = all(isinstance(x, Real) and not isinstance(x, bool) for x in (a, b))
    return math.isclose(float(a), float(b), rel_tol=REL_TOL) if numbers else bool(a == b)


def same_settings(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two trials' settings are the same candidate (same names, values equal within `REL_TOL`)."""
    return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)


def best_trial(tuning: Tuning) -> Trial | None:
    """The finished trial that ran the study's best settings (`best_params` also holds the fixed ones, so
    each trial is compared on its own searched names); the one that scored `best_value` if several did."""
    best = tuning.best_params or {}
    found = [t for t in tuning.trials or () if t.state == "complete" and t.params and t.value is not None
             and set(t.params) <= set(best) and same_settings(t.params, {k: best[k] for k in t.params})]  # fmt: skip
    at_best = [t for t in found if tuning.best_value is not None and _same(t.value, tuning.best_value)]
    return next(iter(at_best or found), None)


def _untuned(tuning: Tuning, base: Tuning) -> dict[str, Any]:
    """The variant at QKV's best settings: its value's gap to QKV's best, or why there is none."""
    qkv_best = best_trial(base)
    if qkv_best is None or qkv_best.params is None or qkv_best.value is None:
        return {"untuned": None, "untuned_trial": None, "untuned_note": NOT_RECORDED}
    mine = next((t for t in tuning.trials or () if t.params and same_settings(t.params, qkv_best.params)), None)
    if mine is None:
        return {"untuned": None, "untuned_trial": None, "untuned_note": NOT_AMONG}
    if mine.state == "complete" and mine.value is not None:
        return {"untuned": mine.value - qkv_best.value, "untuned_trial": mine.number, "untuned_note": None}
    if mine.state == "pruned":
        of = f" of {mine.fit_steps}" if mine.fit_steps else ""
        note = f"pruned at step {mine.steps}{of}: lost to the variant's own trials"
    else:
        note = f"{mine.state or 'unfinished'}: not measured"
    return {"untuned": None, "untuned_trial": mine.number, "untuned_note": note}


def tuning_gaps(tuning: Tuning | None, base: Tuning | None) -> dict[str, Any] | None:
    """The variant's gap to QKV on the tuning seed's validation split (variant minus QKV, in the metric's
    units): `tuned` each at its own best trial; `untuned` the variant at QKV's best settings, with
    `untuned_trial` the variant's trial that ran them, or `untuned_note` saying why it has no value.

    None without both studies' best values, or when the variant's settings came from another cell's study
    (`settings_of`: that cell's row shows the gap).
    """
    if tuning is None or base is None or tuning.settings_of or tuning.best_value is None or base.best_value is None:
        return None
    return {"tuned": tuning.best_value - base.best_value, **_untuned(tuning, base)}
