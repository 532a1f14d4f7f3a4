"""The `bench` command line. Heavy imports (torch, lightning, mlflow) happen inside the commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import __version__


def _add_shape_options(parser: argparse.ArgumentParser, heads: int, head_dim: int, layers: int, dtype: str) -> None:
    parser.add_argument("--heads", type=int, default=heads, help=f"query heads H (default {heads})")
    parser.add_argument("--head-dim", type=int, default=head_dim, help=f"d_head (default {head_dim})")
    parser.add_argument("--layers", type=int, default=layers, help=f"layers (default {layers})")
    parser.add_argument("--dtype", default=dtype, help=f"cache dtype: fp16, bf16 or fp32 (default {dtype})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench",
        description="Benchmark attention variants: quality, perplexity and KV-cache bytes.",
    )
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    lister = commands.add_parser("list", help="list registered variants with their cache cost")
    lister.add_argument("what", nargs="?", default="variants", choices=["variants", "tasks"], help="what to list")
    lister.add_argument("--data-dir", type=Path, default=None, help="data cache (default: $BENCH_DATA_DIR or ~/.cache)")
    _add_shape_options(lister, heads=16, head_dim=64, layers=20, dtype="fp16")
    lister.set_defaults(handler=_cmd_list)

    cache = commands.add_parser(
        "cache", help="measure KV-cache bytes by decoding through a real cache, against the derived figure"
    )
    cache.add_argument("--variants", default="all", help="comma-separated ids or display names (default: all)")
    cache.add_argument("--tokens", type=int, default=64, help="tokens to decode (default 64)")
    _add_shape_options(cache, heads=8, head_dim=16, layers=4, dtype="fp32")
    cache.set_defaults(handler=_cmd_cache)
    _add_check_variant_parser(commands)
    _add_data_parser(commands)
    _add_run_parser(commands)
    _add_perf_parser(commands)
    _add_converge_parser(commands)
    board = commands.add_parser("leaderboard", help="build the static HTML leaderboard from a results folder")
    board.add_argument("--results", type=Path, default=Path("results"), help="results folder (default ./results)")
    board.add_argument("--out", type=Path, default=None, help="output folder (default RESULTS/leaderboard)")
    board.add_argument("--against", type=Path, default=None,
                       help="a leaderboard.json to list changed verdicts against (default: the page's committed "
                            "history, the latest board whose verdicts differ)")  # fmt: skip
    board.add_argument("--add", type=Path, metavar="BUNDLE",
                       help="first take in a contributor's bundle (`bench submit`), once all of it checks out against "
                            "this checkout; a refused bundle changes nothing")  # fmt: skip
    board.set_defaults(handler=_cmd_leaderboard)
    _add_submit_parser(commands)
    readme = commands.add_parser("readme", help="write the figures of the README and docs/ from the results")
    readme.add_argument("--results", type=Path, default=Path("results"), help="results folder (default ./results)")
    readme.add_argument("--root", type=Path, default=Path("."), help="folder of README.md and docs/ (default .)")
    readme.add_argument("--check", action="store_true", help="change nothing; exit 1 when any page's figures differ")
    readme.set_defaults(handler=_cmd_readme)
    ui = commands.add_parser("ui", help="open the MLflow UI on a results folder's tracking store")
    ui.add_argument("--results", type=Path, default=Path("results"), help="results folder (default ./results)")
    ui.add_argument(
        "--tracking-uri", help="the store `bench run --tracking-uri` logged to (default: the results folder's)"
    )
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(handler=_cmd_ui)
    return parser


def _add_converge_parser(commands: Any) -> None:
    converge = commands.add_parser(
        "converge", help="train the study's variants far past a task's budget on the tuning seed: what it measures"
    )
    converge.add_argument("--task", required=True, help="a task id (see `bench list tasks`)")
    converge.add_argument("--steps", type=int, required=True, help="optimiser steps per variant (e.g. 12x a budget)")
    converge.add_argument("--target", type=float, default=None,
                          help="the validation target (default: the task's speed target, else 0.99)")  # fmt: skip
    converge.add_argument("--variants", default=None, help="comma-separated ids (default: the study's four)")
    converge.add_argument("--out", type=Path, default=None, help="record folder (default: the tasks' own)")
    converge.add_argument("--data-dir", type=Path, default=None, help="data cache (default: $BENCH_DATA_DIR, ~/.cache)")
    converge.set_defaults(handler=_cmd_converge)


def _add_check_variant_parser(commands: Any) -> None:
    check = commands.add_parser(
        "check-variant", help="run the conformance checks against one variant: a plugin author's gate"
    )
    check.add_argument(
        "variant", metavar="NAME", help="a registered id or display name, or module:object before it is packaged"
    )
    check.set_defaults(handler=_cmd_check_variant)


def _add_submit_parser(commands: Any) -> None:
    submit = commands.add_parser(
        "submit", help="bundle a plugin variant's results for a leaderboard: records, plugin, check-variant, provenance"
    )
    submit.add_argument("variant", metavar="NAME", help="the plugin variant's id or display name")
    submit.add_argument("--results", type=Path, default=Path("results"), help="results folder (default ./results)")
    submit.add_argument("--out", type=Path, default=None,
                        help="the bundle file (default ./VARIANT-PLUGIN_VERSION.bundle.tar.gz)")  # fmt: skip
    submit.set_defaults(handler=_cmd_submit)


def _add_data_parser(commands: Any) -> None:
    data = commands.add_parser("data", help="prepare the datasets tasks read")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    prepare = data_commands.add_parser("prepare", help="materialise each task's data into the cache (idempotent)")
    prepare.add_argument("--tasks", default="all", help="comma-separated task ids (default: all)")
    prepare.add_argument(
        "--data-dir", type=Path, default=None, help="cache folder (default: $BENCH_DATA_DIR or ~/.cache)"
    )
    prepare.set_defaults(handler=_cmd_prepare)


def _add_run_parser(commands: Any) -> None:
    run = commands.add_parser("run", help="run a suite: the task x variant matrix, tuned, refit over seeds")
    run.add_argument("--suite", default="default", help="smoke, default or paper (default: default)")
    run.add_argument("--tasks", help="comma-separated task ids or names (overrides the suite)")
    run.add_argument("--variants", help="comma-separated variant ids or study names (overrides the suite)")
    run.add_argument("--trials", type=int, help="Optuna trials per cell")
    run.add_argument(
        "--seeds",
        help="seeds of the final fits: a count (3) or a list (0,1,2); every cell gets "
        "them all (default: the suite's adaptive seeds, 3 then more where a comparison is undecided)",
    )
    run.add_argument("--epochs", type=int, help="epochs per fit, for every task")
    run.add_argument("--max-steps", type=int, help="optimiser steps per fit, for every task")
    run.add_argument("--results", type=Path, default=Path("results"), help="results folder (default ./results)")
    run.add_argument("--data-dir", type=Path, default=None, help="data cache (default: $BENCH_DATA_DIR or ~/.cache)")
    run.add_argument("--storage", help="Optuna storage URL (default: SQLite under --results)")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite under --results; 'none' disables)")
    run.add_argument("--jobs", type=int, help="cells run in parallel (default: CPU cores up to 4 on CPU, 1 with CUDA)")
    run.add_argument("--ray", metavar="ADDRESS",
                     help="run each cell as a task on a Ray cluster: auto (the cluster `ray start` made here), "
                          "the head's HOST:PORT, or local (a one-node Ray for this run); needs bench[ray]")  # fmt: skip
    run.add_argument("--devices", type=int,
                     help="devices per fit, for every task: above 1 a data-parallel (DDP) fit over that many "
                          "GPUs, or CPU processes without GPUs (default: each task config's own, 1)")  # fmt: skip
    run.add_argument("--dry-run", action="store_true", help="print the matrix with each cell's status, run nothing")
    run.add_argument("--retry-failed", action="store_true",
                     help="try again cells given up after failing 3 times (default: left failed)")  # fmt: skip
    run.set_defaults(handler=_cmd_run)
    verify = commands.add_parser("verify", help="fit stored seeds again and compare them with their records")
    verify.add_argument("--suite", default="default", help="the suite whose cells are verified (default: default)")
    verify.add_argument("--cells", help="comma-separated cell ids (default: a random sample, see --sample)")
    verify.add_argument("--sample", type=int, default=2, help="how many ok cells to draw at random (default 2)")
    verify.add_argument("--pick", type=int, default=0, help="the seed of that draw (default 0)")
    verify.add_argument("--seeds", help="seeds to refit per cell, e.g. 0,1 (default: each cell's first stored seed)")
    verify.add_argument("--tolerance", type=float, default=1e-4,
                        help="relative difference allowed where the record came from another device, thread count "
                             "or torch/Lightning/numpy version (default 1e-4); on the record's own setup the fits "
                             "must agree bit for bit")  # fmt: skip
    verify.add_argument("--results", type=Path, default=Path("results"), help="results folder (default ./results)")
    verify.add_argument("--data-dir", type=Path, default=None, help="data cache (default: $BENCH_DATA_DIR or ~/.cache)")
    verify.set_defaults(handler=_cmd_verify)


def _add_perf_parser(commands: Any) -> None:
    from bench.measure.perf import KINDS

    perf = commands.add_parser(
        "perf", help="measure the harness itself: overhead vs a bare loop, hardware use, attention, decoding"
    )
    perf.add_argument("--quick", action="store_true", help="tiny sizes, 2-3 rounds: a check in under a minute")
    perf.add_argument("--only", help=f"comma-separated measurements among {','.join(KINDS)} (default: all)")
    perf.add_argument("--repeats", type=int, help="rounds of every measurement (default: each its own, 3 to 15)")
    perf.add_argument("--out", type=Path, default=Path("results/perf"), help="results folder (default results/perf)")
    perf.add_argument("--threads", type=int, help="torch threads (default: $BENCH_THREADS; 1 if --quick; else all)")
    perf.add_argument("--data-dir", type=Path, default=None, help="data cache (default: $BENCH_DATA_DIR or ~/.cache)")
    perf.add_argument("--results", type=Path, default=Path("results"), help="results folder `budget` reads")
    perf.add_argument("--before", type=Path, help="an earlier run's results folder, for `budget`'s cell time before")
    perf.set_defaults(handler=_cmd_perf)


def _data_dir(args: argparse.Namespace) -> Path:
    from bench.run.data import default_data_dir

    return args.data_dir or default_data_dir()


def _names(value: str | None) -> list[str] | None:
    return None if value in (None, "all") else [n.strip() for n in value.split(",") if n.strip()]


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "tasks":
        from bench.report.tables import tasks_table

        return tasks_table(_data_dir(args))
    from bench.report.tables import variants_table

    return variants_table(args.heads, args.head_dim, args.layers, args.dtype)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from bench.report.tables import prepare_report

    return prepare_report(_names(args.tasks), _data_dir(args))


MAX_SEEDS = 1000  # final fits per cell; more is a typo, not a study


def _parse_seeds(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        if "," not in value:
            count = int(value)
            if count < 1:
                raise ValueError
            if count > MAX_SEEDS:
                raise ValueError(f"--seeds {value}: at most {MAX_SEEDS} seeds per cell; e.g. --seeds 5")
            return tuple(range(count))
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        if "at most" in str(exc):
            raise
        raise ValueError(f"--seeds {value!r}: give a positive count (3) or a list of integers (0,1,2)") from None


def _default_jobs() -> int:
    """Tiny CPU models train best one thread per process; a GPU is best left to one process."""
    import os

    import torch

    return 1 if torch.cuda.is_available() else max(1, min(4, os.cpu_count() or 1))


def _cmd_run(args: argparse.Namespace) -> int:
    from bench.plan.suites import get_suite
    from bench.run.pipeline import RunOptions, run

    suite = get_suite(args.suite).override(
        tasks=tuple(_names(args.tasks) or ()) or None,
        variants=tuple(_names(args.variants) or ()) or None,
        trials=args.trials,
        seeds=_parse_seeds(args.seeds),
        looks=() if args.seeds else None,  # seeds given: each cell runs them all
        max_epochs=args.epochs,
        max_steps=args.max_steps,
        devices=args.devices,
    )
    options = RunOptions(
        results=args.results,
        data_dir=_data_dir(args),
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        jobs=args.jobs if args.jobs is not None else _default_jobs(),
        dry_run=args.dry_run,
        retry_failed=args.retry_failed,
        ray=args.ray,
    )
    return run(suite, options)


def _cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when every refit matches its record (bit for bit on the record's setup), 1 when one differs."""
    from bench.console import make_console
    from bench.plan.suites import get_suite
    from bench.run.pipeline import RunOptions
    from bench.run.verify import DIFFERS, table, verify

    try:
        seeds = [int(s) for s in _names(args.seeds) or []] or None
    except ValueError:
        raise ValueError(f"--seeds {args.seeds!r}: give seed numbers separated by commas, e.g. --seeds 0,1") from None
    options = RunOptions(results=args.results, data_dir=_data_dir(args), tracking_uri="none")
    console = make_console()
    checks = verify(get_suite(args.suite), options, list(_names(args.cells) or []), args.sample, args.pick, seeds,
                    args.tolerance, console)  # fmt: skip
    console.print(table(checks, args.tolerance))
    return 1 if any(c.verdict == DIFFERS for c in checks) else 0


