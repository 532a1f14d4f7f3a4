"""Run the chosen kinds of `bench perf`: measure, print the tables, write `<out>/<kind>.json`."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.measure.perf import KINDS
from bench.measure.perf.common import PerfContext, write_result

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True)
class PerfOptions:
    """What `bench perf` was asked for.

    Attributes:
        kinds: Which measurements, in order (see `bench.measure.perf.KINDS`).
        quick: Tiny sizes and 2-3 rounds, for a check in well under a minute.
        repeats: Rounds of every kind; None: each kind's own default.
        out: Folder of the result files.
        data_dir: Where the tasks' prepared data lives.
        threads: torch threads for every measurement, the harness's fits included;
            None: `$BENCH_THREADS` if set, else 1 for quick runs (their tiny operators gain nothing
            from a second thread, and lose most to other jobs), else torch's default.
        results, before: The results folder `budget` reads, and an earlier run's to compare with.
    """

    kinds: tuple[str, ...]
    quick: bool
    repeats: int | None
    out: Path
    data_dir: Path
    threads: int | None = None
    results: Path = Path("results")
    before: Path | None = None


def parse_kinds(value: str | None) -> tuple[str, ...]:
    """'harness,attention' -> ('harness', 'attention'); None or 'all' -> every kind."""
    if value in (None, "all"):
        return KINDS
    kinds = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    for name in kinds:
        if name not in KINDS:
            close = difflib.get_close_matches(name, KINDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Unknown perf measurement {name!r} in --only{hint} Available: {', '.join(KINDS)}")
    return kinds or KINDS


@contextmanager
def _threads(threads: int | None, quick: bool) -> Iterator[int]:
    """One torch thread count for every contender, restored afterwards (the harness's fits are given it:
    `bench.fit.train.fit` would otherwise apply `$BENCH_THREADS`)."""
    import torch

    if threads is not None and threads < 1:
        raise ValueError(f"--threads {threads}: give a positive number of threads")
    from bench.fit.train import env_threads

    before = torch.get_num_threads()
    chosen = threads or env_threads() or (1 if quick else before)
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(before)


def run_perf(options: PerfOptions) -> int:
    """Each kind in turn; returns 0 (goals missed are reported, not failures: the tests guard regressions)."""
    from bench.console import make_console

    if options.repeats is not None and options.repeats < 1:
        raise ValueError(f"--repeats {options.repeats}: give a positive number of rounds")
    console = make_console()
    with _threads(options.threads, options.quick) as threads:
        for kind in options.kinds:
            _run_kind(kind, options, threads, console)
    return 0


def _run_kind(kind: str, options: PerfOptions, threads: int, console: Console) -> Path:
    """Measure one kind with a live status line, print its tables, write its result file."""
    module = importlib.import_module(f"bench.measure.perf.{kind}")
    settings = module.settings(options.quick, options.repeats)
    if kind == "budget":  # it reads a run's results, not the machine
        settings = dataclasses.replace(settings, results=str(options.results),
                                       before=str(options.before) if options.before else None)  # fmt: skip
    console.rule(f"bench perf: {kind}{' (quick)' if options.quick else ''}, {threads} thread(s)")
    started = time.perf_counter()
    with console.status(f"{kind}: starting") as status:

        def note(message: str) -> None:
            status.update(f"{kind}: {message}")

        result = module.measure(settings, PerfContext(options.data_dir, note))
    elapsed = time.perf_counter() - started
    for renderable in module.render(result):
        console.print(renderable)
    path = write_result(options.out, kind, settings, {**result, "threads": threads, "elapsed_s": elapsed})
    console.print(f"[dim]{kind}: {elapsed:.0f} s; wrote {path}[/]")
    return path
