"""MLflow as an observer: a parent run per cell, nested runs per trial and per seed.

The results store stays the source of truth; MLflow is for browsing (`bench ui`). Runs are created
through `MlflowClient` (no global active run), so Lightning's `MLFlowLogger` can write a fit's
curves straight into its nested run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning.pytorch.loggers import MLFlowLogger

EXPERIMENT = "bench"


def default_tracking_uri(results_dir: Path) -> str:
    return f"sqlite:///{(results_dir / 'mlflow.db').resolve()}"


#: what --tracking-uri may be: an MLflow server, a database, a local store (a bare path is a local store)
TRACKING_SCHEMES = ("http", "https", "sqlite", "file", "postgresql", "mysql", "mssql", "databricks")


def redact(uri: str) -> str:
    """`uri` without its user and password (`https://user:token@host/x` -> `https://host/x`)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable URI>"
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


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


def batched_logger(tracking_uri: str, run_id: str) -> MLFlowLogger:
    """Lightning's `MLFlowLogger`, holding metric points until an epoch's metrics are saved or the fit ends.

    Each `log_batch` is a database transaction (about 3 ms on SQLite); one per logged training step
    cost 1-2% of a small fit. Points keep their own step and time, so the curves are the same.
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
                self.experiment.log_batch(run_id=self.run_id, metrics=pending)

        def save(self) -> None:  # Lightning calls this after logging an epoch's metrics
            self.flush()
            super().save()

        def finalize(self, status: str = "success") -> None:
            self.flush()
            super().finalize(status)

    return BatchedMLFlowLogger()


class Tracker:
    """Thin wrapper over `MlflowClient` for the harness's run hierarchy."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            location = artifact_root.resolve().as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(EXPERIMENT, artifact_location=location)
        else:
            self.experiment_id = experiment.experiment_id

    def cell_run(self, cell_id: str, name: str, tags: dict[str, str]) -> str:
        """The parent run of a cell: reused when a previous (interrupted) run of the cell exists."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.cell_id = '{cell_id}' and tags.level = 'cell'", max_results=1
        )
        if found:
            return str(found[0].info.run_id)
        run = self.client.create_run(self.experiment_id, run_name=name, tags={**tags, "level": "cell"})
        return str(run.info.run_id)

    def child_run(self, parent_id: str, name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
        tags = {**tags, "mlflow.parentRunId": parent_id}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        for key, value in params.items():
            self.client.log_param(run.info.run_id, key, value)
        return str(run.info.run_id)

    def logger(self, run_id: str) -> MLFlowLogger:
        """A Lightning logger writing a fit's metric curves into `run_id`, in batches (see `batched_logger`)."""
        return batched_logger(self.uri, run_id)

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, float(value))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def log_artifact(self, run_id: str, path: Path) -> None:
        self.client.log_artifact(run_id, str(path))
