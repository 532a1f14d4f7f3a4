"""The results store, the source of truth: one JSON file per cell, written atomically.

Layout under the results folder:

    cells/<task>__<variant>__<cell id>.json     finished (or n/a, or failed) cells
    partial/<cell id>/seed-<n>.json             final fits done so far for an unfinished cell
    partial/<cell id>/attempts.json             attempts at a cell not yet ok: their count and last outcome
    attempts/<cell file stem>.<time>.json       failed attempts that did not replace an ok result
    locks/<cell id>.lock                        the run working on a cell now (pid, host)
    states/<cell id>/seed-<n>.pt                a final fit's model states, for cells that train as it
                                                (`bench.fit.reuse`; local, not results)

A cell file is a `bench_record.CellRecord`: `write_cell` checks a record against that schema before writing
it, and readers parse files through it, migrating an older version it knows and refusing any other with a
clear message rather than misreading it.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_record import SCHEMA_VERSION, CellRecord, SchemaError
from bench_record.files import atomic_file

#: attempts at a cell before `bench run` stops trying it (`--retry-failed` tries again)
MAX_ATTEMPTS = 3
#: a write's temp file older than this was left by a killed process (a live one lasts milliseconds)
TORN_AFTER_S = 600.0


@contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `lock` (made if missing) while the block runs, waiting for it.

    For one-time set-up that concurrent processes would otherwise race (a store's tables). The lock
    goes with the file handle, so a process that dies holding it releases it.
    """
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def finite(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by None: result files are strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temp file in the same folder, then rename: readers never see half a file.

    Non-finite numbers are written as null, never as the invalid `NaN`/`Infinity`.
    """
    payload = finite(payload)
    with atomic_file(path) as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, allow_nan=False)
        handle.write("\n")


def _saved_seed(path: Path) -> dict[str, Any] | None:
    """A final fit's saved record, or None when the file is not one (torn writes cannot happen; edits can)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    shape = {"seed": int, "params": dict, "test": dict}
    ok = isinstance(data, dict) and all(isinstance(data.get(key), kind) for key, kind in shape.items())
    return data if ok else None


def _stale(lock: Path) -> bool:
    """A claim whose process is gone (same machine), or that cannot be read; another machine's is live."""
    try:
        owner = json.loads(lock.read_text())
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return True  # torn or foreign: nothing can be holding it by our rules
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _get(record: dict[str, Any], part: str, key: str) -> Any:
    """`record[part][key]`, or None where the record lacks it (for a message about a malformed record)."""
    found = record.get(part)
    return found.get(key) if isinstance(found, dict) else None


def _stamp() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")


class Superseded(RuntimeError):
    """A run of a cell whose hold passed to a newer run of it (a retry elsewhere): its writes are refused."""


class ResultStore:
    """Reads and writes cell results and per-seed partial results under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cells_dir = root / "cells"
        self.partial_dir = root / "partial"
        self.states_dir = root / "states"

    def sweep_torn_writes(self, older_than_s: float = TORN_AFTER_S) -> list[Path]:
        """Delete the temp files of writes that never finished (a process killed between writing and
        renaming); a live write's temp file lives for milliseconds, so only old ones are touched."""
        if not self.root.is_dir():
            return []
        cutoff = time.time() - older_than_s
        folders = [self.root, *(p for p in self.root.iterdir() if p.is_dir()), *self.partial_dir.glob("*"),
                   *self.states_dir.glob("*")]  # fmt: skip
        torn = [
            path
            for folder in folders  # cells, partial seeds, leaderboard pages, baselines, ...
            for path in folder.glob(".*.tmp")
            if path.is_file() and path.stat().st_mtime < cutoff
        ]
        for path in torn:
            path.unlink(missing_ok=True)
        return torn

    def cell_path(self, task: str, variant: str, cell_id: str) -> Path:
        """Where a cell's record lives; every id is checked first, so none can point outside the store."""
        from bench.registry import check_id

        check_id(task, "task id")
        check_id(variant, "variant id")
        check_id(cell_id, "cell id")
        return self.cells_dir / f"{task}__{variant}__{cell_id}.json"

    def find(self, cell_id: str) -> Path | None:
        matches = sorted(self.cells_dir.glob(f"*__{cell_id}.json"))
        return matches[0] if matches else None

    def parse(self, path: Path) -> CellRecord:
        """One cell result, migrated to the current schema; raises ValueError naming the file when it is
        not a result of this schema (`SchemaError` says what is wrong and what to run)."""
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable JSON result ({exc})") from exc
        try:
            return CellRecord.from_dict(data)
        except SchemaError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def load(self, path: Path) -> dict[str, Any]:
        """`parse`, as plain data."""
        return self.parse(path).to_dict()

    def cell(self, cell_id: str) -> CellRecord | None:
        """The cell's stored record; None when it has none or its file cannot be read (then it is computed again)."""
        path = self.find(cell_id)
        try:
            return self.parse(path) if path else None
        except ValueError:
            return None

    def record(self, cell_id: str) -> dict[str, Any]:
        """`cell` as plain data; {} for none."""
        found = self.cell(cell_id)
        return found.to_dict() if found else {}

    def write_cell(self, result: dict[str, Any]) -> Path:
        """Store a cell's record; a failed, diverged or partial attempt never replaces a good result.

        The record is checked against the schema first (`CellRecord`): one that does not match raises
        `SchemaError` saying what is wrong, and nothing is written. When the cell already holds an ok record
        and `result` is not ok, `result` goes beside it to `attempts/` (its path is returned; `kept_ok_result`
        says so) and the ok record stays in force until a complete ok record replaces it.
        """
        try:
            record = CellRecord.from_dict(finite({**result, "schema_version": SCHEMA_VERSION}))
        except SchemaError as exc:
            what = f"{_get(result, 'task', 'id')}/{_get(result, 'variant', 'id')} cell {result.get('cell_id')!r}"
            raise SchemaError(f"not writing the {what}: its record does not match the schema ({exc})") from exc
        path = self.cell_path(record.task.id, record.variant.id, record.cell_id)
        payload = record.to_dict()
        if not record.ok and self._holds_ok(path):
            attempt = self.root / "attempts" / f"{path.stem}.{_stamp()}.json"
            write_json_atomic(attempt, {**payload, "kept_ok_result": path.name})
            return attempt
        write_json_atomic(path, payload)
        return path

    def _holds_ok(self, path: Path) -> bool:
        try:
            return self.parse(path).ok
        except ValueError:
            return False

    @contextmanager
    def claim(self, cell_id: str) -> Iterator[bool]:
        """Hold `cell_id` for this process while the block runs: True if claimed, False if another live run has it.

        A claim is a file created exclusively under `locks/`, naming the process and machine. One left
        by a process that no longer exists on this machine (kill -9) is stale and is taken over.
        """
        from bench.registry import check_id

        path = self.root / "locks" / f"{check_id(cell_id, 'cell id')}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        mine = False
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if _stale(path):
                    path.unlink(missing_ok=True)
                    continue
                break
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
            mine = True
            break
        try:
            yield mine
        finally:
            if mine:
                path.unlink(missing_ok=True)

    def claim_left(self, cell_id: str) -> bool:
        """Whether a claim on `cell_id` is on disk (a run that died while working on it leaves one)."""
        return (self.root / "locks" / f"{cell_id}.lock").exists()

    def _attempts_path(self, cell_id: str) -> Path:
        from bench.registry import check_id

        return self.partial_dir / check_id(cell_id, "cell id") / "attempts.json"

    def attempts(self, cell_id: str) -> dict[str, Any]:
        """`{"count": n, "last": outcome, "progress": p}` of the attempts at a cell that is not ok yet.

        `count` is the attempts in a row that saved nothing (0: none); `progress` the fits the cell had
        saved when the last attempt started.
        """
        try:
            data = json.loads(self._attempts_path(cell_id).read_text())
            return {"count": int(data["count"]), "last": str(data.get("last", "")), "progress": int(data["progress"])}
        except (OSError, ValueError, KeyError, TypeError):
            return {"count": 0, "last": "", "progress": -1}

    def start_attempt(self, cell_id: str, progress: int) -> None:
        """Count an attempt before it runs, so one that never ends (a killed worker, a hang) counts too.

        `progress` is the fits the cell has saved (finished trials and seeds). An attempt after which
        more were saved was not the cell's failure (the run was stopped, by the user or the system):
        the count starts again, so only attempts in a row that save nothing give a cell up.
        """
        before = self.attempts(cell_id)
        count = 1 if progress > before["progress"] else before["count"] + 1
        last = "did not finish: the process died, was killed or hung"
        write_json_atomic(self._attempts_path(cell_id), {"count": count, "last": last, "progress": progress})

    def end_attempt(self, cell_id: str, status: str, reason: str = "") -> None:
        """An ok (or n/a) cell forgets its attempts; any other outcome is kept as the last one."""
        if status in ("ok", "n/a"):
            self.forget_attempts(cell_id)
        else:
            before = self.attempts(cell_id)
            outcome = {"count": max(1, before["count"]), "last": f"{status}: {reason}"[:500]}
            write_json_atomic(self._attempts_path(cell_id), {**outcome, "progress": before["progress"]})

    def forget_attempts(self, cell_id: str) -> None:
        self._attempts_path(cell_id).unlink(missing_ok=True)

    def seed_results(self, cell_id: str) -> dict[int, dict[str, Any]]:
        """Final fits already done for a cell, by seed; a file that is not one is left out (its fit is redone)."""
        out: dict[int, dict[str, Any]] = {}
        for path in sorted((self.partial_dir / cell_id).glob("seed-*.json")):
            data = _saved_seed(path)
            if data is not None:
                out[data["seed"]] = data
        return out

    def unreadable(self, cell_id: str) -> list[str]:
        """What of a cell's files cannot be read: its result, its saved seeds. The cell runs again; say so."""
        problems = []
        path = self.find(cell_id)
        if path is not None:
            try:
                self.parse(path)
            except ValueError as exc:
                problems.append(str(exc))
        for path in sorted((self.partial_dir / cell_id).glob("seed-*.json")):
            if _saved_seed(path) is None:
                problems.append(f"{path}: not a saved seed result (JSON with its seed, params and test metrics)")
        return problems

    def write_seed(self, cell_id: str, seed_result: dict[str, Any]) -> None:
        from bench.registry import check_id

        check_id(cell_id, "cell id")
        write_json_atomic(self.partial_dir / cell_id / f"seed-{seed_result['seed']}.json", seed_result)

    def all_cells(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Every readable cell result, plus one message per file that could not be read."""
        results, problems = [], []
        for path in sorted(self.cells_dir.glob("*.json")):
            try:
                results.append(self.load(path))
            except ValueError as exc:
                problems.append(str(exc))
        return results, problems