def _cmd_perf(args: argparse.Namespace) -> int:
    from bench.measure.perf.run import PerfOptions, parse_kinds, run_perf

    options = PerfOptions(parse_kinds(args.only), args.quick, args.repeats, args.out, _data_dir(args), args.threads,
                          args.results, args.before)  # fmt: skip
    return run_perf(options)


def _cmd_converge(args: argparse.Namespace) -> int:
    import dataclasses

    from bench.console import make_console
    from bench.measure import converge
    from bench.registry import tasks
    from bench.report.tables import convergence_table
    from bench_tasks.base import SpeedTarget

    if args.steps < 1:
        raise ValueError(f"--steps {args.steps}: give the optimiser steps of each run, e.g. --steps 960")
    task = tasks().get(args.task)
    declared = task.speed_target(task.config("default"))
    target = declared or SpeedTarget(task.metric, 0.99, 1)
    if args.target is not None:
        target = dataclasses.replace(target, target=args.target)
    console = make_console()
    variants = _names(args.variants) or list(converge.STUDY_VARIANTS)
    record = converge.converge(task, target, args.steps, _data_dir(args), variants,
                               on_variant=lambda v: console.print(f"{task.id} x {v}: {args.steps} steps"))  # fmt: skip
    path = converge.write(record, args.out)
    convergence_table(record, console)
    console.print(f"record: {path}")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.console import make_console
    from bench.run.pipeline import build_leaderboard

    console = make_console()
    if args.add is not None:
        from bench.report.contribute import add_bundle

        add_bundle(args.add, args.results, console)
    if not (args.results / "cells").is_dir():
        raise ValueError(f"no results in {args.results}/cells; run `bench run --results {args.results}` first")
    build_leaderboard(args.results, console, args.out, args.against)
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from bench.console import make_console
    from bench.report.contribute import submit

    submit(args.variant, args.results, args.out, make_console())
    return 0


