"""Checks of `bench run`'s inputs that must fail before any work starts, with the fix in the message."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.fit.tuning import TUNING_SEED
from bench.plan.suites import Suite

if TYPE_CHECKING:
    from bench.options import RunOptions


def check_run_inputs(suite: Suite, options: RunOptions, storage: str) -> None:
    """Raise ValueError naming the problem and the fix; unknown names are caught by the registries."""
    if suite.trials < 0:
        raise ValueError(f"--trials must be 0 or more, got {suite.trials}; use 0 to skip tuning")
    if not suite.seeds:
        raise ValueError("--seeds is empty; give at least one seed, e.g. --seeds 0,1")
    if suite.looks and (list(suite.looks) != sorted(set(suite.looks)) or suite.looks[0] < 2
                        or suite.looks[-1] > len(suite.seeds)):  # fmt: skip
        raise ValueError(
            f"suite {suite.name!r}: looks {list(suite.looks)} must rise from at least 2 seeds to at "
            f"most its {len(suite.seeds)} seeds; fix the suite, or give --seeds N for fixed seeds"
        )
    if len(set(suite.seeds)) != len(suite.seeds):
        raise ValueError(f"--seeds repeats a seed: {list(suite.seeds)}")
    bad = [s for s in suite.seeds if not 0 <= s < TUNING_SEED]
    if bad:
        raise ValueError(
            f"--seeds {bad}: test seeds must lie in 0..{TUNING_SEED - 1} "
            f"(seed {TUNING_SEED} and above are the tuning fits'); e.g. --seeds 0,1,2,3,4"
        )
    for name, value in (("--epochs", suite.max_epochs), ("--max-steps", suite.max_steps), ("--devices", suite.devices)):
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if options.jobs < 1:
        raise ValueError(f"--jobs must be 1 or more, got {options.jobs}")
    if options.ray is not None:
        _check_ray(options.ray)
    if not suite.tasks:
        raise ValueError("no tasks selected; pass --tasks, e.g. --tasks reverse,mnist")
    _check_writable(options.results, "--results")
    check_data_dir(options.data_dir)
    from bench.fit.train import env_threads

    env_threads()  # a bad $BENCH_THREADS fails here, not in every fit
    from bench.fit.tuning import heartbeat_seconds

    heartbeat_seconds()  # and bad heartbeat settings before the first trial
    check_storage(storage)
    if options.tracking_uri and options.tracking_uri != "none":
        check_tracking_uri(options.tracking_uri)


def _check_ray(address: str) -> None:
    """--ray names a cluster (auto, local or HOST:PORT, optionally ray://) and Ray is installed."""
    import importlib.util
    import re

    if address not in ("auto", "local") and not re.fullmatch(r"(ray://)?[A-Za-z0-9.\-\[\]:]+:\d+", address):
        raise ValueError(f"--ray {address!r}: give auto, local, or the head node's HOST:PORT (e.g. 10.0.0.1:6379)")
    if importlib.util.find_spec("ray") is None:
        from bench.options import RAY_MISSING

        raise ValueError(RAY_MISSING)


def check_data_dir(folder: Path) -> None:
    """The data cache must be a folder we can create and write (it comes from $BENCH_DATA_DIR or --data-dir)."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"data folder {folder} is a file, not a folder; point $BENCH_DATA_DIR or --data-dir at a folder"
        )
    _check_writable(folder, "data folder ($BENCH_DATA_DIR or --data-dir)")


def _check_writable(folder: Path, flag: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{flag} {folder}: cannot create it ({exc.strerror}); choose a writable folder") from exc
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {folder} is not writable; choose a writable folder")


def check_storage(url: str) -> None:
    """Connect once to the Optuna storage URL and read its list of tables (a damaged file fails here)."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, connect_args=_connect_args(url))
        with engine.connect() as connection:
            sqlalchemy.inspect(connection).get_table_names()
    except Exception as exc:  # any driver's error means the same thing to the user
        from bench_record.uris import redact

        message = (str(exc).splitlines() or [""])[0].replace(url, redact(url))
        if isinstance(exc, ModuleNotFoundError):
            fix = "Install the database's driver: pip install 'bench[postgres]' for PostgreSQL"
        elif url.startswith("sqlite"):
            fix = "Move the file aside (the studies start afresh; the cells' saved results stay) or pass --storage"
        else:
            fix = "Check the URL and that its server is running, or drop --storage to use SQLite under --results"
        raise ValueError(
            f"cannot reach the Optuna storage {redact(url)!r}: {type(exc).__name__}: {message}. {fix}."
        ) from exc


def _connect_args(url: str) -> dict[str, Any]:
    if url.startswith(("postgresql", "mysql")):
        return {"connect_timeout": 5}
    return {}


def check_tracking_uri(uri: str) -> None:
    """An http(s) MLflow server must answer; other URIs (sqlite, files) are created on use."""
    from bench.record.tracking import TRACKING_SCHEMES
    from bench_record.uris import redact

    scheme = uri.split(":", 1)[0].lower() if "://" in uri else ""
    if scheme and scheme.split("+")[0] not in TRACKING_SCHEMES:
        raise ValueError(
            f"--tracking-uri {redact(uri)!r}: the scheme {scheme!r} is not an MLflow store; use one of "
            f"{', '.join(s + '://' for s in TRACKING_SCHEMES)}, a local folder, or none"
        )
    if ":" in uri and "://" not in uri and not Path(uri).anchor:
        raise ValueError(
            f"--tracking-uri {redact(uri)!r} is neither a URI (scheme://...) nor a local folder; "
            "pass e.g. http://127.0.0.1:5000, sqlite:///mlflow.db, or none"
        )
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
            pass
    except OSError as exc:
        raise ValueError(
            f"cannot reach the MLflow tracking server {redact(uri)!r} ({exc}); start it (`bench ui`), "
            "fix --tracking-uri, or pass --tracking-uri none to run without MLflow"
        ) from exc
