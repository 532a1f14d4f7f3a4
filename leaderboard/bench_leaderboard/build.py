"""Build the static leaderboard: results store -> one model -> index.html, leaderboard.json, leaderboard.csv.

The page is self-contained (inline CSS, a few lines of plain JS, inline SVG; no network). No result
data is ever placed inside a <script>: the script reads `data-` attributes (sort keys, per-seed
values for the compare view), and every string reaches the page through Jinja's autoescaping.
Same results in, byte-identical files out.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from bench_record import CellRecord
from bench_record.files import atomic_file

from . import budget, cards, changes, claims, item_intervals, model, paper, plots, scoring, tested
from .load import load_analytic, load_results

TEMPLATES = Path(__file__).parent / "templates"
CSV_COLUMNS = (
    "task", "scale", "variant", "display_name", "ablates", "state", "reason", "metric", "higher_is_better", "gate",
    "trivial_baseline", "trivial_baseline_value", "learn_margin", "rank",
    "mean", "ci95_low", "ci95_high", "n", "diff_vs_qkv", "diff_ci95_low", "diff_ci95_high", "diff_item_ci95_low",
    "diff_item_ci95_high", "diff_relative",
    "significant", "p_value", "q_value", "ci_method", "parameters", "train_flops_per_token", "train_flops_per_fit",
    "n_heads", "kv_heads", "head_dim",
    "tensors_per_head",
    "context_length", "kv_bytes_per_token", "kv_bytes_at_context", "kv_bytes_at_8k", "kv_bytes_at_32k",
    "kv_reduction", "kv_measured_bytes_held", "kv_measured_reduction", "examples_per_second",
    "decode_tokens_per_second", "peak_memory_bytes",
    "best_params", "trials_finished", "trials_budget", "seeds", "data_kind", "data_name", "pareto_front", "git_sha",
    "created_at", "mlflow_url", "cell_id",
)  # fmt: skip


@dataclass(frozen=True)
class Built:
    """What a build wrote, and the result files it had to skip."""

    index: Path
    json: Path
    csv: Path
    problems: list[str] = field(default_factory=list)


def board(
    records: Sequence[CellRecord],
    problems: list[str],
    stale: Mapping[str, str],
    analytic: Mapping[str, Any] | None = None,
    catalog: Mapping[str, Mapping[str, Any]] | None = None,
    earlier: changes.Earlier | None = None,
) -> dict[str, Any]:
    """The whole leaderboard as one JSON-able dict (the source of all three output files).

    Args:
        records: Valid cell results.
        problems: One message per result file that was skipped.
        stale: cell id -> why its result no longer matches the code.
        analytic: The study's shapes measured (`results/analytic.json`), where present.
        catalog: variant id -> what the registry says of it beyond the records (`reference`), where known.
        earlier: Earlier boards to say what changed against (`changes.since`).

    Returns:
        A dict with `cards` (one verdict card per variant, `cards.make`), `changes` (`changes.since`),
        `groups` (task tables, each with its trivial baseline and learning gate),
        `overview`, `paper`, `claims` and `problems`. Tasks that do not pass the gate are listed in
        `overview.left_out` and take no part in ranks, fronts, claims or the paper comparison.
    """
    stale = {k: str(v) for k, v in sorted(stale.items())}
    groups = model.make_groups(records, stale)
    for group in groups:
        group["plot"] = plots.scatter(group)
        _mark_front(group)
        for row in group["rows"]:  # a contributor's variant is marked wherever it shows
            row["contributed"] = bool(((catalog or {}).get(row["variant"]) or {}).get("contributed"))
    excluded = model.left_out(groups)
    cells = model.gated(model.current_cells(records, stale), excluded)
    left = [{"task": task, "why": why} for task, why in excluded.items()]  # in the groups' task order
    verdicts = cards.make(groups, catalog or {})
    return {
        # 2: metric-aware intervals, BH q-values, tie-aware ranks, aggregates, claim tests;
        # 3: ablation rows and the "+" ablation report, analytic checks measured at the study's shape;
        # 4: verdict cards (`cards`) and the verdicts changed against an earlier board (`changes`)
        "schema_version": 4,
        "cells": len(records),
        "problems": sorted(problems),
        "baseline": model.BASELINE,
        "mlflow_ui": model.MLFLOW_UI,
        "groups": groups,
        "cards": verdicts,
        "changes": changes.since({"groups": groups}, earlier),
        "card_plots": [{"family": f, "plot": cards.family_plot(verdicts, f)} for f in cards.families_of(verdicts)],
        "overview": overview(groups, left),
        "methods": {
            "cards": cards.NOTE,
            "intervals": scoring.INTERVAL_NOTE,
            "item_intervals": item_intervals.NOTE,
            "stars": scoring.STAR_NOTE,
            "ranks": scoring.RANK_NOTE,
            "budget": budget.NOTE,
            "seeds": model.seeds_note(records),
            "tuning": model.TUNING_NOTE,
        },
        "paper": paper.side_by_side(cells, excluded),
        "claims": claims.evaluate(cells, excluded),
        "tested_claims": tested.evaluate(cells, excluded),
        "analytic": claims.analytic_checks(analytic),
        "compare": compare_view(groups),
        "plus_ablation": tested.plus_ablation(model.gated(model.current_cells(records, stale, True), excluded)),
    }


def overview(groups: list[dict[str, Any]], left: list[dict[str, str]]) -> dict[str, Any]:
    """Aggregates and mean ranks over the ranked tasks, variants that ran fewer than half of them apart."""
    ranked = model.ranked_task_count(groups)
    aggregates = scoring.aggregates(groups, model.BASELINE)
    aggregates["rows"], aggregates["partial"] = model.by_coverage(aggregates["rows"], ranked)
    ranks, partial = model.by_coverage(model.mean_ranks(groups), ranked)
    return {"aggregates": aggregates, "mean_ranks": ranks, "mean_ranks_partial": partial,
            "ranked_tasks": ranked, "left_out": left}  # fmt: skip


def compare_view(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """What the compare view needs: every variant with a fresh result, and per task its per-seed values.

    The page's script pairs the chosen variants' seeds itself (mean difference with a t interval over
    shared seeds, the same figure as `stats.paired` gives on the natural scale), so any 2-4 of them
    can be compared without a table per pair. Values travel as `data-` attributes, never as script.
    """
    names: dict[str, str] = {}
    tasks = []
    for group in groups:
        if not group["primary"]:
            continue
        rows = [r for r in group["rows"] if r["state"] == "ok" and r.get("seed_values")]
        for row in rows:
            names.setdefault(row["variant"], row["display_name"])
        seeds = {
            r["variant"]: ";".join(f"{seed}:{value!r}" for seed, value in sorted(r["seed_values"].items()))
            for r in rows
        }
        tasks.append({"task": group["task"], "anchor": group["anchor"], "family": group["family"],
                      "metric": group["metric"], "higher_is_better": group["higher_is_better"],
                      "learns": group["gate"]["learns"], "seeds": seeds})  # fmt: skip
    order = sorted(names, key=lambda v: (v != model.BASELINE, v))
    families = sorted({t["family"] for t in tasks if t["family"]})
    return {"variants": [{"id": v, "name": names[v]} for v in order], "tasks": tasks, "families": families}


def _mark_front(group: dict[str, Any]) -> None:
    """Flag the rows on the group's Pareto front (fewer KV bytes at the long context, better quality);
    none unless it learns."""
    rows = [r for r in group["rows"] if model.competes(r) and r.get("kv_bytes_per_token") is not None]
    rows = rows if group["gate"]["learns"] else []
    key, _ = plots.cache_axis(rows)
    front = set(plots.pareto_front([(r[key], r["mean"]) for r in rows], group["higher_is_better"]))
    for row in group["rows"]:
        row["pareto_front"] = False
    for i, row in enumerate(rows):
        row["pareto_front"] = i in front


def _csv_safe(value: Any) -> Any:
    """Neutralise spreadsheet formulas in text cells (a display name could start with '=')."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _params_text(params: Mapping[str, Any]) -> str:
    """Hyperparameters as compact JSON, keys sorted: one CSV cell a program can parse back."""
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":")) if params else ""


