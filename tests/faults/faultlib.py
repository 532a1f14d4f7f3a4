"""Faults injected from outside into a `bench run` subprocess, and a log of every fit it starts.

`sitecustomize.py` (this folder on PYTHONPATH) calls `install()` at interpreter start, so every
process of a run has the hooks, the `--jobs` workers too (the pool spawns fresh interpreters). Nothing
here is imported by bench: the production code is wrapped, never edited.

Environment (BENCH_FAULT_LOG unset: nothing is installed):
    BENCH_FAULT_LOG     JSON-lines file every process of a scenario appends its events to
    BENCH_FAULT_MARKER  file created when the fault fires: it fires once, so the next run completes
    BENCH_FAULT_RUN     which run of the scenario this is, copied into every event
    BENCH_FAULT         JSON spec of the fault, e.g.
                        {"where": "step", "action": "kill", "variant": "qkv", "kind": "tune", "nth": 2, "step": 9}

`where` says which hook fires it:
    "fit_start"     a fit about to start (nothing of it computed yet)
    "step"          before optimiser step `step` (1-based) of a fit
    "replace"       an `os.replace` onto a path matching the glob `path`: the temp file written and
                    fsynced, the rename not done (`bench.record.store.write_json_atomic`, the leaderboard's writes)
    "write"         `bench.record.store.write_json_atomic` to a path matching `path`
    "hang"          asked by the hanging test plugin before each of its training steps
    "storage_init"  a run about to ready the Optuna storage (`bench.run.pipeline._storage_ready`; the first run on
                    a folder creates its tables)
`variant`, `kind` ("tune" or "final") and `nth` (the n-th fit of that variant and kind in this process)
narrow it to one fit. `action`:
    "kill"      SIGKILL this process, as kill -9 or the out-of-memory killer does
    "enospc"    OSError "No space left on device"; with "persist": true every later write of the process fails
    "hang"      sleep until the fit's time limit stops it
    "barrier"   wait until `parties` processes of the scenario are there too: forces the interleaving of a race
`time_limit` {"variant": id, "seconds": s} gives that variant's fits a short `Task.fit_time_limit`, and
"serialize": ["leaderboard"] makes the processes of a scenario write their leaderboards in turn.

Events, one JSON object a line, each with its run and pid: "start", "end" (with the fit's metrics) and
"error" of each fit, keyed by task, variant, kind, seed, optimiser settings and task config; "saved" when
a final fit's result reached `partial/<cell>/seed-<n>.json` or a tuning fit's trial was told to the Optuna
storage (a process killed between a trial's fit and its tell loses that fit); "fault" when the fault fires.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import fnmatch
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LOG_ENV, MARKER_ENV, SPEC_ENV, RUN_ENV = "BENCH_FAULT_LOG", "BENCH_FAULT_MARKER", "BENCH_FAULT", "BENCH_FAULT_RUN"
SEED_FILE = "*/partial/*/seed-*.json"


@dataclass
class State:
    """What this process is doing now: the fit in progress and how many fits of each kind it started."""

    spec: dict[str, Any] = field(default_factory=dict)
    fits: dict[tuple[str, str], int] = field(default_factory=dict)  # (variant, kind) -> fits started
    current: dict[str, Any] = field(default_factory=dict)  # variant, kind, nth, step of the fit in progress
    last_key: dict[str, Any] | None = None  # the last fit that ended here
    disk_full: bool = False


STATE = State()


def log(event: str, **fields: Any) -> None:
    """Append one event; a single write to an O_APPEND file, so processes never interleave a line."""
    head = {"event": event, "run": os.environ.get(RUN_ENV, ""), "pid": os.getpid(), "time": time.time()}
    line = json.dumps({**head, **fields}, sort_keys=True)
    fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def matches(where: str, **context: Any) -> bool:
    """Whether the fault is meant for this place: every narrowing field of the spec equals the context."""
    spec = STATE.spec
    if spec.get("where") != where:
        return False
    here = {**STATE.current, **context}
    for name in ("variant", "kind", "nth", "step"):
        if name in spec and spec[name] != here.get(name):
            return False
    return "path" not in spec or fnmatch.fnmatch(str(context.get("path", "")), spec["path"])


def barrier(parties: int, timeout: float = 60.0) -> bool:
    """Wait until `parties` processes of the scenario have arrived (a file each); False on timeout."""
    folder = os.environ[LOG_ENV] + ".barrier"
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, str(os.getpid())), "w").close()
    deadline = time.monotonic() + timeout
    while len(os.listdir(folder)) < parties:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def fire(**context: Any) -> bool:
    """Fire the fault once per run (its marker is created exclusively); False if it already has."""
    try:
        fd = os.open(os.environ[MARKER_ENV], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    action = STATE.spec.get("action", "kill")
    if action == "barrier":
        context["met"] = barrier(int(STATE.spec.get("parties", 2)))
    log("fault", action=action, where=STATE.spec.get("where"), **STATE.current, **context)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "hang":
        time.sleep(3600)  # a plugin stuck in a wait; the fit's time limit interrupts it
    return True


def fit_key(task: Any, variant: Any, config: Any, optim: Any, seed: int, test: bool) -> dict[str, Any]:
    """What makes a fit the same fit: a rerun of it gets the same key."""
    return {
        "task": task.id,
        "variant": variant.id,
        "kind": "final" if test else "tune",
        "seed": seed,
        "optim": dataclasses.asdict(optim),
        "config": config.as_dict(),
    }


def wrap_fit(real: Callable[..., Any]) -> Callable[..., Any]:
    def fit(task: Any, variant: Any, config: Any, optim: Any, *, seed: int, test: bool = True, **options: Any) -> Any:
        key = fit_key(task, variant, config, optim, seed, test)
        slot = (variant.id, key["kind"])
        STATE.fits[slot] = STATE.fits.get(slot, 0) + 1
        STATE.current = {"variant": variant.id, "kind": key["kind"], "nth": STATE.fits[slot], "step": 0}
        if matches("fit_start"):
            fire()
        log("start", key=key, nth=STATE.fits[slot])
        try:
            result = real(task, variant, config, optim, seed=seed, test=test, **options)
        except BaseException as exc:
            log("error", key=key, error=f"{type(exc).__name__}: {exc}"[:300])
            raise
        finally:
            STATE.current = {}
        STATE.last_key = key
        log("end", key=key, val=result.val, test=result.test, steps=result.steps)
        return result

    return fit


def wrap_train_step(real: Callable[..., Any]) -> Callable[..., Any]:
    def _train_step(loop: Any, batch: Any, optimizer: Any, scheduler: Any, params: Any) -> Any:
        STATE.current["step"] = loop.step + 1
        if matches("step"):
            fire()
        return real(loop, batch, optimizer, scheduler, params)

    return _train_step


def wrap_replace(real: Callable[..., Any]) -> Callable[..., Any]:
    def replace(src: Any, dst: Any, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None) -> None:
        if matches("replace", path=os.fspath(dst)):
            fire(path=os.fspath(dst))
        real(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    return replace


def wrap_write_json_atomic(real: Callable[..., Any]) -> Callable[..., Any]:
    def write_json_atomic(path: Any, payload: Any) -> None:
        if STATE.disk_full or (matches("write", path=os.fspath(path)) and fire(path=os.fspath(path))):
            STATE.disk_full = bool(STATE.spec.get("persist"))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
        real(path, payload)
        if fnmatch.fnmatch(os.fspath(path), SEED_FILE) and STATE.last_key is not None:
            log("saved", key=STATE.last_key, path=os.fspath(path))

    return write_json_atomic


def wrap_open_study(real: Callable[..., Any]) -> Callable[..., Any]:
    """The study bench opens, its `tell` logging "saved" for the tuning fit that just ended."""

    def open_study(*args: Any, **kwargs: Any) -> Any:
        study = real(*args, **kwargs)
        tell = study.tell

        def told(*targs: Any, **tkwargs: Any) -> Any:
            out = tell(*targs, **tkwargs)
            if STATE.last_key is not None and STATE.last_key["kind"] == "tune":
                log("saved", key=STATE.last_key)
            return out

        study.tell = told
        return study

    return open_study


def wrap_time_limit(real: Callable[..., Any]) -> Callable[..., Any]:
    def time_limit(seconds: float, what: str) -> Any:
        short = STATE.spec.get("time_limit") or {}
        if short and short.get("variant") == STATE.current.get("variant"):
            seconds = float(short["seconds"])
        return real(seconds, what)

    return time_limit


def wrap_storage_ready(real: Callable[..., Any]) -> Callable[..., Any]:
    """Where a run readies the Optuna storage (the first run on a folder creates its tables)."""

    def storage_ready(*args: Any) -> Any:
        if matches("storage_init"):
            fire()
        return real(*args)

    return storage_ready


def wrap_in_turn(real: Callable[..., Any]) -> Callable[..., Any]:
    """`real` under an exclusive lock shared by the scenario's processes: one at a time."""

    def in_turn(*args: Any) -> Any:
        with open(os.environ[LOG_ENV] + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return real(*args)

    return in_turn


def maybe_hang() -> None:
    """Called by the hanging test plugin before each of its training steps: hangs there once if the spec says so."""
    if matches("hang"):
        fire()


def install() -> None:
    """Wrap bench's fit, training step, atomic write and time limit, `os.replace`, and what the spec needs."""
    if not os.environ.get(LOG_ENV):
        return
    STATE.spec = json.loads(os.environ.get(SPEC_ENV) or "{}")
    try:
        import bench.fit.loop
        import bench.fit.train
        import bench.fit.tuning
        import bench.record.store
    except ImportError:  # a Python without bench (a tool the run starts): no fit to watch
        return

    # before bench.run.cells and bench.measure.baselines import these names: they then hold the wrappers
    bench.fit.train.fit = wrap_fit(bench.fit.train.fit)
    bench.fit.train.time_limit = wrap_time_limit(bench.fit.train.time_limit)
    bench.fit.tuning.open_study = wrap_open_study(bench.fit.tuning.open_study)
    bench.fit.loop.FitLoop._train_step = wrap_train_step(bench.fit.loop.FitLoop._train_step)  # type: ignore[method-assign]
    bench.record.store.write_json_atomic = wrap_write_json_atomic(bench.record.store.write_json_atomic)
    os.replace = wrap_replace(os.replace)
    if STATE.spec.get("where") == "storage_init":
        import bench.run.pipeline

        bench.run.pipeline._storage_ready = wrap_storage_ready(bench.run.pipeline._storage_ready)
    if "leaderboard" in STATE.spec.get("serialize", ()):
        import importlib

        pages: Any = importlib.import_module("bench_leaderboard.build")  # `bench_leaderboard.build` is the function
        pages._write = wrap_in_turn(pages._write)
