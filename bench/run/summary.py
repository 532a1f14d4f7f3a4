"""What `bench run` prints: the matrix with each cell's status, and the summary; plus the paired
comparison with the baseline, written back into each cell's result."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.plan.matrix import Cell
from bench.record.store import ResultStore
from bench.stats import metric_scale, paired, summarize_metric

STATUS_STYLE = {"cached": "green", "partial": "yellow", "to run": "cyan", "n/a": "dim", "gave up": "red"}


def trials_done(storage: str, cells: list[Cell]) -> dict[str, int]:
    """Finished trials per cell id, read from the Optuna storage without loading every trial; a cell that
    trains as another (and takes that one's settings) counts the larger of its study and that one's."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    wanted: dict[str, list[str]] = {}  # study name -> the cells whose trials it holds
    for cell in cells:
        for owner in {cell.id, *([cell.trains_as.id] if cell.trains_as else [])}:
            wanted.setdefault(f"cell-{owner}", []).append(cell.id)
    out: dict[str, int] = {}
    from bench.fit.tuning import optuna_storage

    store = optuna_storage(storage)
    for study in store.get_all_studies():
        if study.study_name in wanted:
            trials = store.get_all_trials(
                study._study_id, deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
            )
            for cell_id in wanted[study.study_name]:
                out[cell_id] = max(out.get(cell_id, 0), len(trials))
    return out


def matrix_table(console: Console, cells: list[Cell], statuses: dict[str, str], suite: Any) -> None:
    seeds = (f"{suite.looks[0]}-{suite.looks[-1]} adaptive seeds (looks at {'/'.join(map(str, suite.looks))})"
             if suite.looks else f"{len(suite.seeds)} seeds")  # fmt: skip
    table = Table(title=f"suite {suite.name}: {len(cells)} cells, {suite.trials} trials + {seeds} each")
    for col in ("task", "variant", "status", "cell id", "why"):
        table.add_column(col)
    for cell in cells:
        status = statuses[cell.id]
        style = STATUS_STYLE.get(status, "")
        table.add_row(
            escape(cell.task.id),
            escape(cell.variant.display_name),
            f"[{style}]{status}[/]",
            cell.id,
            escape(cell.na_reason or ""),
        )
    console.print(table)


def compare_with_baseline(store: ResultStore, cells: list[Cell], baseline: str) -> dict[str, dict[str, Any]]:
    """Add the paired comparison with the task's baseline cell to every finished cell; return all results."""
    results: dict[str, dict[str, Any]] = {}
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        path = store.find(cell.id)
        if path is None:
            continue
        record = store.load(path)
        results[cell.id] = record
        by_task[cell.task.id].append(record)
    for records in by_task.values():
        base = next((r for r in records if r["variant"]["id"] == baseline and r["status"] == "ok"), None)
        for record in records:
            if record["status"] != "ok" or base is None:
                continue
            metric = record["summary"]["metric"]
            mine = {s["seed"]: s["test"][metric] for s in record["per_seed"]}
            theirs = {s["seed"]: s["test"][metric] for s in base["per_seed"]}
            scale = metric_scale(metric, bool(record["task"].get("higher_is_better", True)))
            comparison = paired(mine, theirs, scale)
            new = {"baseline": baseline, **(comparison.as_dict() if comparison else {})}
            if record.get("baseline_comparison") != new:
                record["baseline_comparison"] = new
                store.write_cell(record)
    return results


def _fmt_metric(record: dict[str, Any]) -> str:
    s = record["summary"]
    half = (s["ci95_high"] - s["ci95_low"]) / 2
    return f"{s['mean']:.4g} ± {half:.2g}"


def _fmt_delta(record: dict[str, Any]) -> str:
    c = record.get("baseline_comparison") or {}
    if "mean_diff" not in c or record["variant"]["id"] == c.get("baseline"):
        return "-"
    return f"{c['mean_diff']:+.3g}{' *' if c.get('significant') else ''}"


def summary_table(
    console: Console, cells: list[Cell], results: dict[str, dict[str, Any]], timings: dict[str, float]
) -> None:
    table = Table(title="results (test split; mean ± 95% CI over seeds; * = significant vs baseline)")
    for col in ("task", "metric", "variant", "status", "value", "seeds", "Δ vs baseline", "params", "KV B/token",
                "source"):  # fmt: skip
        table.add_column(col)
    for cell in cells:
        record = results.get(cell.id)
        if record is None:
            continue
        ok = record["status"] == "ok"
        costs = record.get("costs", {})
        table.add_row(
            escape(cell.task.id),
            escape(cell.task.metric),
            escape(cell.variant.display_name),
            escape(record["status"] if ok else f"{record['status']}: {record.get('reason', '')}"[:60]),
            _fmt_metric(record) if ok else "-",
            str(len(record["per_seed"])) if ok else "-",
            _fmt_delta(record) if ok else "-",
            f"{costs['parameters']:,}" if ok else "-",
            f"{costs['kv_bytes_per_token']:,}" if ok else "-",
            escape(record.get("data_source", {}).get("kind", "")),
        )
    console.print(table)
    for cell in cells:  # the table cuts reasons short; a failure's whole reason is what the user acts on
        record = results.get(cell.id, {})
        if record.get("status") in ("failed", "diverged"):
            why = escape(f"{cell.label} {record['status']}: {record.get('reason', '')}")
            console.print(f"[red]{why}[/]", highlight=False, overflow="fold")
    gate_lines(console, cells, results)
    console.print(" ".join(f"{k.replace('_seconds', '')}: {v:.1f}s" for k, v in timings.items()))


def gate_lines(console: Console, cells: list[Cell], results: dict[str, dict[str, Any]]) -> None:
    """Per task: its trivial baseline and whether QKV beat it by the task's margin (else not ranked)."""
    from bench_leaderboard.model import GATE_MIN_SEEDS, learn_gate

    for task in list({c.task.id: c.task for c in cells}.values()):
        records = [results[c.id] for c in cells if c.task.id == task.id and c.id in results]
        base = next((r for r in records if r["variant"]["id"] == "qkv" and r["status"] == "ok"), None)
        trivial = next((r["baseline"] for r in records if "value" in r.get("baseline", {})), None)
        bound = None
        if base and len(base["per_seed"]) >= GATE_MIN_SEEDS:
            values = [s["test"][task.metric] for s in base["per_seed"]]
            interval = summarize_metric(values, task.metric, task.higher_is_better)
            bound = interval.ci95_low if task.higher_is_better else interval.ci95_high
        gate = learn_gate(trivial, base["summary"]["mean"] if base else None, task.higher_is_better, bound)
        colour = "green" if gate["learns"] else "red"
        console.print(f"{escape(task.id)}: [{colour}]{gate['status']}[/] ({escape(gate['reason'])})")
