"""`bench verify`: stored seeds fitted again and compared with their records.

A chosen or random sample of a suite's stored cells; for each, one or more of its seeds refitted with the
record's own settings, seed and thread count, and its validation and test metrics compared with the
record's. Where the record was made on this setup (the same device and thread count, the same torch,
Lightning and numpy), the fits must agree bit for bit; elsewhere within `--tolerance` (relative). Nothing
is written: the results folder is only read.
"""

from __future__ import annotations

import math
import random
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rich.console import Console

    from bench.options import RunOptions
    from bench.plan.matrix import Cell
    from bench.plan.suites import Suite

#: the packages whose versions decide whether a fit can be expected to repeat bit for bit
EXACT_PACKAGES = ("torch", "lightning", "numpy")
IDENTICAL, WITHIN, DIFFERS = "identical", "within tolerance", "differs"


@dataclass(frozen=True)
class Check:
    """One stored seed refitted: how its metrics compare with the record's."""

    cell_id: str
    label: str
    seed: int
    same_setup: bool  # recorded on this device, thread count and package versions: bit for bit expected
    worst: float  # the largest relative difference over the compared metrics
    verdict: str  # IDENTICAL, WITHIN or DIFFERS
    differences: dict[str, tuple[float, float]] = field(default_factory=dict)  # "test/accuracy": (stored, now)


def _relative(stored: float, now: float) -> float:
    if stored == now or (math.isnan(stored) and math.isnan(now)):
        return 0.0
    return abs(now - stored) / max(abs(stored), 1e-12)


def compare(stored: dict[str, dict[str, float]], now: dict[str, dict[str, float]]) -> dict[str, tuple[float, float]]:
    """`split/metric` -> (stored, now) for every metric the record holds, the refit's missing one as NaN."""
    return {f"{split}/{name}": (float(value), float(now.get(split, {}).get(name, math.nan)))
            for split, metrics in stored.items() for name, value in metrics.items()}  # fmt: skip


def verdict(differences: dict[str, tuple[float, float]], same_setup: bool, tolerance: float) -> tuple[float, str]:
    """The largest relative difference and what it means: on the record's own setup only identical passes."""
    worst = max((_relative(a, b) for a, b in differences.values()), default=0.0)
    if worst == 0.0:
        return worst, IDENTICAL
    return worst, WITHIN if not same_setup and worst <= tolerance else DIFFERS


def recorded_threads(provenance: dict[str, Any]) -> int | None:
    """The torch threads a record's fits ran on (its device reads "cpu: ..., N threads")."""
    found = re.search(r"(\d+) threads", str(provenance.get("device", "")))
    return int(found.group(1)) if found else None


def same_setup(recorded: dict[str, Any], here: dict[str, Any]) -> bool:
    packages, ours = recorded.get("packages") or {}, here.get("packages") or {}
    return recorded.get("device") == here.get("device") and all(
        packages.get(name) == ours.get(name) for name in EXACT_PACKAGES
    )


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def choose(cells: list[Cell], records: dict[str, dict[str, Any]], ids: list[str], sample: int, pick: int) -> list[Cell]:
    """The cells named by `ids` (each must hold an ok record), else `sample` of the ok ones drawn with `pick`."""
    held = [c for c in cells if records.get(c.id, {}).get("status") == "ok"]
    if ids:
        known = {c.id: c for c in held}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ValueError(f"--cells {','.join(unknown)}: no ok result of this suite has that id; "
                             "`bench run --dry-run` lists the suite's cells and their ids")  # fmt: skip
        return [known[i] for i in ids]
    if sample < 1:
        raise ValueError(f"--sample {sample}: give a positive number of cells, or name them with --cells")
    if not held:
        raise ValueError("no ok cell results to verify in this suite; `bench run` makes them")
    return random.Random(pick).sample(held, min(sample, len(held)))


def verify(
    suite: Suite, options: RunOptions, ids: list[str], sample: int, pick: int, seeds: list[int] | None,
    tolerance: float, console: Console,
) -> list[Check]:  # fmt: skip
    """Refit each chosen cell's seeds (its first stored seed unless `seeds`) and compare; nothing is written."""
    from bench.options import storage_url
    from bench.plan import matrix
    from bench.plan.validate import check_data_dir
    from bench.record.provenance import device, provenance
    from bench.record.store import ResultStore
    from bench.record.tracking import NoTracker
    from bench.registry import tasks, variants
    from bench.run.cells import RunContext, refit
    from bench.run.data import prepare_tasks
    from bench.run.progress import RunProgress

    if tolerance < 0:
        raise ValueError(f"--tolerance {tolerance}: give 0 or a positive relative difference, e.g. 1e-4")
    if not (options.results / "cells").is_dir():
        raise ValueError(f"{options.results} holds no cell results (no cells/ folder); `bench run` makes them")
    check_data_dir(options.data_dir)
    store = ResultStore(options.results)  # read only: no storage opened, no tracking, nothing written
    expanded = matrix.expand(suite, tasks().resolve(list(suite.tasks)), matrix.resolve_variants(suite, variants()))
    cells = [c for c in expanded if not c.na_reason]
    records = {c.id: store.record(c.id) for c in cells}
    chosen = choose(cells, records, ids, sample, pick)
    failed = [o for o in prepare_tasks(list({c.task.id: c.task for c in chosen}.values()), options.data_dir) if o.error]
    if failed:
        raise ValueError(f"data of {failed[0].task}: {failed[0].error}")
    ctx = RunContext(store, storage_url(options), NoTracker(), options.data_dir, RunProgress(console, 0))
    checks = []
    for cell in chosen:
        record = records[cell.id]
        by_seed = {s["seed"]: s for s in record["per_seed"]}
        wanted = seeds if seeds is not None else [min(by_seed)]
        missing = [s for s in wanted if s not in by_seed]
        if missing:
            raise ValueError(f"{cell.label} ({cell.id}) holds no seed {missing}; it holds {sorted(by_seed)}")
        for seed in wanted:
            stored = by_seed[seed]
            with _threads(recorded_threads(record["provenance"])):
                here = dict(provenance(), device=device())  # with the record's thread count set
                result = refit(cell, ctx, stored["params"], seed)
            same = same_setup(record["provenance"], here)
            differences = compare(
                {"val": stored["val"], "test": stored["test"]}, {"val": result.val, "test": result.test}
            )
            worst, said = verdict(differences, same, tolerance)
            checks.append(Check(cell.id, cell.label, seed, same, worst, said, differences))
            apart = [f"{k} {a:.6g} now {b:.6g}" for k, (a, b) in differences.items() if _relative(a, b) > 0]
            console.print(f"{cell.label} seed {seed}: {said} (largest relative difference {worst:.3g})"
                          + (f": {'; '.join(apart)}" if said != IDENTICAL else ""))  # fmt: skip
    return checks


def table(checks: list[Check], tolerance: float) -> Any:
    from rich.table import Table

    out = Table(title=f"bench verify: stored seeds fitted again (tolerance {tolerance:g} where the setup differs)")
    for name in ("cell", "id", "seed", "setup", "largest relative difference", "verdict"):
        out.add_column(name, justify="right" if name in ("seed", "largest relative difference") else "left")
    for c in checks:
        colour = {IDENTICAL: "green", WITHIN: "yellow", DIFFERS: "red"}[c.verdict]
        setup = "same as the record's" if c.same_setup else "different"
        out.add_row(c.label, c.cell_id, str(c.seed), setup, f"{c.worst:.3g}", f"[{colour}]{c.verdict}[/]")
    return out
