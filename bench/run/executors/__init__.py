"""Where cells run: one small interface, one module per engine.

Every engine runs the same `bench.run.cells.run_cell` steps against the same results store and Optuna
storage; they differ only in where the work happens and who writes the files:

- `local`: in this process one cell after another, or in `--jobs N` worker processes on this machine;
- `ray`: each cell a Ray task on a cluster (`--ray auto|ADDRESS|local`); the driver alone writes the
  results store, so the nodes share no file system.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.options import RunOptions
    from bench.plan.matrix import Cell
    from bench.plan.suites import Suite


def run_cells(todo: list[Cell], suite: Suite, options: RunOptions, console: Any) -> None:
    """Run `todo` (cells with work left, none n/a) on the engine `options` choose."""
    if options.ray:
        from bench.run.executors.ray import run_on_ray

        run_on_ray(todo, suite, options, console)
        return
    from bench.run.executors import local

    if options.jobs > 1 and len(todo) > 1:
        local.run_in_processes(todo, suite, options, console)
    else:
        local.run_here(todo, suite, options, console)
