"""`bench run`: matrix expansion, cell ids, statistics, resume, MLflow, and input errors."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.plan import matrix
from bench.plan.suites import smoke
from bench.record.store import ResultStore
from bench.registry import tasks, variants
from bench.run.pipeline import RunOptions, plan
from bench_record.stats import paired, summarize
from bench_tasks.synthetic import DigitTask


def _options(tmp_path: Path, **kw: object) -> RunOptions:
    return RunOptions(results=tmp_path / "results", data_dir=tmp_path / "data", **kw)  # type: ignore[arg-type]


def test_matrix_expands_task_by_variant_with_na_cells(tmp_path: Path) -> None:
    suite = smoke().override(tasks=("reverse", "lm"), variants=("qkv", "tied-qk-pos", "gqa8"))
    cells = plan(suite, _options(tmp_path))
    assert [(c.task.id, c.variant.id) for c in cells] == [
        (t, v) for t in ("reverse", "lm") for v in ("qkv", "tied-qk-pos", "gqa8")
    ]
    na = {(c.task.id, c.variant.id): c.na_reason for c in cells if c.na_reason}
    assert "causal" in na[("lm", "tied-qk-pos")]  # "+" forms are non-causal only
    assert "8 KV heads" in na[("reverse", "gqa8")]  # the smoke model has 2 heads
    assert ("reverse", "tied-qk-pos") not in na


def test_baseline_comes_first_and_builtin_expands() -> None:
    suite = smoke().override(variants=("builtin",), baseline="qkv")
    specs = matrix.resolve_variants(suite, variants())
    assert specs[0].id == "qkv"
    assert {"tied-kv", "tied-kv-mqa", "gqa4"} <= {s.id for s in specs}
    assert "latent-kv" not in {s.id for s in specs}  # a plugin is not built in


def test_cell_ids_are_stable_and_change_with_versions() -> None:
    task, variant = tasks().get("reverse"), variants().get("tied-kv")
    config = task.config("smoke")
    first = matrix.cell_id(task, variant, config)
    assert first == matrix.cell_id(task, variant, config)
    assert len(first) == 12
    bumped_task = DigitTask("reverse")
    bumped_task.version = str(int(task.version) + 1)
    assert matrix.cell_id(bumped_task, variant, config) != first
    bumped_variant = dataclasses.replace(variant, version="2")
    assert matrix.cell_id(task, bumped_variant, config) != first
    assert matrix.cell_id(task, variant, dataclasses.replace(config, d_model=64)) != first


def test_seed_statistics() -> None:
    s = summarize([0.8, 0.9, 1.0])
    assert s.mean == pytest.approx(0.9) and s.std == pytest.approx(0.1)
    assert s.ci95_low == pytest.approx(0.9 - 4.302653 * 0.1 / 3**0.5, rel=1e-5)
    one = summarize([0.5])
    assert (one.ci95_low, one.ci95_high) == (0.5, 0.5)
    better = paired({0: 0.9, 1: 0.92, 2: 0.91}, {0: 0.8, 1: 0.81, 2: 0.805})
    assert better is not None and better.significant and better.mean_diff > 0 and better.p_value < 0.05
    noise = paired({0: 0.9, 1: 0.8}, {0: 0.8, 1: 0.9})
    assert noise is not None and not noise.significant
    assert paired({0: 1.0}, {1: 1.0}) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--tasks", "revrse"], "Unknown task 'revrse'; did you mean 'reverse'"),
        (["run", "--variants", "qkv2"], "did you mean 'qkv'"),
        (["run", "--trials", "-1"], "--trials must be 0 or more"),
        (["run", "--seeds", "0"], "--seeds '0'"),
        (["run", "--suite", "smok"], "did you mean 'smoke'"),
        (["run", "--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot reach the Optuna storage"),
        (["run", "--tracking-uri", "http://127.0.0.1:9"], "cannot reach the MLflow tracking server"),
    ],
)
def test_invalid_flags_fail_before_any_work(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    if "--suite" not in argv:
        argv = [*argv, "--suite", "smoke"]
    assert main([*argv, "--results", str(results), "--data-dir", str(tmp_path / "data")]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (results / "cells").exists()


def _bench(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench.cli", "run", "--suite", "smoke", "--results", str(tmp_path / "results"),
            "--data-dir", str(tmp_path / "data"), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One smoke run shared by the tests that read its results: 2 variants x 1 task x 2 trials x 2 seeds."""
    tmp_path = tmp_path_factory.mktemp("smoke")
    subprocess.run(_bench(tmp_path), check=True, capture_output=True, text=True)
    return tmp_path


def test_smoke_run_writes_one_json_per_cell(smoke_run: Path) -> None:
    store = ResultStore(smoke_run / "results")
    results, problems = store.all_cells()
    assert not problems and len(results) == 2
    by_variant = {r["variant"]["id"]: r for r in results}
    for record in results:
        assert record["status"] == "ok" and record["schema_version"] == 1
        assert [s["seed"] for s in record["per_seed"]] == [0, 1]
        assert record["tuning"]["trials_finished"] == 2 and record["tuning"]["split"] == "validation"
        assert {"git_sha", "git_dirty", "packages", "device"} <= set(record["provenance"])
        assert record["data_source"]["kind"] == "synthetic"
        measured = record["costs"]["kv_measured"]
        assert measured["bytes_held"] == measured["bytes_derived"]
    assert by_variant["tied-kv"]["costs"]["kv_bytes_per_token"] * 2 == by_variant["qkv"]["costs"]["kv_bytes_per_token"]
    assert "mean_diff" in by_variant["tied-kv"]["baseline_comparison"]


