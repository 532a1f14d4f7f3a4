"""Read the results store without importing `bench`: `results_dir/cells/*.json`, schema version 1.

A file that does not parse or does not match the schema becomes one problem message naming the file
(relative to the results folder, so the page is the same wherever the folder lives) and is skipped;
the rest of the board still builds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("ok", "n/a", "failed", "diverged")

# (path, expected type) checked on every record; dotted paths reach into nested objects
COMMON_FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("cell_id", str),
    ("status", str),
    ("task", dict),
    ("task.id", str),
    ("task.metric", str),
    ("task.higher_is_better", bool),
    ("variant", dict),
    ("variant.id", str),
    ("variant.display_name", str),
)
OK_FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("summary", dict),
    ("summary.mean", (int, float)),
    ("summary.ci95_low", (int, float)),
    ("summary.ci95_high", (int, float)),
    ("summary.n", int),
    ("costs", dict),
    ("per_seed", list),
    ("tuning", dict),
    ("seeds", list),
)


def _get(record: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path, or a sentinel KeyError instance when a step is missing."""
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return KeyError(dotted)
        value = value[part]
    return value


def _type_problem(value: Any, path: str, expected: type | tuple[type, ...]) -> str | None:
    if isinstance(value, KeyError):
        return f"missing {path}"
    # bool is an int in Python: a number field holding true/false is still wrong
    if expected is not bool and isinstance(value, bool):
        return f"{path} is a boolean"
    if not isinstance(value, expected):
        names = expected.__name__ if isinstance(expected, type) else "/".join(t.__name__ for t in expected)
        return f"{path} is {type(value).__name__}, expected {names}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path} is {value}"
    return None


def schema_problems(record: Any) -> list[str]:
    """What is wrong with a parsed cell result, as short phrases; empty when it matches the schema.

    Args:
        record: The parsed JSON of one cell file.

    Returns:
        Problems such as "missing summary.mean"; an empty list for a valid record.
    """
    if not isinstance(record, dict):
        return [f"top level is {type(record).__name__}, expected an object"]
    if record.get("schema_version") != SCHEMA_VERSION:
        return [f"schema_version {record.get('schema_version')!r}, expected {SCHEMA_VERSION}"]
    problems = [p for path, kind in COMMON_FIELDS if (p := _type_problem(_get(record, path), path, kind))]
    if problems:
        return problems
    status = record["status"]
    if status not in STATUSES:
        return [f"status {status!r}, expected one of {', '.join(STATUSES)}"]
    if status == "ok":
        problems = [p for path, kind in OK_FIELDS if (p := _type_problem(_get(record, path), path, kind))]
    elif not isinstance(record.get("reason"), str):
        problems = [f"a {status} cell needs a reason string"]
    return problems


def load_results(results_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every valid cell result under `results_dir/cells`, plus one message per file that was skipped.

    Args:
        results_dir: The results folder (the one holding `cells/`).

    Returns:
        (records sorted by file name, problem messages sorted by file name).
    """
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    for path in sorted((results_dir / "cells").glob("*.json")):
        name = path.relative_to(results_dir).as_posix()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{name}: not readable JSON ({exc}); fix or delete the file and re-run the cell")
            continue
        found = schema_problems(data)
        if found:
            problems.append(f"{name}: does not match the result schema ({'; '.join(found)}); re-run the cell")
            continue
        records.append(data)
    return records, problems


def load_analytic(results_dir: Path) -> dict[str, Any] | None:
    """`results_dir/analytic/study_shape.json` (written by `bench run`), or None when absent or unreadable."""
    path = results_dir / "analytic" / "study_shape.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("variants"), dict) else None
