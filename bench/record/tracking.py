"""MLflow as an observer: a parent run per cell, nested runs per trial and per seed.

The results store stays the source of truth; MLflow is for browsing (`bench ui`, `serve_ui`). Runs are
created through `MlflowClient` (no global active run), so Lightning's `MLFlowLogger` can write a fit's
curves straight into its nested run. A run whose process or node died mid-fit is ended KILLED by the
next attempt at its cell, or by the driver once the cell is recorded (`Tracker.end_left_running`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_record.uris import redact

if TYPE_CHECKING:
    import subprocess

    from lightning.pytorch.loggers import MLFlowLogger

EXPERIMENT = "bench"
#: the tag saying why the harness, not the fit that ran in it, ended a run (`Tracker.end_left_running`)
ENDED_TAG = "bench.ended_because"


def default_tracking_uri(results_dir: Path) -> str:
    return f"sqlite:///{(results_dir / 'mlflow.db').resolve()}"


#: what --tracking-uri may be: an MLflow server, a database, a local store (a bare path is a local store)
TRACKING_SCHEMES = ("http", "https", "sqlite", "file", "postgresql", "mysql", "mssql", "databricks")


def public_uri(uri: str, results_dir: Path) -> str:
    """The tracking URI as results files record it: no credentials, no path of the machine that ran it.

    A local store inside the results folder is named relative to it (`sqlite:///<results>/mlflow.db`);
    one elsewhere on disk by its file name only.
    """
    uri = redact(uri)
    if not uri.startswith(("sqlite:///", "file://")) and "://" in uri:
        return uri
    scheme, _, path = uri.partition(":///") if uri.startswith("sqlite:///") else ("file", "", uri.split("://")[-1])
    try:
        relative = Path(path).resolve().relative_to(results_dir.resolve())
        return f"{scheme}:///<results>/{relative.as_posix()}"
    except ValueError:
        return f"{scheme}:///<local>/{Path(path).name}"


#: metric points a batched logger holds before writing them (MLflow takes at most 1000 per batch)
FLUSH_POINTS = 500


def batched_logger(tracking_uri: str, run_id: str, problems: list[str] | None = None) -> MLFlowLogger:
    """Lightning's `MLFlowLogger`, holding metric points until an epoch's metrics are saved or the fit ends.

    Each `log_batch` is a database transaction (about 3 ms on SQLite); one per logged training step
    cost 1-2% of a small fit. Points keep their own step and time, so the curves are the same.
    A write that fails drops its points and notes why in `problems`: curves are not results.
    """
    import time

    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.entities import Metric

    class BatchedMLFlowLogger(MLFlowLogger):
        def __init__(self) -> None:
            super().__init__(experiment_name=EXPERIMENT, tracking_uri=tracking_uri, run_id=run_id)
            self._pending: list[Metric] = []

        def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
            stamp = int(time.time() * 1000)
            self._pending += [
                Metric(key=k, value=float(v), timestamp=stamp, step=step or 0)
                for k, v in metrics.items()
                if not isinstance(v, str)
            ]
            if len(self._pending) >= FLUSH_POINTS:
                self.flush()

        def flush(self) -> None:
            if self._pending:
                pending, self._pending = self._pending, []
                try:
                    self.experiment.log_batch(run_id=self.run_id, metrics=pending)
                except Exception as exc:  # MLflow observes; a failed write must not stop the fit
                    if problems is not None:
                        problems.append(f"MLflow curve points lost: {type(exc).__name__}: {redact(str(exc))[:300]}")

        def save(self) -> None:  # Lightning calls this after logging an epoch's metrics
            self.flush()
            super().save()

        def finalize(self, status: str = "success") -> None:
            self.flush()
            try:
                super().finalize(status)
            except Exception as exc:  # as in `flush`
                if problems is not None:
                    problems.append(f"MLflow run not closed: {type(exc).__name__}: {redact(str(exc))[:300]}")

    return BatchedMLFlowLogger()


def sqlite_wal(uri: str) -> None:
    """Put a SQLite store (`sqlite:///path`) in write-ahead-log mode: readers never block the writer,
    and concurrent writers wait (up to 30 s) instead of failing at once. Kept in the file; idempotent.
    """
    import sqlite3

    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri[len("sqlite:///") :])
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=30) as db:
        db.execute("PRAGMA journal_mode=WAL")


@contextmanager
def _store_setup(uri: str) -> Iterator[None]:
    """Hold a SQLite store (other stores are servers) for this process alone while the block sets it up.

    MLflow makes a fresh SQLite store by running its schema migrations one statement at a time:
    processes starting together on one store (two drivers on one results folder, the workers of a
    run) would run them at once and leave it half-migrated, unusable by every later run.
    """
    from bench.record.store import exclusive

    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri[len("sqlite:///") :])
    with exclusive(path.with_name(f"{path.name}.lock")):
        sqlite_wal(uri)
        yield


def _start_over_if_unused(uri: str) -> Path | None:
    """Empty a SQLite store that holds no run, keeping a copy beside it (`<name>.unusable-<time>`), so that
    the next set-up makes its tables afresh; the copy's path, or None if it holds runs or is no SQLite file.

    A process killed while MLflow made the store's tables (the first seconds of a first run) leaves
    them half made, and every later set-up fails on them. The tables are dropped in place, not the
    file moved: MLflow keeps its connections to the file open.
    """
    import sqlite3
    import time

    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri[len("sqlite:///") :])
    try:
        with sqlite3.connect(path, timeout=30) as db:
            tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            if "runs" in tables and db.execute("SELECT count(*) FROM runs").fetchone()[0]:
                return None
            copy = path.with_name(f"{path.name}.unusable-{time.strftime('%Y%m%dT%H%M%S')}")
            with sqlite3.connect(copy) as kept:
                db.backup(kept)
            db.execute("PRAGMA foreign_keys = OFF")
            for table in tables:
                if not table.startswith("sqlite_"):
                    db.execute(f'DROP TABLE IF EXISTS "{table}"')
    except sqlite3.Error:
        return None
    return copy


def _open(uri: str, artifact_location: str | None) -> tuple[Any, str]:
    """A client of the store at `uri` (made, or migrated, on first use) and the id of the harness's
    experiment in it, made if missing."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return client, str(client.create_experiment(EXPERIMENT, artifact_location=artifact_location))
    return client, str(experiment.experiment_id)


