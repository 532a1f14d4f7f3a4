"""Which stored results no longer match the code: a task or variant changed version, fields or
search space since the cell ran (its id would differ now), or is no longer registered."""

from __future__ import annotations

import dataclasses
from typing import Any

from bench.plan.matrix import cell_id
from bench.registry import tasks, variants


def _current_id(record: dict[str, Any], task: Any, variant: Any) -> str | None:
    scale = record.get("scale")
    if scale is None:
        return None
    fields = {k: v for k, v in record.get("config", {}).items() if k != "type"}
    try:
        config = dataclasses.replace(task.config(scale), **fields)
    except (TypeError, KeyError, ValueError):
        return None
    return cell_id(task, variant, config)


def stale_reasons(records: list[dict[str, Any]]) -> dict[str, str]:
    """cell id -> why the stored result is stale, for every stale record."""
    task_registry, variant_registry = tasks(), variants()
    out: dict[str, str] = {}
    for record in records:
        t_id, v_id = record["task"]["id"], record["variant"]["id"]
        try:
            task, variant = task_registry.get(t_id), variant_registry.get(v_id)
        except (KeyError, ImportError) as exc:
            out[record["cell_id"]] = f"no longer runnable: {exc}"
            continue
        ran_task, ran_variant = record["task"].get("version"), record["variant"].get("version")
        if task.version != ran_task:
            out[record["cell_id"]] = f"task {t_id} is now version {task.version} (ran {ran_task})"
        elif variant.version != ran_variant:
            out[record["cell_id"]] = f"variant {v_id} is now version {variant.version} (ran {ran_variant})"
        elif _current_id(record, task, variant) not in (None, record["cell_id"]):
            out[record["cell_id"]] = "the task config, variant fields or search space changed since this ran"
    return out