def _csv_row(row: Mapping[str, Any], group: Mapping[str, Any]) -> dict[str, Any]:
    comp = row.get("vs_baseline") or {}
    trivial = group.get("trivial_baseline") or {}
    measured = row.get("kv_measured") or {}
    source = row.get("data_source") or {}
    prov = row.get("provenance") or {}
    item_low, item_high = comp.get("item_interval") or (None, None)  # the seed x item interval, where there is one
    flat = {
        **{k: row.get(k) for k in CSV_COLUMNS if k in row},
        "reason": row.get("stale_reason") or row.get("reason"),
        "diff_vs_qkv": comp.get("mean_diff"),
        "diff_ci95_low": comp.get("ci95_low"),
        "diff_ci95_high": comp.get("ci95_high"),
        "diff_item_ci95_low": item_low,
        "diff_item_ci95_high": item_high,
        "diff_relative": comp.get("relative"),
        "significant": comp.get("significant"),
        "p_value": comp.get("p_value"),
        "q_value": comp.get("q_value"),
        "kv_measured_bytes_held": measured.get("bytes_held"),
        "seeds": " ".join(str(s) for s in row.get("seeds") or []),
        "data_kind": source.get("kind"),
        "data_name": source.get("name"),
        "git_sha": prov.get("git_sha"),
        "gate": group["gate"]["status"],
        "trivial_baseline": trivial.get("name"),
        "trivial_baseline_value": trivial.get("value"),
        "learn_margin": trivial.get("learn_margin"),
        "best_params": _params_text(row.get("best_params") or {}),
    }
    return {k: _csv_safe("" if flat.get(k) is None else flat[k]) for k in CSV_COLUMNS}


