"""MLflow as an observer: a parent run per cell, nested runs per trial and per seed.

The results store stays the source of truth; MLflow is for browsing (`bench ui`). Runs are created
through `MlflowClient` (no global active run), so Lightning's `MLFlowLogger` can write a fit's
curves straight into its nested run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning.pytorch.loggers import MLFlowLogger

EXPERIMENT = "bench"


def default_tracking_uri(results_dir: Path) -> str:
    return f"sqlite:///{(results_dir / 'mlflow.db').resolve()}"


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
        """A Lightning logger writing a fit's metric curves into `run_id`."""
        from lightning.pytorch.loggers import MLFlowLogger

        return MLFlowLogger(experiment_name=EXPERIMENT, tracking_uri=self.uri, run_id=run_id)

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
