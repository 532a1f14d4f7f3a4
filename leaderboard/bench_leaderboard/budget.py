"""Verdicts against budget: each comparison read along the fits' curves, and labelled stable or moving.

Every final fit records its test metric at log-spaced steps (T/8, T/4, T/2 and T of its T steps). The
paired difference of two variants at each of those steps, over the seeds both ran, shows whether a
verdict is about what a design can learn or about how fast it learns: a verdict is **stable** when the
decision (better, worse, or no significant difference, by the paired t-test on the metric's test scale
at 5%) is the same at half and at full budget, and **moving** otherwise, **closing** when the gap shrank
from half to full budget and **widening** when it grew. A point mid-fit is read from the same fit (its
learning rate not yet decayed), not from a shorter fit: it shows the direction, not a shorter budget's
exact result.

A task that measures learning speed has no budget to read along: its verdict is the steps each fit took
to reach the task's target, and a fit stops there. Its verdict is **stable** when every fit of both
variants reached the target, and **censored** when one stopped at the cap instead (its steps are a lower
bound, so the comparison is too): a longer cap is what it needs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from bench_record import CellRecord
from bench_record.compare import paired_with
from bench_record.stats import Paired

STABLE, MOVING, NO_CURVE, CENSORED = "stable", "moving", "no curve", "censored"
BETTER, WORSE, SAME = "better", "worse", "no significant difference"
ALPHA = 0.05
NOTE = (
    "Budget: each fit records its test metric at T/8, T/4, T/2 and T of its T steps. A verdict against QKV is "
    "stable when its decision (better, worse, or no significant difference: paired t-test on the test scale at 5%) "
    "is the same at half and at full budget, moving otherwise (closing: the gap shrank from half to full budget; "
    "widening: it grew). A speed task's verdict (steps to its target) is stable when every fit of both variants "
    "reached the target, censored when one stopped at the cap. A claim is held or not held only where the verdicts "
    "it rests on are stable."
)


def curve_values(record: CellRecord) -> dict[int, dict[int, float]]:
    """step -> seed -> the primary test metric at that step of the seed's fit; {} for a record without curves."""
    metric = record.task.metric
    out: dict[int, dict[int, float]] = defaultdict(dict)
    for fit in record.per_seed or ():
        for point in fit.curve or ():
            test = point.get("test")
            value = test.get(metric) if isinstance(test, Mapping) else None
            step = point.get("step")
            if isinstance(step, int) and isinstance(value, int | float) and math.isfinite(value):
                out[step][fit.seed] = float(value)
    return dict(out)


def _decision(comparison: Paired, higher_is_better: bool) -> str:
    if comparison.p_value is None or comparison.p_value >= ALPHA:
        return SAME
    return BETTER if (comparison.scale_diff > 0) == higher_is_better else WORSE


def points(a: CellRecord, b: CellRecord) -> list[dict[str, Any]]:
    """a - b at every step both curves have, over the seeds both ran: {step, fraction, n, mean_diff, ci95_low,
    ci95_high, p_value, decision}; [] when the records have no common curve."""
    metric, higher = a.task.metric, a.task.higher_is_better
    mine, theirs = curve_values(a), curve_values(b)
    steps = sorted(set(mine) & set(theirs))
    if not steps:
        return []
    out = []
    for step in steps:
        c = paired_with(mine[step], theirs[step], metric, higher)
        if c is None:
            continue
        out.append({"step": step, "fraction": step / steps[-1], "n": c.n, "mean_diff": c.mean_diff,
                    "ci95_low": c.ci95_low, "ci95_high": c.ci95_high, "p_value": c.p_value,
                    "decision": _decision(c, higher)})  # fmt: skip
    return out


def stability(curve: list[dict[str, Any]]) -> dict[str, Any]:
    """The verdict's label from `points`: {label, direction, half, full, text}."""
    if len(curve) < 2 or curve[-1]["fraction"] != 1.0:
        return {"label": NO_CURVE, "direction": None, "half": None, "full": None,
                "text": "no curve recorded (a fit from before curves)"}  # fmt: skip
    full = curve[-1]
    half = min(curve[:-1], key=lambda p: abs(p["fraction"] - 0.5))
    label = STABLE if half["decision"] == full["decision"] else MOVING
    direction = None
    if label == MOVING:
        direction = "closing" if abs(full["mean_diff"]) < abs(half["mean_diff"]) else "widening"
    text = (f"{half['decision']} at step {half['step']} ({half['mean_diff']:+.4g}), {full['decision']} at step "
            f"{full['step']} ({full['mean_diff']:+.4g})")  # fmt: skip
    return {"label": label, "direction": direction, "half": half["decision"], "full": full["decision"], "text": text}


def censored_seeds(record: CellRecord) -> list[int]:
    """The seeds of a speed task's record whose fit stopped at the cap without reaching the target."""
    return [fit.seed for fit in record.per_seed or () if fit.test.get("reached_target") == 0.0]


def _speed(a: CellRecord, b: CellRecord) -> dict[str, Any]:
    cap = a.task.speed_target.cap if a.task.speed_target else None
    mine, theirs = censored_seeds(a), censored_seeds(b)
    label = CENSORED if mine or theirs else STABLE
    named = (("this", mine), ("QKV", theirs))
    parts = [f"{name}: seeds {', '.join(map(str, seeds))}" for name, seeds in named if seeds]
    where = f"{cap} steps" if cap else "the fit's length"
    text = (f"fits stopped at the cap ({where}) without reaching the target, {'; '.join(parts)}" if parts
            else "every fit of both reached the target before the cap")  # fmt: skip
    return {"points": [], "label": label, "direction": None, "half": None, "full": None, "text": text}


def verdict(a: CellRecord, b: CellRecord) -> dict[str, Any]:
    """a against b along the budget: {points, label, direction, half, full, text}."""
    if a.task.speed_target is not None:
        return _speed(a, b)
    curve = points(a, b)
    return {"points": curve, **stability(curve)}


def label_text(found: Mapping[str, Any]) -> str:
    """ "stable", "moving (closing)", "no curve": the label as the page prints it."""
    if found["label"] == MOVING and found.get("direction"):
        return f"{MOVING} ({found['direction']})"
    return str(found["label"])