def render_csv(data: Mapping[str, Any]) -> str:
    """One line per cell, in page order."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for group in data["groups"]:
        for row in group["rows"]:
            writer.writerow(_csv_row(row, group))
    return out.getvalue()


def render_json(data: Mapping[str, Any]) -> str:
    """The model as JSON, keys sorted; the SVG geometry and the compare view are left out (layout, not data)."""
    groups = [{k: v for k, v in g.items() if k != "plot"} for g in data["groups"]]
    rest = {
        k: v for k, v in data.items() if k not in ("compare", "card_plots")
    }  # the page's view of per-seed values in groups
    return json.dumps({**rest, "groups": groups}, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _num(value: Any, spec: str = ".4g") -> str:
    if value is None or isinstance(value, bool):
        return "–"
    return format(value, spec)


def _int(value: Any) -> str:
    return "–" if value is None or isinstance(value, bool) else f"{value:,.0f}"


def _mib(value: Any) -> str:
    return "–" if value is None or isinstance(value, bool) else f"{value / 2**20:,.0f} MiB"


def _size(value: Any) -> str:
    """Bytes in the largest binary unit that keeps the figure at 1 or more: 8.0 KiB, 16.0 MiB."""
    if value is None or isinstance(value, bool):
        return "–"
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = min(len(units) - 1, int(math.log(value, 1024)) if value >= 1 else 0)
    return f"{value / 1024**power:,.1f} {units[power]}" if power else f"{value:,.0f} B"


def _pct(value: Any, signed: bool = False) -> str:
    if value is None:
        return "–"
    return format(value * 100, "+.1f" if signed else ".1f") + "%"


def _sortkey(value: Any) -> str:
    """A data-sort attribute value: repr of a number, '' for none."""
    return "" if value is None or isinstance(value, bool) else repr(float(value))


def _params(params: Mapping[str, Any]) -> str:
    """Hyperparameters for a table cell: "lr=0.003, weight_decay=0.0001"."""
    shown = (f"{k}={format(v, '.3g') if isinstance(v, float) else v}" for k, v in sorted(params.items()))
    return ", ".join(shown) or "–"


def _pretty(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def environment() -> jinja2.Environment:
    """The Jinja environment: autoescaping on for everything, strict about undefined names."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        num=_num, int=_int, mib=_mib, size=_size, pct=_pct, sortkey=_sortkey, pretty=_pretty, params=_params
    )
    return env