RETRIES = (0.2, 1.0, 3.0)  # seconds to wait before each retry of a call the store refused as busy


class Tracker:
    """Thin wrapper over `MlflowClient` for the harness's run hierarchy.

    MLflow only observes: every call is guarded. A call the store refuses as busy ("database is
    locked") is retried; any other failure, or a busy store after the retries, is recorded in
    `problems` (the run reports them) and the call does nothing, so a result is never lost to MLflow.
    """

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        import logging

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.uri = tracking_uri
        self.problems: list[str] = []
        location = artifact_root.resolve().as_uri() if artifact_root else None
        with _store_setup(tracking_uri):
            try:
                self.client, self.experiment_id = _open(tracking_uri, location)
            except Exception as exc:
                copy = None if "locked" in str(exc).lower() else _start_over_if_unused(tracking_uri)
                if copy is None:  # busy, holding runs, or no SQLite store: MLflow's own error says why
                    raise
                self.problems.append(f"MLflow store half made, holding no run: made afresh "
                                     f"(the old one kept beside it as {copy.name})")  # fmt: skip
                self.client, self.experiment_id = _open(tracking_uri, location)

    def _guard(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """`call(*args, **kwargs)`, retried while the store is busy; None (and a problem noted) on failure."""
        import time

        for wait in (*RETRIES, None):
            try:
                return call(*args, **kwargs)
            except Exception as exc:  # MLflow raises many kinds; none may stop a cell
                if wait is not None and "locked" in str(exc).lower():
                    time.sleep(wait)
                    continue
                self.problems.append(f"MLflow {what} failed: {type(exc).__name__}: {redact(str(exc))[:300]}")
                return None
        return None

    def cell_run(self, cell_id: str, name: str, tags: dict[str, str]) -> str | None:
        """The parent run of a cell: reused when a previous (interrupted) run of the cell exists."""

        def find_or_create() -> str:
            found = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.cell_id = '{cell_id}' and tags.level = 'cell'",
                max_results=1,
            )
            if found:
                return str(found[0].info.run_id)
            run = self.client.create_run(self.experiment_id, run_name=name, tags={**tags, "level": "cell"})
            return str(run.info.run_id)

        result: str | None = self._guard("cell run", find_or_create)
        return result

    def child_run(self, parent_id: str, name: str, tags: dict[str, str], params: dict[str, Any]) -> str | None:
        def create() -> str:
            run = self.client.create_run(
                self.experiment_id, run_name=name, tags={**tags, "mlflow.parentRunId": parent_id}
            )
            for key, value in params.items():
                self.client.log_param(run.info.run_id, key, value)
            return str(run.info.run_id)

        result: str | None = self._guard("nested run", create)
        return result

    def logger(self, run_id: str) -> MLFlowLogger:
        """A Lightning logger writing a fit's metric curves into `run_id`, in batches (see `batched_logger`)."""
        return batched_logger(self.uri, run_id, self.problems)

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self._guard("log_metric", self.client.log_metric, run_id, key, float(value))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._guard("set_tag", self.client.set_tag, run_id, key, value)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self._guard("set_terminated", self.client.set_terminated, run_id, status=status)

    def end_left_running(self, cell_id: str, why: str, keep: str | None = None) -> list[str]:
        """End the runs of `cell_id` still RUNNING, all but `keep`, as KILLED with the tag `ENDED_TAG`: `why`.

        For a caller that holds the cell (its claim, or its lease on a cluster) and so knows that no other
        attempt at it is live: a run such an attempt left RUNNING (its process or node died before it
        could close the run) would otherwise stay RUNNING for ever. Returns the ids of the runs ended.
        """

        def end() -> list[str]:
            left = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.cell_id = '{cell_id}' and attributes.status = 'RUNNING'",
                max_results=1000,
            )
            ended = [run.info.run_id for run in left if run.info.run_id != keep]
            for run_id in ended:
                self.client.set_tag(run_id, ENDED_TAG, why)
                self.client.set_terminated(run_id, status="KILLED")
            return ended

        result: list[str] | None = self._guard("closing runs left running", end)
        return result or []

    def log_artifact(self, run_id: str, path: Path) -> None:
        self._guard("log_artifact", self.client.log_artifact, run_id, str(path))