def _cmd_readme(args: argparse.Namespace) -> int:
    from bench_leaderboard.readme import Figures, sync_all

    found = sync_all(args.root, Figures.load(args.results), check=args.check)
    for path, same in found.items():
        print(f"{path}: figures {'match the results' if same else 'differ' if args.check else 'rewritten'}")
    return 1 if args.check and not all(found.values()) else 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from bench.plan.validate import check_tracking_uri
    from bench.record.tracking import default_tracking_uri, redact, serve_ui

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: a TCP port lies in 1..65535; e.g. --port 5000")
    uri = args.tracking_uri or default_tracking_uri(args.results)
    if uri.startswith(("http://", "https://")):  # a tracking server is its own UI
        check_tracking_uri(uri)
        print(f"MLflow UI: {redact(uri)} (the tracking server itself)")
        return 0
    db = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if db is not None and not db.exists():
        made_by = f"--tracking-uri {uri}" if args.tracking_uri else f"--results {args.results}"
        raise ValueError(f"no MLflow store at {db}; run `bench run {made_by}` first")
    print(f"MLflow UI on http://{args.host}:{args.port} (store {redact(uri)}); Ctrl-C to stop")
    return serve_ui(uri, args.host, args.port)


def _cmd_cache(args: argparse.Namespace) -> int:
    from bench.report.tables import cache_table

    names = None if args.variants == "all" else [n for n in args.variants.split(",") if n.strip()]
    return cache_table(names, args.heads, args.head_dim, args.layers, args.tokens)


def _cmd_check_variant(args: argparse.Namespace) -> int:
    from bench.report.tables import check_variant_report

    return check_variant_report(args.variant)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `bench` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        return handler(args)
    except (KeyError, ValueError, ImportError) as exc:  # user-facing errors: message, no traceback
        _error(str(exc))
        return 2
    except OSError as exc:  # a full disk, a folder we may not write: what was saved stays saved
        where = f": {exc.filename}" if exc.filename else ""
        _error(f"{exc.strerror or exc}{where}. Free space (or fix the folder's permissions) and run the same "
               "command again: every fit already saved is kept.")  # fmt: skip
        return 1


def _error(message: str) -> None:
    from rich.markup import escape

    from bench.console import make_console

    make_console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)


if __name__ == "__main__":
    sys.exit(main())