def render_html(data: Mapping[str, Any]) -> str:
    """The page; its Content-Security-Policy allows only our own script, by hash, and no network."""
    script = (TEMPLATES / "sort.js").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    # Markup on our own constant script (never on result data): it must reach the page byte for byte
    return environment().get_template("index.html.j2").render(board=data, script=Markup(script), script_hash=digest)


def render_variant(data: Mapping[str, Any], card: Mapping[str, Any]) -> str:
    """A variant's own page: its card, what it is, and every task's result with its budget curve and seeds."""
    rows = [
        {"group": g, "row": r, "base": next((b for b in g["rows"] if b["variant"] == model.BASELINE), None)}
        for g in data["groups"]
        for r in g["rows"]
        if r["variant"] == card["variant"]
    ]
    return environment().get_template("variant.html.j2").render(board=data, card=card, results=rows)


def _write(path: Path, text: str) -> None:
    """Written whole through a temp file of its own, so a reader never sees half a page and two runs
    writing the board at once each replace it whole (the last one wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def build_report(
    results_dir: Path,
    out_dir: Path | None = None,
    stale: Mapping[str, str] | None = None,
    catalog: Mapping[str, Mapping[str, Any]] | None = None,
    earlier: changes.Earlier | None = None,
) -> Built:
    """Build the leaderboard and say what was written and which result files were skipped.

    Args:
        results_dir: The results folder (holding `cells/*.json`).
        out_dir: Where to write; default `results_dir / "leaderboard"`.
        stale: cell id -> why the stored result no longer matches the code (computed by the caller).
        catalog: variant id -> what the registry says of it beyond the records (`reference`), where known.
        earlier: Earlier boards to say what changed against (`changes.since`).

    Returns:
        The paths written and the problems found (also shown on the page).
    """
    out = out_dir if out_dir is not None else results_dir / "leaderboard"
    out.mkdir(parents=True, exist_ok=True)
    records, problems = load_results(results_dir)
    data = board(records, problems, stale or {}, load_analytic(results_dir), catalog, earlier)
    built = Built(out / "index.html", out / "leaderboard.json", out / "leaderboard.csv", list(data["problems"]))
    _write(built.index, render_html(data))
    _write(built.json, render_json(data))
    _write(built.csv, render_csv(data))
    for card in data["cards"]:
        _write(out / card["page"], render_variant(data, card))
    return built


def build(
    results_dir: Path,
    out_dir: Path | None = None,
    stale: Mapping[str, str] | None = None,
    catalog: Mapping[str, Mapping[str, Any]] | None = None,
    earlier: changes.Earlier | None = None,
) -> Path:
    """Build the leaderboard; print each skipped result file to stderr; return the index.html path.

    Args:
        results_dir: The results folder (holding `cells/*.json`).
        out_dir: Where to write; default `results_dir / "leaderboard"`.
        stale: cell id -> why the stored result no longer matches the code (computed by the caller).
        catalog: variant id -> what the registry says of it beyond the records (`reference`), where known.
        earlier: Earlier boards to say what changed against (`changes.since`).

    Returns:
        The path of `index.html`; `leaderboard.json` and `leaderboard.csv` sit beside it.
    """
    built = build_report(results_dir, out_dir, stale, catalog, earlier)
    for problem in built.problems:
        print(f"leaderboard: skipped {problem}", file=sys.stderr)
    return built.index
