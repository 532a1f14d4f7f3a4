"""The board's statistics: metric-aware intervals, paired tests with BH stars, tie-aware ranks, aggregates.

The numbers come from `bench_record.stats` (the comparison with QKV from `bench_record.compare`, as bench
computes it); this module only maps rows (see `model.make_row`) onto them. Each row carries `seed_values`
(seed -> test metric, `CellRecord.seed_values`); rows from older result files without per-seed values keep
the interval their file recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench_record import stats
from bench_record.compare import paired_with

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
    "Rank = 1 + the number of variants that beat this one in a paired t-test over the seeds both ran, on the test "
    "scale (Benjamini-Hochberg across the task's pairs at 5%), so variants that cannot be told apart share a rank. "
    "Rows without per-seed values fall back to interval overlap."
)


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
    c = paired_with(mine, theirs, str(row["metric"]), bool(row["higher_is_better"]))
    if c is None:
        return None
    relative = c.mean_diff / base["mean"] if base.get("mean") else None
    return {"baseline": base["variant"], **c.as_dict(), "relative": relative, "q_value": None}


def tie_aware_ranks(rows: Sequence[dict[str, Any]]) -> None:
    """rank = 1 + the number of fresh ok rows that beat this one (see `RANK_NOTE`), the same paired test the
    stars use, over every pair of the task's rows."""
    ranked = [r for r in rows if r["state"] == "ok" and not r.get("ablates")]  # ablations are not ranked
    pairs = [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1 :]]
    tested = [(a, b, _pair_test(a, b)) for a, b in pairs]
    p_values = {id(t): t[2][1] for t in tested if t[2] is not None and t[2][1] is not None}
    adjusted = dict(zip(p_values, stats.bh_adjust(list(p_values.values())), strict=True))
    beaten = {id(r): 0 for r in ranked}
    for test in tested:
        a, b, found = test
        if found is None:  # no shared seeds: the older reading, interval overlap
            winner = _by_overlap(a, b)
        else:
            diff, p = found
            significant = p is not None and adjusted.get(id(test), 1.0) < FDR
            winner = None if not significant else (a if (diff > 0) == a["higher_is_better"] else b)
        if winner is not None:
            beaten[id(b if winner is a else a)] += 1
    for row in ranked:
        row["rank"] = float(1 + beaten[id(row)])


def _pair_test(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[float, float | None] | None:
    """(a - b on the test scale, paired p-value) over shared seeds; None when they share fewer than 2."""
    mine, theirs = a.get("seed_values") or {}, b.get("seed_values") or {}
    if len(set(mine) & set(theirs)) < 2:
        return None
    c = paired_with(mine, theirs, str(a["metric"]), bool(a["higher_is_better"]))
    if c is None:
        return None
    if c.p_value is None and c.scale_diff != 0:  # zero spread, a constant difference: as decided as it gets
        return c.scale_diff, 0.0
    return c.scale_diff, c.p_value


def _by_overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The row whose 95% interval lies wholly on the better side of the other's, else None."""
    if a["higher_is_better"]:
        return a if a["ci95_low"] > b["ci95_high"] else b if b["ci95_low"] > a["ci95_high"] else None
    return a if a["ci95_high"] < b["ci95_low"] else b if b["ci95_high"] < a["ci95_low"] else None


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
