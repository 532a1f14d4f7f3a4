"""What a `bench run` was asked to do besides its suite: where results, data, trials and runs go, and
where cells run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: what `--ray` says where Ray is not installed
RAY_MISSING = "--ray needs Ray, an optional extra: pip install 'bench[ray]' (on every node of the cluster)"


@dataclass(frozen=True)
class RunOptions:
    results: Path
    data_dir: Path
    storage: str | None = None  # Optuna RDB URL; default: SQLite under the results folder
    tracking_uri: str | None = None  # MLflow; default: SQLite under the results folder; "none" disables
    jobs: int = 1
    dry_run: bool = False
    retry_failed: bool = False  # try again cells that failed `MAX_ATTEMPTS` times
    ray: str | None = None  # run cells as tasks on a Ray cluster: "auto", an address, or "local" (start one here)


def storage_url(options: RunOptions) -> str:
    return options.storage or f"sqlite:///{(options.results / 'optuna.db').resolve()}"
