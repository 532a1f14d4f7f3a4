"""Data preparation: materialise every task's data into the cache folder, and remember its source."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.record.store import write_json_atomic

SOURCES_FILE = "sources.json"


def default_data_dir() -> Path:
    """`$BENCH_DATA_DIR`, else `$XDG_CACHE_HOME/bench/data` (usually ~/.cache/bench/data)."""
    if os.environ.get("BENCH_DATA_DIR"):
        return Path(os.environ["BENCH_DATA_DIR"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "bench" / "data"


def recorded_sources(data_dir: Path) -> dict[str, dict[str, str]]:
    """Task id -> the DataSource its last `prepare` reported (empty if never prepared)."""
    path = data_dir / SOURCES_FILE
    if not path.exists():
        return {}
    try:
        sources = json.loads(path.read_text())
    except (OSError, ValueError):
        sources = None
    # a damaged record only loses the display; `bench data prepare` rewrites it
    return sources if isinstance(sources, dict) else {}


@dataclass
class PrepareOutcome:
    task: str
    source: dict[str, str] | None
    error: str | None


def prepare_tasks(tasks: list[Any], data_dir: Path) -> list[PrepareOutcome]:
    """Run `prepare` of each task with progress; a failing task is reported and the others go on."""
    from rich.progress import Progress

    from bench.console import make_console
    from bench.plan.validate import check_data_dir
    from bench_tasks.base import DataError

    check_data_dir(data_dir)
    outcomes: list[PrepareOutcome] = []
    with Progress(console=make_console(stderr=True), transient=True) as progress:
        job = progress.add_task("preparing data", total=len(tasks))
        for task in tasks:
            progress.update(job, description=f"preparing {task.id}")
            try:
                source = task.prepare(data_dir).as_dict()
                outcomes.append(PrepareOutcome(task.id, source, None))
            except DataError as exc:
                outcomes.append(PrepareOutcome(task.id, None, str(exc)))
            except Exception as exc:  # a plugin's bug fails its own task's cells, never the others'
                error = f"{task.id}'s prepare raised {type(exc).__name__}: {exc} (a bug in the task plugin)"
                outcomes.append(PrepareOutcome(task.id, None, error))
            progress.advance(job)
    sources = recorded_sources(data_dir)
    sources.update({o.task: o.source for o in outcomes if o.source is not None})
    write_json_atomic(data_dir / SOURCES_FILE, sources)
    return outcomes
