"""Where a run's compute went, and what each saving mechanism spared, read from a results folder.

Per task: the cells that trained, their final fits and the seconds their cells took (tuning and final
fits, from each record's `timing`), and per mechanism the share of work it saved against running
without it:

    adaptive seeds   fits run / fits at every cell's seed cap (the design's last look)
    stop at target   a speed task's optimiser steps / its fits' caps (fits stop where they reach it)
    reuse            fits scored on another cell's fitted models instead of retrained (`evaluated_on`)
    pruning          a tuned cell's trials in full-fit equivalents / its trial count

With `--before DIR` (the results of an earlier run, e.g. a checkout of an older commit), the cell time
per task is printed beside it. Nothing is timed here: the figures are the run's own.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.measure.perf.common import PerfContext

if TYPE_CHECKING:
    from rich.console import RenderableType


@dataclass(frozen=True)
class BudgetSettings:
    """Attributes:
    results: The results folder read.
    before: An earlier run's results folder, whose cell time per task is shown beside; None: none.
    """

    results: str = "results"
    before: str | None = None


def settings(quick: bool, repeats: int | None) -> BudgetSettings:
    return BudgetSettings()


def _records(results: Path) -> Iterable[dict[str, Any]]:
    for path in sorted((results / "cells").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("status") == "ok" and record.get("per_seed"):
            yield record


def _seconds(record: Mapping[str, Any]) -> float:
    timing = record.get("timing") or {}
    return float(timing.get("final_seconds") or 0.0) + float(timing.get("tuning_seconds") or 0.0)


def per_task(results: Path) -> dict[str, dict[str, float]]:
    """task -> {cells, fits, seconds, seed_cap_fits, steps, cap_steps, reused, trials, trial_fits}."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for record in _records(results):
        row, seeds = out[record["task"]["id"]], record["per_seed"]
        row["cells"] += 1
        row["fits"] += len(seeds)
        row["seconds"] += _seconds(record)
        design = record.get("seed_design") or {}
        row["seed_cap_fits"] += len(design.get("seeds") or []) or len(seeds)
        row["reused"] += float(record.get("fits_saved") or 0)
        cap = (record["task"].get("speed_target") or {}).get("cap")
        if cap:
            row["steps"] += sum(float(s.get("steps") or 0) for s in seeds)
            row["cap_steps"] += cap * len(seeds)
        tuning = record.get("tuning") or {}
        if tuning.get("trials_finished") and tuning.get("cost_full_fits") is not None:
            row["trials"] += float(tuning["trials_finished"])
            row["trial_fits"] += float(tuning["cost_full_fits"])
    return {task: dict(row) for task, row in out.items()}


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def measure(settings: BudgetSettings, ctx: PerfContext) -> dict[str, Any]:
    results = Path(settings.results)
    if not (results / "cells").is_dir():
        raise ValueError(f"no results in {results}/cells; run `bench run --results {results}` first")
    ctx.note(f"reading {results}")
    tasks = per_task(results)
    before = per_task(Path(settings.before)) if settings.before else {}
    rows: list[dict[str, Any]] = []
    for task, row in tasks.items():
        rows.append({
            "task": task, "cells": int(row["cells"]), "fits": int(row["fits"]), "seconds": row["seconds"],
            "seconds_before": before.get(task, {}).get("seconds"),
            "adaptive_seeds_saved": 1 - row["fits"] / row["seed_cap_fits"] if row["seed_cap_fits"] else None,
            "stop_at_target_saved": 1 - row["steps"] / row["cap_steps"] if row.get("cap_steps") else None,
            "reused_fits": int(row["reused"]),
            "tuning_fits_per_trial": _share(row.get("trial_fits", 0.0), row.get("trials", 0.0)),
        })  # fmt: skip
    summed = ("cells", "fits", "seconds", "reused_fits")
    total: dict[str, float | None] = {key: sum(r[key] for r in rows) for key in summed}
    cap_fits = sum(t["seed_cap_fits"] for t in tasks.values())
    total["adaptive_seeds_saved"] = 1 - float(total["fits"] or 0) / cap_fits if cap_fits else None
    total["seconds_before"] = sum(t["seconds"] for t in before.values()) if before else None
    return {"results": str(results), "before": settings.before, "tasks": rows, "total": total}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def render(result: dict[str, Any]) -> list[RenderableType]:
    from rich.table import Table

    title = f"compute per task ({result['results']}): cell seconds, fits, and the share each mechanism saved"
    table = Table(title=title)
    columns = ["task", "cells", "fits", "cell s", "before s", "adaptive seeds", "stop at target", "reused fits",
               "tuning fits/trial"]  # fmt: skip
    for name in columns:
        table.add_column(name, justify="left" if name == "task" else "right")
    for r in [*result["tasks"], {"task": "total", **result["total"]}]:
        before, per_trial = r.get("seconds_before"), r.get("tuning_fits_per_trial")
        table.add_row(r["task"], str(r["cells"]), str(r["fits"]), f"{r['seconds']:.0f}",
                      "-" if before is None else f"{before:.0f}", _pct(r.get("adaptive_seeds_saved")),
                      _pct(r.get("stop_at_target_saved")), str(r["reused_fits"]),
                      "-" if per_trial is None else f"{per_trial:.2f}")  # fmt: skip
    return [table]
