"""What `bench run` prints: the matrix with each cell's status, and the summary; plus the paired
comparison with the baseline (`bench_record.compare.with_baseline`), written back into each cell's result."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.plan.matrix import Cell
from bench.record.store import ResultStore
from bench_record import CellRecord
from bench_record.compare import with_baseline
from bench_record.schema import Costs, Summary
from bench_record.stats import summarize_metric

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


def compare_with_baseline(store: ResultStore, cells: list[Cell], baseline: str) -> dict[str, CellRecord]:
    """Store in every finished ok cell its comparison with the task's baseline cell (`with_baseline`, the one the
    board computes too); return every cell's record.

    The board recomputes the comparison from the seeds where its baseline cell is fresh; the stored one is
    what it shows where that cell is stale or absent.
    """
    records = {cell.id: found for cell in cells if (found := store.cell(cell.id)) is not None}
    by_task: dict[str, list[CellRecord]] = defaultdict(list)
    for record in records.values():
        by_task[record.task.id].append(record)
    for row in by_task.values():
        base = next((r for r in row if r.variant.id == baseline and r.ok), None)
        for record in row:
            if not record.ok or base is None:
                continue
            new = with_baseline(record, base)
            if record.baseline_comparison != new:
                records[record.cell_id] = replace(record, baseline_comparison=new)
                store.write_cell(records[record.cell_id].to_dict())
    return records


def _fmt_metric(s: Summary) -> str:
    half = (s.ci95_high - s.ci95_low) / 2
    return f"{s.mean:.4g} ± {half:.2g}"


def _fmt_delta(record: CellRecord) -> str:
    c = record.baseline_comparison
    if c is None or c.mean_diff is None or record.variant.id == c.baseline:
        return "-"
    return f"{c.mean_diff:+.3g}{' *' if c.significant else ''}"


def _ok_columns(record: CellRecord) -> list[str]:
    """value, seeds, Δ vs baseline, params, KV B/token of an ok record."""
    costs = record.costs or Costs()
    return [
        _fmt_metric(record.summary) if record.summary else "-",
        str(len(record.per_seed or ())),
        _fmt_delta(record),
        f"{costs.parameters:,}" if costs.parameters is not None else "-",
        f"{costs.kv_bytes_per_token:,}" if costs.kv_bytes_per_token is not None else "-",
    ]


def summary_table(
    console: Console, cells: list[Cell], results: dict[str, CellRecord], timings: dict[str, float]
) -> None:
    table = Table(title="results (test split; mean ± 95% CI over seeds; * = significant vs baseline)")
    for col in ("task", "metric", "variant", "status", "value", "seeds", "Δ vs baseline", "params", "KV B/token",
                "source"):  # fmt: skip
        table.add_column(col)
    for cell in cells:
        record = results.get(cell.id)
        if record is None:
            continue
        status = record.status if record.ok else f"{record.status}: {record.reason or ''}"[:60]
        table.add_row(
            escape(cell.task.id),
            escape(cell.task.metric),
            escape(cell.variant.display_name),
            escape(status),
            *(_ok_columns(record) if record.ok else ["-"] * 5),
            escape((record.data_source.kind if record.data_source else None) or ""),
        )
    console.print(table)
    for cell in cells:  # the table cuts reasons short; a failure's whole reason is what the user acts on
        record = results.get(cell.id)
        if record is not None and record.status in ("failed", "diverged"):
            why = escape(f"{cell.label} {record.status}: {record.reason or ''}")
            console.print(f"[red]{why}[/]", highlight=False, overflow="fold")
    gate_lines(console, cells, results)
    console.print(" ".join(f"{k.replace('_seconds', '')}: {v:.1f}s" for k, v in timings.items()))


def gate_lines(console: Console, cells: list[Cell], results: dict[str, CellRecord]) -> None:
    """Per task: its trivial baseline and whether QKV beat it by the task's margin (else not ranked)."""
    from bench_leaderboard.model import GATE_MIN_SEEDS, learn_gate, read_baseline

    for task in list({c.task.id: c.task for c in cells}.values()):
        records = [results[c.id] for c in cells if c.task.id == task.id and c.id in results]
        base = next((r for r in records if r.variant.id == cells[0].suite.baseline and r.ok), None)
        trivial = next((found for r in records if (found := read_baseline(r.baseline)) is not None), None)
        bound = None
        values = base.seed_values() if base else {}
        if len(values) >= GATE_MIN_SEEDS:
            interval = summarize_metric(list(values.values()), task.metric, task.higher_is_better)
            bound = interval.ci95_low if task.higher_is_better else interval.ci95_high
        mean = base.summary.mean if base and base.summary else None
        gate = learn_gate(trivial, mean, task.higher_is_better, bound)
        colour = "green" if gate["learns"] else "red"
        console.print(f"{escape(task.id)}: [{colour}]{gate['status']}[/] ({escape(gate['reason'])})")


def cards(console: Console, board_json: Any, trained: set[str]) -> None:
    """The verdict card of each variant other than the baseline that this run trained, read from the
    leaderboard just built: its one-line reading, per task its difference from QKV, and its costs beside QKV's."""
    import json

    from rich.panel import Panel

    try:
        found = json.loads(board_json.read_text(encoding="utf-8")).get("cards", [])
    except (OSError, ValueError):
        return
    wanted = [c for c in found if c["variant"] in trained and not c["baseline"]]
    for card in wanted:
        lines = [f"[bold]{escape(card['reading'])}[/]"]
        lines += [f"  {escape(t['task'])} ({escape(t['family'])}): {t['verdict']}, {escape(t['text'])}"
                  f"{'; ' + escape(t['budget']) if t['budget'] else ''}" for t in card["tasks"]]  # fmt: skip
        costs = card["costs"]
        if costs["task"]:
            shown = "; ".join(
                f"{c['label']} {_figure(key, c['value'])} (QKV {_figure(key, c['baseline'])})"
                for key, c in costs["figures"].items()
            )
            lines.append(f"  costs on {escape(costs['task'])}'s model: {escape(shown)}")
        title = f"verdict card: {escape(card['name'])} ({escape(card['variant'])}), page {escape(card['page'])}"
        console.print(Panel("\n".join(lines), title=title, expand=False))


def _figure(key: str, value: Any) -> str:
    """A card's cost figure: bytes in B/KiB/MiB, FLOPs to 3 digits, rates as whole numbers."""
    if value is None:
        return "-"
    if key.startswith("kv_bytes") or key.endswith("_bytes"):
        power = 2 if value >= 2**20 else 1 if value >= 2**10 else 0
        return f"{value / 1024**power:,.1f} {('B', 'KiB', 'MiB')[power]}" if power else f"{value:,.0f} B"
    return f"{value:.3g}" if key.startswith("train_flops") else f"{value:,.0f}"
