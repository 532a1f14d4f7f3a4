"""The board as plain data: one group of rows per task and scale, ranks, and the cells the claims read.

Everything here is JSON-able and sorted, so the page, `leaderboard.json` and `leaderboard.csv` are
three renderings of one deterministic model. A stale cell (its code changed since it ran) is shown
with its reason but takes no part in ranks, plots, claims or the paper comparison. A task whose QKV
cell does not beat the task's trivial baseline by its margin (`learn_gate`) is shown the same way:
its rows stay on the page, without ranks, front, claims or paper comparison.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from bench_record import CellRecord
from bench_record.compare import BASELINE, comparison_look, design_of
from bench_record.schema import Costs, MlflowRun, SeedDesign, TaskInfo, TrivialBaseline, Tuning
from bench_record.uris import redact

from . import budget, item_intervals, scoring
from .tuning_gap import tuning_gaps

MLFLOW_UI = "http://127.0.0.1:5000"  # where `bench ui` serves MLflow by default
SCALE_RANK = {"paper": 3, "default": 2, "smoke": 1}
TASK_ORDER = (
    "reverse", "sort", "sub", "swap", "copy", "mqar", "mnist", "fashion-mnist", "cifar10", "cifar100",
    "tinyimagenet", "set-anomaly", "mvtec", "lm",
)  # fmt: skip
BUCKETS = {"ok": 0, "stale": 1, "failed": 2, "diverged": 2, "n/a": 3}
LEARNS, DID_NOT_LEARN, NO_BASELINE, GATE_UNKNOWN = "learns", "did not learn", "no baseline", "gate unknown"
#: seeds from which the gate holds QKV's worse interval bound to the bar (below, a smoke run's 2 seeds, its mean)
GATE_MIN_SEEDS = 3

#: task id -> variant id -> the record the claims and the paper comparison read
Cells = Mapping[str, Mapping[str, CellRecord]]


def slug(text: str) -> str:
    """An anchor-safe form of an id."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def mlflow_url(info: MlflowRun | None) -> str | None:
    """Link to a cell's MLflow run (`record.mlflow`): the tracking server itself when it is http(s), else `bench ui`."""
    if info is None or not info.run_id or info.experiment_id is None:
        return None
    uri = info.tracking_uri or ""
    # a server: link to it, without any credentials an older record may carry in the URI
    base = redact(uri).rstrip("/") if uri.startswith(("http://", "https://")) else MLFLOW_UI
    return f"{base}/#/experiments/{quote(info.experiment_id, safe='')}/runs/{quote(info.run_id, safe='')}"


def scale_of(record: CellRecord) -> str:
    """The record's scale, or "" when the result predates the field."""
    return record.scale or ""


