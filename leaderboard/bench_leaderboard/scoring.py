"""The board's statistics: metric-aware intervals, paired tests with BH stars, tie-aware ranks, aggregates.

The numbers come from `bench.stats`; this module only maps rows (see `model.make_row`) onto them.
Each row carries `seed_values` (seed -> test metric); rows from older result files without per-seed
values keep the interval their file recorded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bench import stats

FDR = 0.05
INTERVAL_NOTE = (
    "Per-cell 95% intervals: Student t over seeds on the logit scale for accuracy and AUROC (values clamped to "
    f"[{stats.CLAMP}, {1 - stats.CLAMP}]) and on log(perplexity - 1) for perplexity, mapped back, so every interval "
    "stays inside the metric's range. Differences with QKV: paired t-test over shared seeds on the same transformed "
    "scale (log odds ratio; log perplexity ratio), shown on the natural scale with a paired t interval."
)
STAR_NOTE = (
    f"* = the paired difference with QKV survives Benjamini-Hochberg at a false discovery rate of {FDR:.0%} across all "
    "comparisons of the ranked tables (q-value in the tooltip)."
)
RANK_NOTE = (
    "Rank = 1 + the number of variants whose 95% interval lies wholly on the better side of this one's, so variants "
    "that cannot be told apart share a rank."
)


def seed_values(record: Mapping[str, Any]) -> dict[int, float]:
    """seed -> the primary test metric, from `per_seed`; {} when the record has none usable."""
    metric = str(record.get("task", {}).get("metric") or record.get("summary", {}).get("metric") or "")
    out: dict[int, float] = {}
    for entry in record.get("per_seed") or []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("test"), Mapping):
            continue
        value, seed = entry["test"].get(metric), entry.get("seed")
        if isinstance(seed, int) and isinstance(value, int | float) and math.isfinite(value):
            out[seed] = float(value)
    return out


def cell_interval(values: Mapping[int, float], metric: str, higher_is_better: bool) -> dict[str, Any] | None:
    """{mean, ci95_low, ci95_high, n, std, ci_method} on the metric's interval scale, or None without seeds."""
    if not values:
        return None
    s = stats.summarize_metric([values[k] for k in sorted(values)], metric, higher_is_better)
    return {"mean": s.mean, "ci95_low": s.ci95_low, "ci95_high": s.ci95_high, "n": s.n, "std": s.std,
            "ci_method": s.method}  # fmt: skip


def comparison(row: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any] | None:
    """The row's paired comparison with the QKV row on the metric's test scale; None without shared seeds."""
    mine, theirs = row.get("seed_values") or {}, base.get("seed_values") or {}
    scale = stats.metric_scale(str(row["metric"]), bool(row["higher_is_better"]))
    c = stats.paired(dict(mine), dict(theirs), scale)
    if c is None:
        return None
    relative = c.mean_diff / base["mean"] if base.get("mean") else None
    return {"baseline": base["variant"], **c.as_dict(), "relative": relative, "q_value": None}


def tie_aware_ranks(rows: Sequence[dict[str, Any]]) -> None:
    """rank = 1 + the number of fresh ok rows whose interval lies wholly on the better side of this row's."""
    ranked = [r for r in rows if r["state"] == "ok" and not r.get("ablates")]  # ablations are not ranked
    for row in ranked:
        if row["higher_is_better"]:
            better = sum(o["ci95_low"] > row["ci95_high"] for o in ranked if o is not row)
        else:
            better = sum(o["ci95_high"] < row["ci95_low"] for o in ranked if o is not row)
        row["rank"] = float(1 + better)


def bh_stars(groups: Sequence[Mapping[str, Any]]) -> int:
    """Set `significant` and `q_value` on every comparison of the ranked primary tables; return the family size."""
    family = []
    for group in groups:
        for row in group["rows"]:
            comp = row.get("vs_baseline")
            if not comp or row["variant"] == comp.get("baseline"):
                continue
            comp["significant"], comp["q_value"] = False, None
            counted = group["primary"] and group["gate"]["learns"] and row["state"] == "ok" and not row.get("ablates")
            if counted and comp.get("p_value") is not None:
                family.append(comp)
    for comp, q in zip(family, stats.bh_adjust([c["p_value"] for c in family]), strict=True):
        comp["q_value"], comp["significant"] = q, q < FDR
    return len(family)


def _normalised(group: Mapping[str, Any]) -> dict[str, list[float]] | None:
    """variant -> per-seed scores between the trivial baseline (0) and the best cell (1), on shared seeds."""
    rows = [r for r in group["rows"] if r["rank"] is not None and r.get("seed_values")]
    baseline = (group.get("trivial_baseline") or {}).get("value")
    if not rows or baseline is None:
        return None
    seeds = sorted(set.intersection(*(set(r["seed_values"]) for r in rows)))
    if not seeds:
        return None
    best = max(r["mean"] for r in rows) if group["higher_is_better"] else min(r["mean"] for r in rows)
    return {r["variant"]: stats.normalise([r["seed_values"][s] for s in seeds], float(baseline), best) for r in rows}


def aggregates(groups: Sequence[Mapping[str, Any]], reference: str) -> dict[str, Any]:
    """IQM of normalised scores and probability of improvement over `reference`, over the ranked primary tasks."""
    matrix = {}
    for group in groups:
        if group["primary"] and group["gate"]["learns"] and (scores := _normalised(group)) is not None:
            matrix[group["task"]] = scores
    rows = [a.as_dict() for a in stats.aggregate(matrix, reference)] if matrix else []
    return {"tasks": sorted(matrix), "rows": rows, "reps": stats.BOOT_REPS}