class NoTracker(Tracker):
    """Tracking off (`--tracking-uri none`, or MLflow unavailable): every call does nothing and creates no
    run, so a cell's code calls its tracker without asking first whether there is one."""

    def __init__(self) -> None:
        self.uri, self.experiment_id = "none", ""
        self.problems: list[str] = []

    def _guard(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        return None

    def logger(self, run_id: str) -> Any:
        return False


class _Stop(Exception):
    """A signal that asks `bench ui` to stop (Ctrl-C, `kill`, a process supervisor, the terminal closed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def serve_ui(uri: str, host: str, port: int) -> int:
    """`mlflow server` on the store `uri` at `host:port` (`bench ui`) until it exits or this process is asked
    to stop (SIGINT, SIGTERM, SIGHUP); its exit status, or 128 + the signal's number.

    The server runs in a process group of its own, stopped whole when this process stops, so no worker of it
    keeps the port: before, a `kill` of `bench ui` left the server running, as only Ctrl-C (which the
    terminal sends to every process of the foreground group) reached its workers.
    """
    import signal
    import subprocess
    import sys

    def stop(signum: int, _frame: object) -> None:
        raise _Stop(signum)

    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
               "--port", str(port)]  # fmt: skip
    asks = [signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]
    before = {signum: signal.signal(signum, stop) for signum in asks}
    server: subprocess.Popen[bytes] | None = None
    try:
        server = subprocess.Popen(command, start_new_session=True)
        return server.wait()
    except _Stop as asked:
        print(f"stopping the MLflow UI ({signal.Signals(asked.signum).name})", file=sys.stderr)
        return 128 + asked.signum
    finally:
        for signum in asks:  # a second signal while the server stops does not cut the stopping short
            signal.signal(signum, signal.SIG_IGN)
        if server is not None:
            _stop_group(server)
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _stop_group(server: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM to `server`'s process group, SIGKILL to what is left of it after `grace_s`; returns once none of
    it runs."""
    import os
    import signal
    import time

    for signum, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(server.pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            server.poll()  # reaps the server itself
            if not _group_runs(server.pid):
                return
            time.sleep(0.05)


def _group_runs(pgid: int) -> bool:
    """Whether a process of the group `pgid` still runs. One that exited but is not yet reaped (a zombie, which
    holds no port) does not count, where /proc tells them apart."""
    import os

    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path("/proc").is_dir():
        return True
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # after the command name: state, ppid, pgrp, ...
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if int(group) == pgid and state not in ("Z", "X"):
            return True
    return False