def _num(value: Any) -> float | int | None:
    """A number from a result file (ints stay ints), or None for anything else."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return value if number and math.isfinite(value) else None


def _comparison(record: CellRecord, base_mean: float | None) -> dict[str, Any] | None:
    """The comparison with QKV the record stores (the board computes it again where QKV's cell is fresh)."""
    comp = record.baseline_comparison
    if comp is None or comp.mean_diff is None:
        return None
    relative = comp.mean_diff / base_mean if base_mean else None
    keys = ("baseline", "n", "ci95_low", "ci95_high", "p_value", "significant")
    return {**{k: getattr(comp, k) for k in keys}, "mean_diff": comp.mean_diff, "relative": relative, "q_value": None}


#: the long contexts whose declared cache bytes the page shows (a bounded or shared cache's worth shows
#: there); the Pareto fronts use LONG_CONTEXT's
LONG_CONTEXTS = (8_192, 32_768)
LONG_CONTEXT = 32_768


def _kv(costs: Costs, base: Costs | None) -> dict[str, Any]:
    measured = costs.kv_measured
    long = costs.kv_bytes_long_context or {}
    out: dict[str, Any] = {
        "context_length": costs.context_length,
        "kv_bytes_per_token": costs.kv_bytes_per_token,
        "kv_bytes_at_context": costs.kv_bytes_at_context,
        **{f"kv_bytes_at_{tokens // 1024}k": _num(long.get(str(tokens))) for tokens in LONG_CONTEXTS},
        "kv_measured": {k: getattr(measured, k) for k in ("dtype", "tokens", "bytes_held", "bytes_derived")}
        if measured
        else None,
        "kv_reduction": None,
        "kv_measured_reduction": None,
    }
    if base is None:
        return out
    mine, theirs = out["kv_bytes_per_token"], base.kv_bytes_per_token
    if mine is not None and theirs:
        out["kv_reduction"] = 1 - mine / theirs
    base_measured = base.kv_measured
    if measured and base_measured:
        held, base_held = measured.bytes_held, base_measured.bytes_held
        if held is not None and base_held and measured.tokens == base_measured.tokens:
            out["kv_measured_reduction"] = 1 - held / base_held
    return out


def _half_width(low: float, high: float, mean: float) -> float:
    """Half the 95% interval; float noise from identical seeds (1e-16) reads as 0."""
    half = (high - low) / 2
    return 0.0 if abs(half) <= 1e-12 * max(abs(mean), 1.0) else half


def _heads(record: CellRecord) -> dict[str, Any]:
    """The head shape the cache figures were computed at: `costs.attention`, else H from the config."""
    shape = record.costs.attention if record.costs else None
    keys = ("n_heads", "kv_heads", "head_dim", "tensors_per_head")
    if shape and shape.n_heads is not None:
        return {**{k: getattr(shape, k) for k in keys}, "heads_source": "costs.attention", "cache_formula": shape.cache}
    heads = _num((record.config or {}).get("n_heads"))
    # older records: the variant's kv_heads field ("H" or a count) is the only statement of g
    g = record.variant.kv_heads or ""
    kv_heads = heads if g == "H" else int(g) if g.isdigit() else None
    source = "config" if heads is not None else None
    return {"n_heads": heads, "kv_heads": kv_heads, "head_dim": None, "tensors_per_head": None, "heads_source": source,
            "cache_formula": None}  # fmt: skip


def _params(record: CellRecord) -> dict[str, Any]:
    """The hyperparameters the cell's seeds were fitted with: the study's best, else seed 0's own."""
    best = dict(record.tuning.best_params or {}) if record.tuning else {}
    if best:
        return {"best_params": best, "params_source": "tuning.best_params"}
    params = dict(record.per_seed[0].params or {}) if record.per_seed else {}
    return {"best_params": params, "params_source": "per_seed[0].params" if params else None}


TUNING_NOTE = (
    "Tuning: every variant of a task gets the same Optuna trials (trial 0 the task's defaults, then the same seeded "
    "candidates over the learning rate and warmup) on the validation split of seed 1,000,000, each trial training "
    "half the cell's steps (its schedule spanning them) and pruned by successive halving on the validation metric "
    "at T/8, T/4 and T/2 of that fit (speed tasks: a trial trains to the target or the cap, and one past the best "
    "trial's steps without reaching the target stops); each cell's seeds refit its own best settings. Each row's "
    "tuning column shows its gap to QKV on that seed's validation split at the trials' budget, untuned (the variant "
    "at QKV's best settings: the trial of its own study that ran them, so it costs no fit; pruned when it lost to "
    "the variant's own trials) and tuned (each at its best), so a reader sees how much of a gap is tuning."
)


def _defaults_value(tuning: Tuning) -> float | None:
    """The validation metric of the cell's trial 0 (the task's default settings, on the tuning seed), when it
    finished: what the cell would score untuned."""
    first = next((t for t in tuning.trials if t.number == 0), None) if tuning.trials else None
    return first.value if first and first.state == "complete" else None


def _interval(record: CellRecord, values: Mapping[int, float]) -> dict[str, Any]:
    """The cell's mean and metric-aware interval from its seeds, else the interval its file recorded."""
    found = scoring.cell_interval(values, record.task.metric, record.task.higher_is_better)
    summary = record.summary
    if found is not None or summary is None:  # an ok record has its summary
        return found or {}
    keys = ("mean", "ci95_low", "ci95_high", "n")
    return {**{k: getattr(summary, k) for k in keys}, "std": summary.std, "ci_method": "as recorded"}


def _ok_fields(record: CellRecord, base: CellRecord | None) -> dict[str, Any]:
    costs, tuning = record.costs or Costs(), record.tuning or Tuning()  # an ok record has both
    values = record.seed_values()
    interval = _interval(record, values)
    return {
        **interval,
        "ci_half": _half_width(interval["ci95_low"], interval["ci95_high"], interval["mean"]),
        "seed_values": values,
        "vs_baseline": _comparison(record, base.summary.mean if base and base.summary else None),
        "parameters": costs.parameters,
        "train_flops_per_token": costs.train_flops_per_token,
        "train_flops_per_fit": costs.train_flops_per_fit,
        **_kv(costs, base.costs if base else None),
        "examples_per_second": costs.examples_per_second,
        "peak_memory_bytes": costs.peak_memory_bytes,
        "decode_tokens_per_second": costs.kv_measured.decode_tokens_per_second if costs.kv_measured else None,
        "by_position": by_position(record),
        "trials_finished": tuning.trials_finished,
        "trials_budget": tuning.trials_budget,
        "search_space": dict(tuning.search_space or {}),
        "tuned_value": tuning.best_value,
        "defaults_value": _defaults_value(tuning),
        **_params(record),
        "tuning_gaps": tuning_gaps(tuning, base.tuning) if base and base.cell_id != record.cell_id else None,
        "seeds": list(record.seeds or []),
        "budget": budget.verdict(record, base) if base and base.cell_id != record.cell_id else None,
        "seed_decision": seed_decision(record, base),
    }


def by_position(record: CellRecord) -> list[tuple[str, float]]:
    """The primary metric per bucket of positions in the window (test metrics named `<metric>@<first>-<last>`,
    the LM's), mean over the seeds that report it, buckets in order; empty when the task reports none."""
    prefix = f"{record.task.metric}@"
    found: dict[str, list[float]] = {}
    for fit in record.per_seed or ():
        for name, value in fit.test.items():
            if name.startswith(prefix) and isinstance(value, int | float) and math.isfinite(value):
                found.setdefault(name.removeprefix(prefix), []).append(float(value))
    return sorted(((b, sum(v) / len(v)) for b, v in found.items()), key=lambda item: int(item[0].split("-")[0]))


def seed_decision(record: CellRecord, base: CellRecord | None) -> dict[str, Any] | None:
    """How the cell's seed count was decided: its comparison with QKV under the run's group-sequential design
    ({decision, n_used, reason}); None for fixed seeds, the QKV cell itself, or a record without the design."""
    design, margin = record.seed_design, record.task.equivalence_margin
    if not base or base.cell_id == record.cell_id or not design or not design.looks or not design.seeds:
        return None
    if margin is None:
        return None
    try:
        look = comparison_look(record.seed_values(), base.seed_values(), design.seeds,
                               adaptive_design(design.looks, design.spending or "pocock"), margin,
                               record.task.higher_is_better)  # fmt: skip
    except ValueError as exc:  # a hand-edited design: say so instead of failing the page
        return {"decision": "unknown", "n_used": None, "reason": f"the recorded seed design is unusable: {exc}"}
    return {"decision": look.decision, "n_used": look.n_used, "reason": look.reason}


def seeds_note(records: Sequence[CellRecord]) -> str:
    """How the cells' seed counts were chosen, for the page's methods."""
    found = {(tuple(d.looks or ()), d.spending or "pocock") for d in (r.seed_design or SeedDesign() for r in records)}
    designs = sorted(d for d in found if d[0])
    if not designs:
        return "Seeds: every cell ran its suite's fixed seeds."
    try:
        names = "; ".join(adaptive_design(looks, spending).name for looks, spending in designs)
    except (TypeError, ValueError) as exc:
        names = f"a recorded design is unusable: {exc}"
    return (f"Seeds are adaptive ({names}): every cell starts with the first look's seeds; a comparison with QKV "
            "that is decided (it differs, or it is equivalent within the task's margin by two one-sided tests) "
            "stops, an undecided one gets the next look's seeds, up to the last; QKV runs the most seeds any "
            "comparison of its task asks for, so every comparison stays paired. Each row says what decided its "
            "seeds.")  # fmt: skip


def adaptive_design(looks: Sequence[int], spending: str) -> Any:
    return design_of(looks, spending)


def make_row(record: CellRecord, stale_reason: str | None, base: CellRecord | None) -> dict[str, Any]:
    """One table row from one record; `base` is the group's QKV record (or None)."""
    task, variant = record.task, record.variant
    status = record.status
    row: dict[str, Any] = {
        "cell_id": record.cell_id,
        "anchor": "cell-" + slug(record.cell_id),
        "task": task.id,
        "scale": scale_of(record),
        "suite": record.suite or "",
        "variant": variant.id,
        "display_name": variant.display_name,
        "ablates": variant.ablates or None,
        "variant_fields": {k: str(v) for k, v in variant.to_dict().items() if k not in ("id", "display_name")},
        "status": status,
        "state": "stale" if stale_reason and status == "ok" else status,
        "reason": record.reason if status != "ok" else None,
        "stale_reason": stale_reason,
        "metric": task.metric,
        "higher_is_better": task.higher_is_better,
        "config": dict(record.config or {}),
        "data_source": (record.data_source.to_dict() if record.data_source else {}) or None,
        "provenance": record.provenance.to_dict() if record.provenance else {},
        "created_at": record.created_at or "",
        "mlflow_url": mlflow_url(record.mlflow),
        "rank": None,
        **_heads(record),
    }
    if status == "ok":
        row.update(_ok_fields(record, base))
    return row


def competes(row: Mapping[str, Any]) -> bool:
    """A fresh ok row of a design (not an ablation): what ranks, stars, fronts and plots take."""
    return row["state"] == "ok" and not row.get("ablates")


def is_ablation(record: CellRecord) -> bool:
    return bool(record.variant.ablates)


def _order_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    value = 0.0
    if row["status"] == "ok":
        value = -row["mean"] if row["higher_is_better"] else row["mean"]
    return (BUCKETS[row["state"]], value, row["variant"], row["cell_id"])


def _compare_rows(rows: list[dict[str, Any]]) -> None:
    """Recompute each row's paired comparison with the fresh QKV row from seeds (else keep the file's)."""
    base = next((r for r in rows if r["variant"] == BASELINE and r["state"] == "ok"), None)
    if base is None or not base.get("seed_values"):
        return
    for row in rows:
        if row["status"] == "ok" and row.get("seed_values"):
            row["vs_baseline"] = scoring.comparison(row, base) or row["vs_baseline"]


def _task_order(task_id: str) -> tuple[int, str]:
    return (TASK_ORDER.index(task_id) if task_id in TASK_ORDER else len(TASK_ORDER), task_id)


def _group_order(key: tuple[str, str]) -> tuple[Any, ...]:
    return (*_task_order(key[0]), -SCALE_RANK.get(key[1], 0), key[1])


def _pick(records: Sequence[CellRecord]) -> CellRecord | None:
    """The record to read when several fresh ok cells share a task, scale and variant: most seeds, newest."""
    if not records:
        return None
    return max(records, key=lambda r: (r.summary.n if r.summary else 0, r.created_at or "", r.cell_id))


def _fresh_ok(records: Sequence[CellRecord], stale: Mapping[str, str]) -> list[CellRecord]:
    return [r for r in records if r.ok and r.cell_id not in stale]


def primary_scales(records: Sequence[CellRecord], stale: Mapping[str, str]) -> dict[str, str]:
    """task id -> the largest scale with fresh results: the one the overview, plots' ranks and claims read."""
    scales: dict[str, set[str]] = defaultdict(set)
    for record in _fresh_ok(records, stale):
        scales[record.task.id].add(scale_of(record))
    return {task: min(found, key=lambda s: (-SCALE_RANK.get(s, 0), s)) for task, found in scales.items()}


def current_cells(
    records: Sequence[CellRecord], stale: Mapping[str, str], ablations: bool = False
) -> dict[str, dict[str, CellRecord]]:
    """task id -> variant id -> the fresh ok record at the task's primary scale (what the claims read).

    Ablations are left out unless `ablations` (the ablation report reads them beside their variants).
    """
    primary = primary_scales(records, stale)
    found: dict[tuple[str, str], list[CellRecord]] = defaultdict(list)
    for record in _fresh_ok(records, stale):
        if is_ablation(record) and not ablations:
            continue
        task = record.task.id
        if scale_of(record) == primary[task]:
            found[(task, record.variant.id)].append(record)
    out: dict[str, dict[str, CellRecord]] = defaultdict(dict)
    for (task, variant), candidates in sorted(found.items()):
        chosen = _pick(candidates)
        if chosen is not None:
            out[task][variant] = chosen
    return dict(out)


def read_baseline(raw: TrivialBaseline | None) -> dict[str, Any] | None:
    """The task's trivial baseline as a record carries it (`record.baseline`), cleaned; None when absent or
    without a number.

    Returns:
        {name, value, others (name -> number), note, learn_margin (None when not recorded)}, or None.
    """
    if raw is None or raw.value is None:
        return None
    margin = raw.learn_margin
    others = {str(k): v for k, v in sorted((raw.others or {}).items()) if _num(v) is not None}
    return {
        "name": raw.name or "baseline",
        "value": raw.value,
        "others": others,
        "note": raw.note or "",
        "learn_margin": margin if margin is not None and margin >= 0 else None,
    }


def learn_gate(
    baseline: Mapping[str, Any] | None, qkv_mean: float | None, higher_is_better: bool, qkv_bound: float | None = None
) -> dict[str, Any]:
    """Whether a task shows learning: the QKV cell's test metric beats the trivial baseline by the margin.

    The score held against the bar is QKV's worse 95% interval bound when given (its lower bound when higher
    is better), else its mean: a task whose QKV interval reaches the bar has not shown that it learns.
    Higher is better: score >= value + margin (margin in metric units). Lower is better (perplexity):
    score <= value x (1 - margin) (margin relative). Only a task that "learns" is ranked; "did not
    learn", "no baseline" and "gate unknown" tasks are shown without ranks, front, claims or paper.

    Args:
        baseline: From `read_baseline`, or None when the task's records carry no baseline.
        qkv_mean: The fresh ok QKV cell's mean test metric, or None when there is no such cell.
        higher_is_better: The metric's direction.
        qkv_bound: QKV's 95% interval bound on the worse side, or None (then the mean is held to the bar).

    Returns:
        {status, learns, reason, qkv_mean, qkv_bound, threshold, margin}; status is one of `LEARNS`,
        `DID_NOT_LEARN`, `NO_BASELINE`, `GATE_UNKNOWN`.
    """
    margin = baseline.get("learn_margin") if baseline else None
    out = {"status": GATE_UNKNOWN, "learns": False, "qkv_mean": qkv_mean, "qkv_bound": qkv_bound, "threshold": None,
           "margin": margin}  # fmt: skip
    if baseline is None:
        return {**out, "status": NO_BASELINE, "reason": "the results record no trivial baseline for this task"}
    if qkv_mean is None:
        return {**out, "reason": "no fresh ok QKV cell to hold against the baseline"}
    if margin is None:
        return {**out, "reason": "the baseline records no learn_margin"}
    name, value = baseline["name"], float(baseline["value"])
    score = qkv_mean if qkv_bound is None else qkv_bound
    held = (
        f"QKV {qkv_mean:.4g}"
        if qkv_bound is None
        else f"QKV's 95% {'lower' if higher_is_better else 'upper'} bound {qkv_bound:.4g} (mean {qkv_mean:.4g})"
    )
    if higher_is_better:
        threshold, rule = value + margin, f"{name} {value:.4g} + {margin:.4g}"
        learns, sign = score >= threshold, ">=" if score >= threshold else "<"
    else:
        threshold, rule = value * (1 - margin), f"{name} {value:.4g} x (1 - {margin:.4g})"
        learns, sign = score <= threshold, "<=" if score <= threshold else ">"
    status, reason = LEARNS if learns else DID_NOT_LEARN, f"{held} {sign} {rule} = {threshold:.4g}"
    return {**out, "status": status, "learns": learns, "threshold": threshold, "reason": reason}


def _group_baseline(base: CellRecord | None, members: Sequence[CellRecord]) -> tuple[dict[str, Any] | None, str | None]:
    """The group's trivial baseline (the QKV record's, else the first other record's), or why it failed."""
    ordered = [base] if base is not None else []
    ordered += sorted(members, key=lambda r: (not r.ok, r.cell_id))
    found = next((b for r in ordered if (b := read_baseline(r.baseline)) is not None), None)
    errors = (r.baseline.error if r.baseline else None for r in ordered)
    return found, next((e for e in errors if e), None)


def measures_text(task: TaskInfo, rows: list[dict[str, Any]]) -> str:
    """What a task's verdict measures, in words: speed (steps to its target, with the cap and the median share
    of the cap its fits trained: what stopping at the target saved) or its metric at the budget."""
    target = task.speed_target
    if task.measures == "speed" and target is not None:
        cap = target.cap
        steps = sorted(v for r in rows for v in (r.get("seed_values") or {}).values())
        share = f"; its fits trained a median {statistics.median(steps) / cap:.0%} of the cap" if steps and cap else ""
        return (f"measures speed: steps until validation {target.metric} first reaches {target.target}, "
                f"looked at every {target.every} steps, each fit stopping there; a fit that never does "
                f"counts at the cap, {cap or 'the fit length in'} steps, and is flagged censored{share}")  # fmt: skip
    return "measures the metric at the budget (a plateau is out of reach here), each verdict labelled stable or moving"


def _group(key: tuple[str, str], members: list[CellRecord], stale: Mapping[str, str], primary: bool) -> dict[str, Any]:
    fresh = _fresh_ok(members, stale)
    base = _pick([r for r in fresh if r.variant.id == BASELINE])
    rows = sorted((make_row(r, stale.get(r.cell_id), base) for r in members), key=_order_key)
    task = (fresh or sorted(members, key=lambda r: r.cell_id))[0].task
    baseline, error = _group_baseline(base, members)
    hib = task.higher_is_better
    base_row = next((r for r in rows if base and r["cell_id"] == base.cell_id), None)
    bound = None  # below 3 seeds the interval (t with 1 degree of freedom) says nothing: the mean is held
    if base_row and (base_row.get("n") or 0) >= GATE_MIN_SEEDS:
        bound = _num(base_row.get("ci95_low" if hib else "ci95_high"))
    gate = learn_gate(baseline, float(base.summary.mean) if base and base.summary else None, hib, bound)
    if baseline is None and error:
        gate["reason"] += f" (computing it failed: {error})"
    _compare_rows(rows)
    item_intervals.attach(rows, members)
    if gate["learns"]:
        scoring.tie_aware_ranks(rows)
    counts = {state: sum(r["state"] == state for r in rows) for state in BUCKETS}
    task_id, scale = key
    return {
        "anchor": f"task-{slug(task_id)}-{slug(scale or 'unknown')}",
        "task": task_id,
        "scale": scale,
        "primary": primary,
        "metric": task.metric,
        "higher_is_better": task.higher_is_better,
        "direction": "higher is better" if task.higher_is_better else "lower is better",
        "family": task.family or "",
        "measures": measures_text(task, [r for r in rows if r["status"] == "ok"]),
        "equivalence_margin": task.equivalence_margin,
        "causal": bool(task.causal),
        "task_version": task.version or "",
        "baseline_present": base is not None,
        "trivial_baseline": baseline,
        "gate": gate,
        "cache_heads": sorted({r["n_heads"] for r in rows if r["status"] == "ok" and r["n_heads"] is not None}),
        "counts": counts,
        "rows": rows,
    }


def make_groups(records: Sequence[CellRecord], stale: Mapping[str, str]) -> list[dict[str, Any]]:
    """One group per (task, scale), in the study's task order then largest scale first; rows best-first."""
    by_key: dict[tuple[str, str], list[CellRecord]] = defaultdict(list)
    for record in records:
        by_key[(record.task.id, scale_of(record))].append(record)
    primary = primary_scales(records, stale)
    groups = [
        _group(key, by_key[key], stale, primary.get(key[0]) == key[1]) for key in sorted(by_key, key=_group_order)
    ]
    scoring.bh_stars(groups)
    return groups


def mean_ranks(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each variant's mean rank over the tasks it ran (primary scale of each task), best first."""
    ranks: dict[str, dict[str, float]] = defaultdict(dict)
    names: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for group in groups:
        if not group["primary"] or not group["gate"]["learns"]:
            continue
        ranked = [r for r in group["rows"] if r["rank"] is not None]
        sizes[group["task"]] = len(ranked)
        for row in ranked:
            ranks[row["variant"]].setdefault(group["task"], row["rank"])
            names.setdefault(row["variant"], row["display_name"])
    out = [
        {
            "variant": variant,
            "display_name": names[variant],
            "mean_rank": sum(by_task.values()) / len(by_task),
            "tasks": len(by_task),
            "ranks": [
                {"task": t, "rank": r, "of": sizes[t]}
                for t, r in sorted(by_task.items(), key=lambda kv: _task_order(kv[0]))
            ],
        }
        for variant, by_task in ranks.items()
    ]
    return sorted(out, key=lambda v: (v["mean_rank"], -v["tasks"], v["variant"]))


def by_coverage(
    items: Sequence[dict[str, Any]], ranked_tasks: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`items` (each with its `tasks` count) split into those that ran at least half of the `ranked_tasks` and
    the rest: an aggregate over one task is no peer of one over thirteen, so the two are never ranked together."""
    least = math.ceil(ranked_tasks / 2)
    return [i for i in items if i["tasks"] >= least], [i for i in items if i["tasks"] < least]


def ranked_task_count(groups: Sequence[Mapping[str, Any]]) -> int:
    """The tasks ranks and aggregates read: primary groups that pass the learning gate."""
    return sum(1 for g in groups if g["primary"] and g["gate"]["learns"])


def left_out(groups: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """task id -> why it is left out of claims and the paper comparison (its primary group fails the gate), in order."""
    return {
        g["task"]: f"{g['gate']['status']}: {g['gate']['reason']}"
        for g in groups
        if g["primary"] and not g["gate"]["learns"]
    }


def gated(cells: Cells, excluded: Mapping[str, str]) -> dict[str, dict[str, CellRecord]]:
    """`cells` without the tasks in `excluded` (see `left_out`): what the claims and the paper read."""
    return {task: dict(by_variant) for task, by_variant in cells.items() if task not in excluded}