def test_second_run_is_all_cached_and_retrains_nothing(smoke_run: Path) -> None:
    mtimes = {p: p.stat().st_mtime_ns for p in (smoke_run / "results" / "cells").glob("*.json")}
    again = subprocess.run(_bench(smoke_run, "--dry-run"), check=True, capture_output=True, text=True).stdout
    assert again.count("cached") == 2
    out = subprocess.run(_bench(smoke_run), check=True, capture_output=True, text=True).stdout
    assert "cells: 0.0s" in out or "cells: 0.1s" in out
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing retrained or rewritten


def test_a_clone_of_finished_results_without_their_local_databases_runs_nothing(
    smoke_run: Path, tmp_path: Path
) -> None:
    """What git carries of a results folder (cells/, no Optuna or MLflow database): all cached, nothing rewritten."""
    clone = tmp_path / "results"
    shutil.copytree(smoke_run / "results" / "cells", clone / "cells")
    mtimes = {p: p.stat().st_mtime_ns for p in (clone / "cells").glob("*.json")}
    argv = [a if a != str(smoke_run / "results") else str(clone) for a in _bench(smoke_run)]
    assert subprocess.run([*argv, "--dry-run"], check=True, capture_output=True, text=True).stdout.count("cached") == 2
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    assert "cells: 0.0s" in out or "cells: 0.1s" in out
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert not list((clone / "partial").glob("*/seed-*.json"))


def test_mlflow_holds_a_parent_run_per_cell_with_nested_runs(smoke_run: Path) -> None:
    import mlflow

    uri = f"sqlite:///{smoke_run / 'results' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["bench"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("level") == "cell"]
    assert len(parents) == 2
    for parent in parents:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        names = sorted(r.info.run_name for r in children)
        assert names == ["seed-0", "seed-1", "trial-0", "trial-1"]
        assert any(key.startswith("val/") for c in children for key in c.data.metrics)
        assert parent.data.tags["cell_id"] and parent.info.status == "FINISHED"
        assert parent.data.tags["data_kind"] == "synthetic" and parent.data.tags["suite"] == "smoke"


def test_mlflow_ui_serves_the_runs_over_rest(smoke_run: Path) -> None:
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "bench.cli", "ui", "--results", str(smoke_run / "results"), "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        body = json.dumps({"experiment_ids": ["1"], "max_results": 100}).encode()
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search"
        deadline, runs = time.time() + 120, None
        while time.time() < deadline and runs is None:
            try:
                experiments = urllib.request.urlopen(
                    urllib.request.Request(
                        f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=bench"
                    ),
                    timeout=5,
                )
                exp_id = json.loads(experiments.read())["experiment"]["experiment_id"]
                body = json.dumps({"experiment_ids": [exp_id], "max_results": 100}).encode()
                request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
                runs = json.loads(urllib.request.urlopen(request, timeout=5).read())["runs"]
            except OSError:
                time.sleep(1)
        assert runs is not None, "the MLflow UI did not answer on loopback"
        levels = [t["value"] for r in runs for t in r["data"].get("tags", []) if t["key"] == "level"]
        assert levels.count("cell") == 2 and len(runs) == 2 + 2 * 4
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _trial_count(results: Path) -> dict[str, int]:
    import optuna

    storage = optuna.storages.get_storage(f"sqlite:///{results / 'optuna.db'}")
    return {s.study_name: len(storage.get_all_trials(s._study_id)) for s in storage.get_all_studies()}


def test_kill_9_then_resume_redoes_nothing_finished(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = subprocess.Popen(_bench(tmp_path, "--tracking-uri", "none"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.time() + 240
    cells_dir = results / "cells"
    while time.time() < deadline and not (cells_dir.exists() and any(cells_dir.glob("*.json"))):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = sorted(cells_dir.glob("*.json"))
    assert first, "the run did not finish a cell in time"
    before = {p.name: json.loads(p.read_text())["created_at"] for p in first}
    trials_before = _trial_count(results)
    subprocess.run(_bench(tmp_path, "--tracking-uri", "none"), check=True, capture_output=True, text=True)
    after = {p.name: json.loads(p.read_text()) for p in cells_dir.glob("*.json")}
    assert len(after) == 2 and all(r["status"] == "ok" for r in after.values())
    for name, created in before.items():
        assert after[name]["created_at"] == created  # the finished cell was not redone
    trials_after = _trial_count(results)
    for study, n in trials_before.items():
        # at most the trial in flight was lost (marked failed) and replaced
        assert trials_after[study] <= max(n, 2) + 1
    assert all(r["tuning"]["trials_finished"] == 2 for r in after.values())


def test_study_resumes_marks_the_killed_trial_failed_and_fills_the_budget(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    from bench.fit.tuning import SHARED_SPACE, finished_trials, open_study, tune

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    calls: list[dict[str, float]] = []

    def objective(trial: object, params: dict[str, float]) -> float:
        calls.append(params)
        return -abs(params["lr"] - 1e-3)

    study = open_study("abc123", storage, higher_is_better=True)
    tune(study, 2, SHARED_SPACE, objective)
    study.ask()  # a trial in flight when the process is killed
    resumed = open_study("abc123", storage, higher_is_better=True)
    states = [t.state for t in resumed.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    best = tune(resumed, 3, SHARED_SPACE, objective)
    assert finished_trials(resumed) == 3 and len(calls) == 3  # only the missing trial ran
    assert set(best) == set(SHARED_SPACE)
    assert calls[2] != calls[0]  # the resumed sampler does not replay the first trial
