"""Read the results store without importing `bench`: `results_dir/cells/*.json`, each a `bench_record.CellRecord`.

A file that does not parse or does not match the schema becomes one problem message naming the file
(relative to the results folder, so the page is the same wherever the folder lives) and is skipped;
the rest of the board still builds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench_record import CellRecord, SchemaError
from bench_record.schema import VersionError


def load_results(results_dir: Path) -> tuple[list[CellRecord], list[str]]:
    """Every valid cell result under `results_dir/cells`, plus one message per file that was skipped.

    Args:
        results_dir: The results folder (the one holding `cells/`).

    Returns:
        (records sorted by file name, problem messages sorted by file name).
    """
    records: list[CellRecord] = []
    problems: list[str] = []
    for path in sorted((results_dir / "cells").glob("*.json")):
        name = path.relative_to(results_dir).as_posix()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{name}: not readable JSON ({exc}); fix or delete the file and re-run the cell")
            continue
        try:
            records.append(CellRecord.from_dict(data))
        except VersionError as exc:  # its message says what to run
            problems.append(f"{name}: {exc}")
        except SchemaError as exc:
            problems.append(f"{name}: does not match the result schema ({exc}); re-run the cell")
    return records, problems


def load_analytic(results_dir: Path) -> dict[str, Any] | None:
    """`results_dir/analytic/study_shape.json` (written by `bench run`), or None when absent or unreadable."""
    path = results_dir / "analytic" / "study_shape.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("variants"), dict) else None
