"""Verdict cards: per variant, what it buys and costs against QKV, in one place.

A card reads the task tables' own figures, nothing new: per ranked task (a primary table that passes
its learning gate) the paired difference with QKV and its 95% interval, the verdict the page's stars
and seed design give it, and its label against budget; per task family a count of those verdicts; the
costs of the variant's model beside QKV's on one reference task; and one line in the field's terms.

Verdicts: *better* / *worse* where the comparison carries a star (BH-adjusted, as the task table), or where
every seed's difference is the same (no p-value, so no star) and the seed design found it different;
*same* where it does not and the adaptive seed design found it equivalent within the task's margin
(two one-sided tests); *undecided* otherwise (not different, not shown equivalent).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from . import budget, model, plots

VERDICTS = ("same", "better", "worse", "undecided")
NOTE = (
    "one card per design, over the ranked tasks: better/worse where its comparison with QKV carries a star "
    "(as in the task table; or, where every seed's difference is the same and no p-value exists, where the seed "
    "design found it different), same where it does not and the adaptive seed design found it equivalent within the "
    "task's margin (two one-sided tests), undecided otherwise. Differences are in points for accuracy and AUROC, "
    "else in percent of QKV's value; the family plots place each design at its KV cache as a fraction of QKV's "
    "(declared at 32k tokens, on its cost task) against the median change over the family's tasks, sign-aligned so "
    "that up is better, bars spanning the tasks. Costs are read on one task's model, the LM's where the design "
    "ran it."
)
#: cost figures a card shows, each beside QKV's on the reference task: (row key, label)
COSTS = (
    ("kv_bytes_per_token", "KV cache per token"),
    ("kv_bytes_at_32k", "KV cache at 32k tokens"),
    ("parameters", "parameters"),
    ("train_flops_per_token", "training FLOPs per token"),
    ("examples_per_second", "training examples/s"),
    ("peak_memory_bytes", "peak memory"),
)
REFERENCE_TASK = "lm"  # costs are read on the LM's decoder where a variant ran it: the cache there is the point


def verdict(row: Mapping[str, Any]) -> str:
    """One of `VERDICTS` for a row's comparison with QKV (see the module docstring)."""
    comp = row.get("vs_baseline") or {}
    diff = comp.get("mean_diff")
    decision = (row.get("seed_decision") or {}).get("decision")
    # every seed's difference the same (zero spread): no p-value for a star, but the seed design decided it
    constant = decision == "differs" and comp.get("p_value") is None and bool(diff)
    if (comp.get("significant") or constant) and diff is not None:
        return "better" if (diff > 0) == bool(row["higher_is_better"]) else "worse"
    if decision == "equivalent":
        return "same"
    return "undecided"


def margin_text(margin: float | None, higher_is_better: bool) -> str | None:
    """A task's equivalence margin in the reader's units: points where higher is better (accuracy, AUROC: the
    margin is absolute), else percent of QKV's value (steps, perplexity: the margin is relative)."""
    if margin is None:
        return None
    return f"±{margin * 100:.3g} pts" if higher_is_better else f"±{margin:.0%}"


def effect(row: Mapping[str, Any], base_mean: float | None) -> dict[str, Any]:
    """The difference from QKV in the reader's units: points for a [0, 1] metric (accuracy, AUROC), else a
    percentage of QKV's value; with its interval and the sign-aligned relative change (positive: better)."""
    comp = row.get("vs_baseline") or {}
    diff, low, high = comp.get("mean_diff"), comp.get("ci95_low"), comp.get("ci95_high")
    sign = 1.0 if row["higher_is_better"] else -1.0
    relative = comp.get("relative")
    out: dict[str, Any] = {"better_relative": None if relative is None else sign * relative}
    if diff is None or low is None or high is None:
        return {**out, "text": "no comparison", "short": "no comparison", "unit": ""}
    if comp.get("scale") == "logit":
        scale, unit, spec = 100.0, " pts", "+.1f"
    elif base_mean:
        scale, unit, spec = 100.0 / abs(base_mean), "%", "+.1f"
    else:
        scale, unit, spec = 1.0, "", "+.3g"
    shown = [format(v * scale, spec) for v in (diff, low, high)]
    short = f"{shown[0]}{unit} {row['metric'].replace('_', ' ')}"
    return {**out, "text": f"{short} [{shown[1]}, {shown[2]}]", "short": short, "unit": unit.strip()}


