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

from bench.fit.tuning import SAMPLER_VERSION, TUNING_SEED, default_params, search_space
from bench.plan.suites import BUILTIN, Suite
from bench.record.store import MAX_ATTEMPTS, ResultStore
from bench_record import SCHEMA_VERSION

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
    #: the cell of the row whose fits this one is evaluated on (its variant `trains_as` that one's), or None
    trains_as: Cell | None = None
    #: whether a cell of the row trains as this one: its final fits keep their states for it (`bench.fit.reuse`)
    keep_states: bool = False

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
    target = task.speed_target(config)
    if target is not None:  # a speed task's target decides its result (absent elsewhere: those ids stay)
        payload["speed_target"] = dataclasses.asdict(target)
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
        row = []
        for variant in variants:
            reason = task.check(variant, config) or _duplicate_of(variant, config, seen)
            row.append(Cell(task, variant, config, suite, cell_id(task, variant, config), reason))
        cells += _link_trained(row)
    return cells


def _link_trained(row: list[Cell]) -> list[Cell]:
    """The task's row with each runnable cell whose variant trains as another runnable one's pointed at
    that cell (`trains_as`), and that cell marked to keep its fits' states (`keep_states`).

    Not at a speed target: a fit stops where its own validation reaches the target, and a variant that
    differs in evaluation may stop elsewhere, so it trains."""
    runnable = {c.variant.id: c for c in row if not c.na_reason and c.task.speed_target(c.config) is None}
    base_of = {c.id: runnable[b].id for c in runnable.values() if (b := c.variant.trains_as()) in runnable}
    keeping = {c.id: dataclasses.replace(c, keep_states=True) for c in row if c.id in base_of.values()}
    return [
        dataclasses.replace(c, trains_as=keeping[base_of[c.id]]) if c.id in base_of else keeping.get(c.id, c)
        for c in row
    ]


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


def recorded_trials(record: dict[str, Any]) -> int:
    """The trials an ok record's tuning finished: the Optuna storage is local (not committed with the
    results), so a clone of finished results knows its cells' tuning from their records alone."""
    tuning = record.get("tuning") if record.get("status") == "ok" else None
    return int(tuning.get("trials_finished", 0)) if isinstance(tuning, dict) and "best_params" in tuning else 0


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
        trials_done = max(trials_done, recorded_trials(done))
        if done.get("status") == "ok" and set(cell.suite.seeds) <= seeds_done and trials_done >= cell.suite.trials:
            return "cached"
    saved_seeds = store.seed_results(cell.id)
    all_saved = trials_done >= cell.suite.trials and set(cell.suite.seeds) <= set(saved_seeds)
    if store.attempts(cell.id)["count"] >= MAX_ATTEMPTS and not all_saved:  # all saved: only assembly is left
        return "gave up"  # not tried again until `bench run --retry-failed`
    if trials_done or saved_seeds:
        return "partial"
    return "to run"
