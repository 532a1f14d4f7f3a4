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


def test_a_busy_store_is_retried_and_a_broken_one_only_noted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import tracking
    from bench.tracking import Tracker, default_tracking_uri

    monkeypatch.setattr(tracking, "RETRIES", (0.0, 0.0, 0.0))
    tracker = Tracker(default_tracking_uri(tmp_path), tmp_path / "artifacts")
    calls = []

    def busy_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert tracker._guard("test", busy_twice) == "ok" and len(calls) == 3 and not tracker.problems
    assert tracker._guard("test", lambda: 1 / 0) is None
    assert tracker.problems == ["MLflow test failed: ZeroDivisionError: division by zero"]
    wal = __import__("sqlite3").connect(tmp_path / "mlflow.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert wal == "wal"


def test_mlflow_failing_loses_no_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every MLflow write fails during the run: the cells finish ok, results saved, the misses recorded."""
    from mlflow.tracking import MlflowClient

    from bench import tracking
    from bench.pipeline import RunOptions, run
    from bench.store import ResultStore
    from bench.suites import smoke

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk I/O error")

    monkeypatch.setattr(tracking, "RETRIES", ())
    for name in ("log_metric", "log_batch", "log_param", "set_terminated", "log_artifact"):
        monkeypatch.setattr(MlflowClient, name, refuse)
    options = RunOptions(results=tmp_path / "results", data_dir=tmp_path / "data")
    assert run(smoke().override(trials=1, seeds=(0, 1)), options) == 0
    records, problems = ResultStore(tmp_path / "results").all_cells()
    assert not problems and {r["status"] for r in records} == {"ok"} and len(records) == 2
    for record in records:
        assert [s["seed"] for s in record["per_seed"]] == [0, 1]
        assert record["mlflow_problems"] and all("disk I/O error" in p for p in record["mlflow_problems"])


def test_a_failed_attempt_never_replaces_a_good_result(tmp_path: Path) -> None:
    from bench.store import ResultStore

    store = ResultStore(tmp_path / "results")
    good = {"cell_id": "abc", "task": {"id": "reverse"}, "variant": {"id": "qkv"}, "status": "ok", "seeds": [0, 1]}
    kept = store.write_cell(good)
    attempt = store.write_cell({**good, "status": "failed", "reason": "data: download refused", "seeds": [0, 1, 2]})
    assert attempt.parent == tmp_path / "results" / "attempts" and attempt != kept
    assert store.load(kept)["status"] == "ok" and store.load(attempt)["kept_ok_result"] == kept.name
    assert [r["status"] for r in store.all_cells()[0]] == ["ok"]  # the attempt is reported, not read as the cell
    assert store.write_cell({**good, "seeds": [0, 1, 2]}) == kept and store.load(kept)["seeds"] == [0, 1, 2]
    fresh = {**good, "cell_id": "new", "status": "failed"}
    assert store.write_cell(fresh).parent.name == "cells"  # nothing good to keep: the failure is the record