def _task_entry(group: Mapping[str, Any], row: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    found = row.get("budget")
    return {
        "task": group["task"],
        "family": group["family"] or "other",
        "anchor": group["anchor"],
        "cell_anchor": row["anchor"],
        "metric": group["metric"],
        "verdict": verdict(row),
        "budget": budget.label_text(found) if found else None,
        "seeds": row.get("n"),
        "margin": margin_text(group.get("equivalence_margin"), bool(group["higher_is_better"])),
        **effect(row, base.get("mean")),
    }


def _costs(rows: Mapping[str, Mapping[str, Any]], bases: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The variant's costs beside QKV's on the reference task: the LM where it ran, else its first ranked task."""
    task = REFERENCE_TASK if REFERENCE_TASK in rows else next(iter(rows), None)
    if task is None:
        return {"task": None, "figures": {}, "kv_reduction": None}
    mine, qkv = rows[task], bases[task]
    # keyed by the row's own field names, so a reader that drops measured fields (throughput) drops them here too
    figures = {key: {"label": label, "value": mine.get(key), "baseline": qkv.get(key)} for key, label in COSTS}
    return {"task": task, "figures": figures, "kv_reduction": _reduction(mine, qkv)}


def _reduction(mine: Mapping[str, Any], qkv: Mapping[str, Any]) -> float | None:
    """The share of QKV's cache saved at the long context (where a window or a shared cache shows), else per token."""
    for key in (plots.LONG_KEY, "kv_bytes_per_token"):
        if mine.get(key) is not None and qkv.get(key):
            return 1.0 - mine[key] / qkv[key]
    return None


def _families(tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per family, in task order: its verdict counts and the median sign-aligned relative change."""
    out: dict[str, dict[str, Any]] = {}
    for t in tasks:
        fam = out.setdefault(t["family"], {"family": t["family"], "counts": Counter(), "tasks": [], "relative": []})
        fam["counts"][t["verdict"]] += 1
        fam["tasks"].append(t["task"])
        if t["better_relative"] is not None:
            fam["relative"].append(t["better_relative"])
    for fam in out.values():
        rel = fam.pop("relative")
        fam["median_relative"] = statistics.median(rel) if rel else None
        fam["range"] = (min(rel), max(rel)) if rel else None
        fam["counts"] = {v: fam["counts"][v] for v in VERDICTS}
    return list(out.values())


def reading(card: Mapping[str, Any]) -> str:
    """The card in one line: "same as QKV on 5 of 12 tasks (...); worse on 4: synthetic 3 (...); 50% less KV cache"."""
    tasks, counts = card["tasks"], card["counts"]
    if not tasks:
        return "no ranked task compares it with QKV yet"
    parts = [f"same as QKV on {counts['same']} of {len(tasks)} tasks (within each task's margin)"]
    for word in ("worse", "better"):
        hits = [t for t in tasks if t["verdict"] == word]
        if hits:
            by_family = Counter(t["family"] for t in hits)
            worst = max(hits, key=lambda t: abs(t["better_relative"] or 0.0))
            where = ", ".join(f"{f} {n}" for f, n in by_family.items())
            parts.append(f"{word} on {len(hits)} ({where}; largest: {worst['task']} {worst['short']})")
    if counts["undecided"]:
        parts.append(f"undecided on {counts['undecided']}")
    cut = card["costs"]["kv_reduction"]
    if cut is not None and card["costs"]["task"]:
        digits = 2 if 0.999 < abs(cut) < 1 else 1  # a 16-token window at 32k tokens saves 99.95%, not "100.0%"
        size = (
            f"{abs(cut):.{digits}%} {'less' if cut >= 0 else 'more'} KV cache than" if cut else "the same KV cache as"
        )
        parts.append(f"{size} QKV at 32k tokens ({card['costs']['task']}'s model)")
    return "; ".join(parts)


def make(groups: Sequence[Mapping[str, Any]], catalog: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One card per variant with a fresh ok row in a ranked task, QKV first, then by tasks covered and name.

    Ablations (the "+" ablation's diagnostics) get no card: they are read in their own report. `catalog` adds
    what the records do not hold (a variant's `reference`; `contributed` for one a contributor's plugin registers).
    """
    ranked = [g for g in groups if g["primary"] and g["gate"]["learns"]]
    rows: dict[str, dict[str, Mapping[str, Any]]] = {}
    names: dict[str, str] = {}
    bases: dict[str, Mapping[str, Any]] = {}
    tasks: dict[str, list[dict[str, Any]]] = {}
    for group in ranked:
        base = next((r for r in group["rows"] if r["variant"] == model.BASELINE and r["state"] == "ok"), None)
        if base is None:
            continue
        bases[group["task"]] = base
        for row in (r for r in group["rows"] if model.competes(r)):
            rows.setdefault(row["variant"], {})[group["task"]] = row
            names.setdefault(row["variant"], row["display_name"])
            if row["variant"] != model.BASELINE:
                tasks.setdefault(row["variant"], []).append(_task_entry(group, row, base))
    cards = []
    for variant in sorted(rows, key=lambda v: (v != model.BASELINE, -len(rows[v]), v)):
        mine = tasks.get(variant, [])
        card: dict[str, Any] = {
            "variant": variant,
            "name": names[variant],
            "anchor": f"card-{model.slug(variant)}",
            "page": f"variants/{model.slug(variant)}.html",
            "baseline": variant == model.BASELINE,
            "summary": next(iter(rows[variant].values())).get("variant_fields", {}).get("summary", ""),
            "tasks": mine,
            "families": _families(mine),
            "counts": {v: sum(t["verdict"] == v for t in mine) for v in VERDICTS},
            "costs": _costs(rows[variant], bases),
            "ran": len(rows[variant]),
            "reference": str((catalog.get(variant) or {}).get("reference") or ""),
            "contributed": bool((catalog.get(variant) or {}).get("contributed")),
        }
        card["reading"] = "the reference every card compares with" if card["baseline"] else reading(card)
        cards.append(card)
    return cards


def family_plot(cards: Sequence[Mapping[str, Any]], family: str) -> dict[str, Any]:
    """SVG geometry for one family: per variant, its KV cache as a fraction of QKV's (log scale) against the
    median sign-aligned relative change over the family's tasks, bars spanning the tasks' range."""
    points = []
    for card in cards:
        fam = next((f for f in card["families"] if f["family"] == family), None)
        cut = card["costs"]["kv_reduction"]
        if card["baseline"]:
            fam, cut = {"median_relative": 0.0, "range": (0.0, 0.0), "tasks": []}, 0.0
        if fam is None or cut is None or fam["median_relative"] is None or cut >= 1:
            continue
        low, high = fam["range"]
        points.append({"x": 1.0 - cut, "y": 100 * fam["median_relative"], "low": 100 * low, "high": 100 * high,
                       "name": card["name"], "variant": card["variant"], "tasks": len(fam["tasks"])})  # fmt: skip
    return plots.relative_scatter(points, f"{family}: change vs QKV, % (positive: better)")


def families_of(cards: Sequence[Mapping[str, Any]]) -> list[str]:
    """The task families the cards cover, in task order."""
    seen: dict[str, None] = {}
    for card in cards:
        for fam in card["families"]:
            seen.setdefault(fam["family"], None)
    return list(seen)
