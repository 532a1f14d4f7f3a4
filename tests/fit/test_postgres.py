"""Trials on a real PostgreSQL server: Debian's, started for these tests on 127.0.0.1 as its own user.

Skipped where PostgreSQL is not installed (Debian: `apt-get install postgresql`). The server refuses
to run as root, so as root it runs as the `postgres` user in a temporary folder of its own.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.fit import tuning
from tests.servers import postgres_server


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """The URL of a fresh database on a server that lives as long as this module's tests."""
    with postgres_server() as server:
        yield server.url()


@pytest.fixture
def quick_heartbeats(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(tuning, "HEARTBEAT_S", 1)
    monkeypatch.setattr(tuning, "GRACE_S", 3)
    tuning.optuna_storage.cache_clear()  # storages are made once per URL: make them with these settings
    yield
    tuning.optuna_storage.cache_clear()


def _states(study: object) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):  # type: ignore[attr-defined]
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def test_a_run_on_postgresql_gives_each_cell_exactly_its_budget(postgres: str, tmp_path: Path) -> None:
    import optuna

    argv = [sys.executable, "-m", "bench.cli", "run", "--suite", "smoke", "--tasks", "reverse",
            "--variants", "qkv,mqa", "--trials", "3", "--seeds", "1", "--jobs", "2", "--storage", postgres,
            "--results", str(tmp_path / "results"), "--data-dir", str(tmp_path / "data")]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    studies = optuna.storages.get_storage(postgres).get_all_studies()
    assert len(studies) == 2
    for summary in studies:
        study = optuna.load_study(study_name=summary.study_name, storage=postgres)
        finished = _states(study).get("COMPLETE", 0) + _states(study).get("PRUNED", 0)
        assert finished == 3 and set(_states(study)) <= {"COMPLETE", "PRUNED"}, _states(study)


@pytest.mark.usefixtures("quick_heartbeats")
def test_a_live_trial_elsewhere_is_left_alone_and_a_silent_one_is_retried_with_its_parameters(postgres: str) -> None:
    space = tuning.SHARED_SPACE
    mine = tuning.open_study("live-and-silent", postgres, higher_is_better=True)
    live, silent = mine.ask(), mine.ask()  # the first is the queued default-settings trial
    tuning.suggest(live, space)
    tuning.suggest(silent, space)
    silent_params = dict(mine.trials[silent.number].params)
    with tuning.heartbeats(silent):
        pass  # one heartbeat, then silence: the process running it was killed
    with tuning.heartbeats(live):  # beats every second while another process opens the study
        time.sleep(tuning.GRACE_S + 1.5)
        other = tuning.open_study("live-and-silent", postgres, higher_is_better=True)
        trials = {t.number: t for t in other.get_trials(deepcopy=False)}
        assert trials[live.number].state.name == "RUNNING"  # live elsewhere: never failed
        assert trials[silent.number].state.name == "FAIL"
        queued = [t for t in trials.values() if t.state.name == "WAITING"]
        assert [t.params for t in queued] == [silent_params]  # tried again with the same parameters

        # the budget counts the live trial: a budget of 2 leaves one trial to run here, the queued one
        ran: list[dict[str, float]] = []

        def objective(trial: object, params: dict[str, float]) -> float:
            ran.append(params)
            return 0.5

        finish_live = threading.Timer(2.0, lambda: mine.tell(live, 0.7))
        finish_live.start()
        tuning.tune(other, 2, space, objective)
        finish_live.join()
    assert ran == [silent_params]
    assert _states(other) == {"COMPLETE": 2, "FAIL": 1}
