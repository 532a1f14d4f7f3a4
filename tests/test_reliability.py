"""No secret or local path in any output; hostile tracking and storage URIs give clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.tracking import public_uri, redact
from bench.validate import check_storage, check_tracking_uri
from bench_leaderboard.model import mlflow_url


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("https://user:token@mlflow.example.org:5000/x", "https://mlflow.example.org:5000/x"),
        ("postgresql://bench:s3cret@db:5432/optuna", "postgresql://db:5432/optuna"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ],
)
def test_redact_drops_user_and_password(uri: str, expected: str) -> None:
    assert redact(uri) == expected


def test_results_record_no_credentials_and_no_local_path(tmp_path: Path) -> None:
    results = tmp_path / "results"
    inside = f"sqlite:///{(results / 'mlflow.db').resolve()}"
    assert public_uri(inside, results) == "sqlite:///<results>/mlflow.db"
    assert public_uri(f"sqlite:///{tmp_path / 'elsewhere' / 'runs.db'}", results) == "sqlite:///<local>/runs.db"
    assert public_uri("https://u:p@host/mlflow", results) == "https://host/mlflow"
    assert str(tmp_path) not in public_uri(inside, results)


def test_leaderboard_links_never_carry_credentials_from_older_records() -> None:
    record = {"mlflow": {"tracking_uri": "https://user:token@host:5000/", "experiment_id": "1", "run_id": "r"}}
    url = mlflow_url(record)
    assert url == "https://host:5000/#/experiments/1/runs/r" and "token" not in url


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("javascript:alert(1)", "neither a URI"),
        ("javascript://alert(1)", "is not an MLflow store"),
        ("ftp://host/x", "is not an MLflow store"),
        ("https://user:hunter2@127.0.0.1:9/", "cannot reach the MLflow tracking server"),
    ],
)
def test_hostile_tracking_uris_are_refused_without_echoing_secrets(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        check_tracking_uri(uri)
    assert "hunter2" not in str(caught.value)


def test_local_tracking_stores_are_accepted(tmp_path: Path) -> None:
    check_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    check_tracking_uri(str(tmp_path / "mlruns"))


def test_storage_errors_do_not_echo_the_password() -> None:
    with pytest.raises(ValueError, match="cannot reach the Optuna storage") as caught:
        check_storage("postgresql://bench:hunter2@127.0.0.1:9/optuna")
    assert "hunter2" not in str(caught.value) and "127.0.0.1:9" in str(caught.value)
