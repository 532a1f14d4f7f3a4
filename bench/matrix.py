"""Expand a suite into cells (task x variant), each with a stable id and a status.

A cell's id hashes everything that changes its result: task id and version, variant id, version and
fields, the task config, the search space, the tuning defaults and the schema version. Seeds and the trial budget are
not in it: adding a seed or trials extends a cell instead of discarding it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.store import MAX_ATTEMPTS, SCHEMA_VERSION, ResultStore
from bench.suites import BUILTIN, Suite
from bench.tuning import SAMPLER_VERSION, TUNING_SEED, default_params, search_space

if TYPE_CHECKING:
    from bench.registry import Registry
    from bench_tasks.base import Task, TaskConfig
    from bench_variants.base import VariantSpec


@dataclass(frozen=True)
class Cell:
    """One task x variant pair of a suite, at the suite's scale."""

    task: Task
    variant: VariantSpec
    config: TaskConfig
    suite: Suite
    id: str
    na_reason: str | None = None

    @property
    def label(self) -> str:
        return f"{self.task.id} x {self.variant.id}"

    def with_seeds(self, n: int) -> Cell:
        """This cell run on its suite's first `n` seeds (adaptive seeds; the id stays: seeds extend a cell)."""
        return dataclasses.replace(self, suite=self.suite.with_seeds(n))


def cell_id(task: Task, variant: VariantSpec, config: TaskConfig) -> str:
    """12 hex digits of a hash of everything that determines the cell's result."""
    payload = {
        "schema": SCHEMA_VERSION,
        "task": [task.id, task.version],
        "variant": [variant.id, variant.version, variant.describe()],
        "config": [type(config).__name__, config.identity()],
        "search_space": search_space(task),
        "tuning": [default_params(task), SAMPLER_VERSION, TUNING_SEED],
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def task_config(task: Task, suite: Suite) -> TaskConfig:
    config = task.config(suite.scale)  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    if suite.max_epochs is not None:
        changes["max_epochs"] = suite.max_epochs
    if suite.max_steps is not None:
        changes["max_steps"] = suite.max_steps
    if suite.devices is not None:
        changes["devices"] = suite.devices
    return dataclasses.replace(config, **changes) if changes else config


def resolve_variants(suite: Suite, registry: Registry[Any]) -> list[VariantSpec]:
    from bench.registry import BUILTIN_DISTRIBUTION

    names: list[str] = []
    for name in suite.variants:
        if name == BUILTIN:
            builtin = [n for n in registry.names() if registry.origin(n) == BUILTIN_DISTRIBUTION]
            names += [n for n in builtin if not registry.get(n).ablates()]  # ablations: their own suite
        else:
            names.append(name)
    specs = registry.resolve(names)
    baseline = registry.get(suite.baseline)
    return [baseline, *[s for s in specs if s is not baseline]]  # baseline first: others compare to it


def expand(suite: Suite, tasks: list[Task], variants: list[VariantSpec]) -> list[Cell]:
    """Every task x variant cell; cells the variant cannot run are kept, marked n/a with the reason.

    A variant that computes exactly what an earlier one computes at the task's config (GQA with as
    many KV heads as query heads is QKV) is n/a too: it would repeat that cell bit for bit.
    """
    cells = []
    for task in tasks:
        config = task_config(task, suite)
        seen: dict[tuple[object, ...], VariantSpec] = {}
        for variant in variants:
            reason = task.check(variant, config) or _duplicate_of(variant, config, seen)
            cells.append(Cell(task, variant, config, suite, cell_id(task, variant, config), reason))
    return cells


def _duplicate_of(variant: VariantSpec, config: TaskConfig, seen: dict[tuple[object, ...], VariantSpec]) -> str | None:
    key = variant.mechanism(config.attention)
    if key is None:
        return None
    if key in seen:
        other = seen[key]
        where = variant.coincidence(config.attention)
        return f"coincides with {other.display_name} ({other.id}) {where}; not run"
    seen[key] = variant
    return None


def status(cell: Cell, store: ResultStore, trials_done: int) -> str:
    """'n/a', 'cached' (nothing to do), 'gave up' (failed `MAX_ATTEMPTS` times), 'partial' or 'to run'."""
    if cell.na_reason:
        return "n/a"
    path = store.find(cell.id)
    if path is not None:
        try:
            done = store.load(path)
        except ValueError:
            done = {}
        if done.get("status") == "diverged":
            return "cached"  # deterministic for its id: running it again would diverge again
        seeds_done = {s["seed"] for s in done.get("per_seed", [])}
        if done.get("status") == "ok" and set(cell.suite.seeds) <= seeds_done and trials_done >= cell.suite.trials:
            return "cached"
    saved_seeds = store.seed_results(cell.id)
    all_saved = trials_done >= cell.suite.trials and set(cell.suite.seeds) <= set(saved_seeds)
    if store.attempts(cell.id)["count"] >= MAX_ATTEMPTS and not all_saved:  # all saved: only assembly is left
        return "gave up"  # not tried again until `bench run --retry-failed`
    if trials_done or saved_seeds:
        return "partial"
    return "to run"
