"""Each task's trivial baseline, computed once per task and config and kept in the results store.

The baseline (chance, a per-position majority, a linear probe, a count n-gram, a pixel-deviation
score) is the bar a task's QKV cell must clear by the task's declared margin before any variant of
that task is ranked: a task whose reference model does not learn tells nothing about attention.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.record.store import ResultStore, write_json_atomic

if TYPE_CHECKING:
    from bench.plan.matrix import Cell
    from bench_tasks.base import Task, TaskConfig


def baseline_key(task: Task, config: TaskConfig) -> str:
    """12 hex digits naming the task, its version and its config: the baseline's identity."""
    from bench_tasks.baselines import VERSION

    payload = [task.id, task.version, type(config).__name__, config.identity(), VERSION]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def baseline_path(store: ResultStore, task: Task, config: TaskConfig) -> Path:
    return store.root / "baselines" / f"{task.id}__{baseline_key(task, config)}.json"


def compute(task: Task, config: TaskConfig, data_dir: Path) -> dict[str, Any]:
    """The task's baseline as a result-file entry; an error is recorded, never raised."""
    entry: dict[str, Any] = {"task": task.id, "learn_margin": task.learn_margin, "metric": task.metric}
    started = time.perf_counter()
    try:
        found = task.baseline(data_dir, config)
    except NotImplementedError as exc:
        return {**entry, "error": str(exc)}
    except Exception as exc:  # a broken baseline leaves the task ungated, not the run stopped
        return {**entry, "error": f"{type(exc).__name__}: {exc}"}
    if not math.isfinite(found.value):
        return {**entry, "error": f"baseline {found.name!r} is not finite ({found.value})"}
    others = {k: v for k, v in found.others.items() if math.isfinite(v)}
    return {**entry, **found.as_dict(), "others": others, "seconds": round(time.perf_counter() - started, 3)}


def ensure(cells: list[Cell], store: ResultStore, data_dir: Path) -> dict[str, dict[str, Any]]:
    """Compute (or read back) the baseline of every task among `cells`; task id -> entry."""
    out: dict[str, dict[str, Any]] = {}
    for cell in cells:
        if cell.task.id in out or cell.na_reason:
            continue
        out[cell.task.id] = load_or_compute(cell.task, cell.config, store, data_dir)
    return out


def load_or_compute(task: Task, config: TaskConfig, store: ResultStore, data_dir: Path) -> dict[str, Any]:
    """The stored baseline, else computed now and stored (an unreadable file is recomputed)."""
    entry = stored(task, config, store)
    if entry is None:
        entry = compute(task, config, data_dir)
        if "error" not in entry:
            write_json_atomic(baseline_path(store, task, config), entry)
    return entry


def stored(task: Task, config: TaskConfig, store: ResultStore) -> dict[str, Any] | None:
    """The baseline a run computed before its cells started, or None."""
    path = baseline_path(store, task, config)
    try:
        entry: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return entry
