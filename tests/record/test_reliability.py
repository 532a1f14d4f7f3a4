"""No secret or local path in any output; hostile tracking and storage URIs give clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.plan.validate import check_storage, check_tracking_uri
from bench.record.tracking import public_uri
from bench_leaderboard.model import mlflow_url
from bench_record.schema import MlflowRun
from bench_record.uris import redact

#: a hand-written record's task: what every cell record says of its task
TASK = {"id": "reverse", "metric": "accuracy", "higher_is_better": True}


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
    info = MlflowRun(tracking_uri="https://user:token@host:5000/", experiment_id="1", run_id="r")
    url = mlflow_url(info)
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
    from bench.record import tracking
    from bench.record.tracking import Tracker, default_tracking_uri

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


#: a process that sets up the MLflow store at argv[1] and prints the harness's experiment id
TRACKER_SETUP = "import sys; from bench.record.tracking import Tracker; print(Tracker(sys.argv[1]).experiment_id)"


def test_processes_setting_up_one_fresh_mlflow_store_at_once_all_get_it(tmp_path: Path) -> None:
    """MLflow makes a SQLite store's tables one migration statement at a time: set-ups racing on a fresh
    store (two drivers on one results folder, a run's workers) would leave it half made for good."""
    import subprocess
    import sys

    from bench.record.tracking import default_tracking_uri

    uri = default_tracking_uri(tmp_path)
    setups = [subprocess.Popen([sys.executable, "-c", TRACKER_SETUP, uri], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(3)]  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in setups]
    assert [p.returncode for p in setups] == [0, 0, 0], [err[-1500:] for _, err in outputs]
    assert len({out.split()[-1] for out, _ in outputs}) == 1  # one experiment, not one each
    done = subprocess.run([sys.executable, "-c", TRACKER_SETUP, uri], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]


def _tables(path: Path) -> set[str]:
    import sqlite3

    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_half_made_mlflow_store_is_made_afresh_only_when_it_holds_no_run(tmp_path: Path) -> None:
    import sqlite3
    import subprocess
    import sys

    from bench.record.tracking import Tracker, default_tracking_uri

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with sqlite3.connect(fresh / "mlflow.db") as db:  # what a set-up killed mid-migration leaves
        db.execute("CREATE TABLE _alembic_tmp_params (key VARCHAR(250))")
    tracker = Tracker(default_tracking_uri(fresh))
    assert tracker.cell_run("cell-a", "cell", {}) is not None
    (kept,) = fresh.glob("mlflow.db.unusable-*")
    assert tracker.problems == [f"MLflow store half made, holding no run: made afresh (the old one kept beside it "
                                f"as {kept.name})"]  # fmt: skip
    assert "_alembic_tmp_params" in _tables(kept) and "_alembic_tmp_params" not in _tables(fresh / "mlflow.db")

    used = tmp_path / "used"
    assert Tracker(default_tracking_uri(used)).cell_run("cell-b", "cell", {}) is not None
    with sqlite3.connect(used / "mlflow.db") as db:  # a schema MLflow refuses to use until `mlflow db upgrade`
        db.execute("UPDATE alembic_version SET version_num = '451aebb31d03'")
    again = subprocess.run([sys.executable, "-c", TRACKER_SETUP, default_tracking_uri(used)], capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert again.returncode != 0 and "out-of-date database schema" in again.stderr
    assert not list(used.glob("*.unusable-*"))
    with sqlite3.connect(used / "mlflow.db") as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 1  # a store with a run is never emptied


def test_mlflow_failing_loses_no_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every MLflow write fails during the run: the cells finish ok, results saved, the misses recorded."""
    from mlflow.tracking import MlflowClient

    from bench.plan.suites import smoke
    from bench.record import tracking
    from bench.record.store import ResultStore
    from bench.run.pipeline import RunOptions, run

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
    from bench.record.store import ResultStore

    store = ResultStore(tmp_path / "results")
    good = {"cell_id": "abc", "task": TASK, "variant": {"id": "qkv", "display_name": "QKV"}, "status": "ok",
            "seeds": [0, 1], "summary": {"mean": 0.5, "ci95_low": 0.4, "ci95_high": 0.6, "n": 2}, "costs": {},
            "tuning": {}, "per_seed": [{"seed": 0, "test": {"accuracy": 0.5}}]}  # fmt: skip
    kept = store.write_cell(good)
    attempt = store.write_cell({**good, "status": "failed", "reason": "data: download refused", "seeds": [0, 1, 2]})
    assert attempt.parent == tmp_path / "results" / "attempts" and attempt != kept
    assert store.load(kept)["status"] == "ok" and store.load(attempt)["kept_ok_result"] == kept.name
    assert [r["status"] for r in store.all_cells()[0]] == ["ok"]  # the attempt is reported, not read as the cell
    assert store.write_cell({**good, "seeds": [0, 1, 2]}) == kept and store.load(kept)["seeds"] == [0, 1, 2]
    fresh = {**good, "cell_id": "new", "status": "failed", "reason": "RuntimeError: boom"}
    assert store.write_cell(fresh).parent.name == "cells"  # nothing good to keep: the failure is the record


def test_a_cell_that_keeps_failing_is_given_up_after_max_attempts_until_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from bench.plan import matrix
    from bench.plan.suites import smoke
    from bench.record.store import MAX_ATTEMPTS, ResultStore
    from bench.run import cells
    from bench.run.pipeline import RunOptions, plan, run

    calls: list[str] = []

    def broken(cell: Any, ctx: Any, parent: Any) -> Any:
        calls.append(cell.id)
        raise RuntimeError("boom")

    monkeypatch.setattr(cells, "_tune", broken)
    suite = dataclasses.replace(smoke(), variants=("qkv",), trials=0, seeds=(0,))
    options = RunOptions(results=tmp_path / "results", data_dir=tmp_path / "data", tracking_uri="none")
    store = ResultStore(options.results)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert run(suite, options) == 1
        (record,) = store.all_cells()[0]
        assert record["status"] == "failed" and store.attempts(record["cell_id"]) == {
            "count": attempt, "last": "failed: RuntimeError: boom", "progress": 0}  # fmt: skip
    assert len(calls) == MAX_ATTEMPTS
    (cell,) = plan(suite, options)
    assert matrix.status(cell, store, 0) == "gave up"
    assert run(suite, options) == 1 and len(calls) == MAX_ATTEMPTS  # not tried a fourth time
    (record,) = store.all_cells()[0]
    assert record["reason"] == f"failed after {MAX_ATTEMPTS} attempts; the last: failed: RuntimeError: boom"
    assert run(suite, dataclasses.replace(options, retry_failed=True)) == 1 and len(calls) == MAX_ATTEMPTS + 1
    assert store.attempts(cell.id)["count"] == 1  # counted afresh


def test_temp_files_of_killed_writes_are_swept_and_live_ones_left(tmp_path: Path) -> None:
    import os
    import time

    from bench.record.store import TORN_AFTER_S, ResultStore, write_json_atomic

    store = ResultStore(tmp_path / "results")
    write_json_atomic(store.cells_dir / "a__b__c.json", {"ok": 1})
    old = [store.cells_dir / ".a__b__d.json.x1.tmp", store.partial_dir / "c" / ".seed-0.json.x2.tmp",
           store.root / "leaderboard" / ".index.html.x4.tmp"]  # fmt: skip
    fresh = store.cells_dir / ".a__b__e.json.x3.tmp"  # another run writing right now
    for path in [*old, fresh]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{")
    for path in old:
        os.utime(path, (time.time() - TORN_AFTER_S - 1,) * 2)
    assert sorted(store.sweep_torn_writes()) == sorted(old)
    assert fresh.exists() and (store.cells_dir / "a__b__c.json").exists() and not any(p.exists() for p in old)


def test_an_attempt_that_never_returns_is_counted_and_an_ok_cell_forgets_its_attempts(tmp_path: Path) -> None:
    from bench.record.store import ResultStore

    store = ResultStore(tmp_path / "results")
    assert store.attempts("abc")["count"] == 0
    store.start_attempt("abc", progress=0)  # then the process is killed: no end_attempt
    unfinished = "did not finish: the process died, was killed or hung"
    assert store.attempts("abc") == {"count": 1, "last": unfinished, "progress": 0}
    store.start_attempt("abc", progress=0)  # killed again, having saved nothing: counted
    assert store.attempts("abc")["count"] == 2
    store.start_attempt("abc", progress=3)  # the last attempt saved 3 fits before its run was stopped
    assert store.attempts("abc") == {"count": 1, "last": unfinished, "progress": 3}
    store.end_attempt("abc", "ok")
    assert store.attempts("abc")["count"] == 0
    with pytest.raises(ValueError, match="cell id"):
        store.start_attempt("../escape", progress=0)


# --- plugins and ids (the table of hostile inputs through the CLI is tests/run/test_hostile.py) ----------


def test_a_task_plugin_whose_prepare_crashes_fails_only_its_own_task(tmp_path: Path) -> None:
    from bench.registry import tasks
    from bench.run.data import prepare_tasks

    class Broken:
        id = "broken"

        def prepare(self, data_dir: Path) -> None:
            raise KeyError("oops")

    outcomes = {o.task: o for o in prepare_tasks([Broken(), tasks().get("reverse")], tmp_path / "data")}
    assert "broken's prepare raised KeyError" in str(outcomes["broken"].error)
    assert outcomes["reverse"].error is None and outcomes["reverse"].source is not None


def test_bench_cache_reports_a_broken_variant_by_name_and_measures_the_rest(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.cli import main
    from bench.report import tables as report

    real = report.measure_decoding

    def broken_for_mqa(spec: object, *args: object, **kwargs: object) -> object:
        if getattr(spec, "id", "") == "mqa":
            raise RuntimeError("cache holds 1 tensors per token, got 2")
        return real(spec, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(report, "measure_decoding", broken_for_mqa)
    assert main(["cache", "--variants", "qkv,mqa,tied-kv", "--tokens", "4", "--layers", "1"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "cache holds 1 tensors per token, got 2" in out and out.count("yes") == 2  # qkv and tied-kv measured


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", "", "x" * 81, "-lead", "a b", "ok\n"])
def test_ids_that_would_become_paths_outside_the_store_are_refused(bad: str, tmp_path: Path) -> None:
    from bench.record.store import ResultStore

    store = ResultStore(tmp_path / "results")
    record = {"cell_id": "abc123", "task": TASK, "variant": {"id": bad, "display_name": "X"}, "status": "n/a",
              "reason": "not run"}  # fmt: skip
    with pytest.raises(ValueError, match="is not a safe id"):
        store.write_cell(record)
    with pytest.raises(ValueError, match="is not a safe id"):
        store.write_seed(bad, {"seed": 0})
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_a_plugin_with_an_unsafe_id_is_reported_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses
    import sys
    import types
    from importlib.metadata import EntryPoint

    from bench.registry import Registry
    from bench_variants import presets
    from bench_variants.base import VariantSpec

    module = types.ModuleType("evil_plugin")
    module.EVIL = dataclasses.replace(presets.QKV, id="../evil")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "evil_plugin", module)
    ep = EntryPoint(name="../evil", value="evil_plugin:EVIL", group="bench.variants")
    registry: Registry[VariantSpec] = Registry("bench.variants", "variant", VariantSpec, entries=[ep])
    assert registry.all() == {}
    assert "is not a safe id" in registry.failures["../evil"].error


def test_a_claimed_cell_is_left_alone_and_a_dead_runs_claim_is_taken_over(tmp_path: Path) -> None:
    import json
    import socket
    import subprocess
    import sys

    from bench.record.store import ResultStore

    store = ResultStore(tmp_path / "results")
    with store.claim("abc") as first, store.claim("abc") as second:
        assert first and not second
    assert not (tmp_path / "results" / "locks" / "abc.lock").exists()  # released
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = tmp_path / "results" / "locks" / "abc.lock"
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))  # a kill -9'd run's
    with store.claim("abc") as taken:
        assert taken
    lock.write_text(json.dumps({"pid": 1, "host": "another-machine"}))
    with store.claim("abc") as other_host:
        assert not other_host and lock.exists()


def test_two_runs_on_one_results_folder_run_every_cell_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    from bench.record.store import ResultStore
    from bench.record.tracking import default_tracking_uri

    argv = [sys.executable, "-m", "bench.cli", "run", "--suite", "smoke", "--results", str(tmp_path / "results"),
            "--data-dir", str(tmp_path / "data")]  # fmt: skip
    runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outputs
    records, _ = ResultStore(tmp_path / "results").all_cells()
    assert sorted(r["status"] for r in records) == ["ok", "ok"]
    client = MlflowClient(default_tracking_uri(tmp_path / "results"))
    experiment = client.get_experiment_by_name("bench")
    assert experiment is not None
    for record in records:
        children = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{record['mlflow']['run_id']}'"
        )
        assert len(children) == 2 + 2, outputs  # 2 trials and 2 seeds: nothing ran twice


KILLER_PLUGIN = """
import dataclasses, os, signal
from bench_variants.grid import SharedProjectionVariant

@dataclasses.dataclass(frozen=True)
class Killer(SharedProjectionVariant):
    def build(self, config):
        os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does to a worker

    def mechanism(self, config):
        return None  # its own computation, never n/a as QKV's twin

KILLER = Killer("killer", "Killer", summary="kills the process that builds it")
"""


def test_a_worker_killed_under_jobs_2_fails_its_cell_not_the_run(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from bench.record.store import ResultStore

    site = tmp_path / "site"
    (site / "killer_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "killer_plugin.py").write_text(KILLER_PLUGIN)
    (site / "killer_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: killer-plugin\n"
                                                                   "Version: 0.1\n")  # fmt: skip
    (site / "killer_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[bench.variants]\nkiller = killer_plugin:KILLER\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "bench.cli", "run", "--suite", "smoke", "--variants", "qkv,tied-kv,killer",
            "--jobs", "2", "--tracking-uri", "none", "--results", str(tmp_path / "results"),
            "--data-dir", str(tmp_path / "data")]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr  # a failed cell, reported; not a crash
    records = {r["variant"]["id"]: r for r in ResultStore(tmp_path / "results").all_cells()[0]}
    assert records["qkv"]["status"] == records["tied-kv"]["status"] == "ok"
    assert records["killer"]["status"] == "failed" and "worker process died" in records["killer"]["reason"]
    assert "Traceback" not in done.stdout + done.stderr


def test_a_hanging_fit_is_stopped_at_its_time_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from bench.fit.loop import FitHooks
    from bench.fit.train import FitTimeout, fit
    from bench.registry import tasks, variants
    from bench_tasks.base import OptimConfig

    task = tasks().get("reverse")
    monkeypatch.setattr(type(task), "fit_time_limit", lambda self, config: 0.5)

    class Hang(FitHooks):
        def batch_ended(self, step: int) -> None:
            time.sleep(30)  # a plugin stuck in a wait

    started = time.perf_counter()
    with pytest.raises(FitTimeout, match="ran past its time limit"):
        fit(task, variants().get("qkv"), task.config("smoke"), OptimConfig(), seed=0, data_dir=tmp_path,
            test=False, hooks=[Hang()])  # fmt: skip
    assert time.perf_counter() - started < 10


def test_a_resumed_study_reruns_the_cut_trial_and_is_offered_its_siblings_candidates(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    from bench.fit.tuning import open_study, reseed, suggest, tune

    space = {"lr": ("log", 1e-4, 1e-2), "weight_decay": ("log", 1e-5, 1e-1)}
    defaults = {"lr": 1e-3, "weight_decay": 1e-4}
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"

    def study(cell: str) -> Any:
        return open_study(cell, storage, True, sampler_key="reverse:default", defaults=defaults)

    sibling: list[dict[str, float]] = []
    tune(study("sibling"), 5, space, lambda t, p: sibling.append(p) or -p["lr"], defaults=defaults)
    assert sibling[0] == defaults and len(sibling) == 5  # trial 0 is always the defaults
    resumed, first = study("resumed"), []
    for k in range(3):  # two trials finish; the third is cut short by a kill -9: it stays RUNNING
        reseed(resumed, k)
        trial = resumed.ask()
        params = suggest(trial, space)
        if k < 2:
            resumed.tell(trial, -params["lr"])
            first.append(params)
    again = study("resumed")
    states = [t.state for t in again.get_trials()]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.WAITING) == 1
    rest: list[dict[str, float]] = []
    tune(again, 5, space, lambda t, p: rest.append(p) or -p["lr"], defaults=defaults)
    assert rest[0] == params  # the cut trial runs again with its own parameters
    assert first + rest == sibling  # the same candidates, in the same order, as the uninterrupted sibling


def test_data_origins_are_recorded_without_local_paths(tmp_path: Path) -> None:
    import sys

    from bench_tasks.base import DataSource, public_origin

    data = tmp_path / "data"
    assert public_origin(str(data / "FashionMNIST" / "raw"), data) == "<data>/FashionMNIST/raw"
    site = next(p for p in sys.path if p.endswith("site-packages"))
    origin = public_origin(f"{site}/rich/console.py", data)
    assert origin.startswith("<package rich ") and origin.endswith(">/console.py") and site not in origin
    assert public_origin("/srv/shared/photos/kodim01.png", data) == "<local>/photos/kodim01.png"
    assert public_origin("generated in memory per seed", data) == "generated in memory per seed"
    assert public_origin("https://example.org/x.zip", data) == "https://example.org/x.zip"
    source = DataSource("MNIST", "real", str(data / "mnist"), "note")
    assert source.public(data) == {"name": "MNIST", "kind": "real", "origin": "<data>/mnist", "note": "note"}
