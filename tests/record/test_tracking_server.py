"""One MLflow tracking server for every run: a real `mlflow server` on 127.0.0.1, two runs logging into it.

The two runs stand for two machines of a cluster: each has its own results folder, and both log to the
one server; `bench ui --tracking-uri` points at it, and the leaderboard links into it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return dict(json.loads(answer.read()))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An MLflow tracking server on loopback with its own SQLite store and artifact folder."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'store.db'}",
               "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]  # fmt: skip
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or process.poll() is not None:
                    pytest.fail("the MLflow server did not start on loopback within 120 s")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _run(tmp_path: Path, name: str, task: str, server: str) -> Path:
    results = tmp_path / name
    argv = ["run", "--suite", "smoke", "--tasks", task, "--variants", "qkv", "--trials", "1", "--seeds", "1",
            "--jobs", "1", "--tracking-uri", server, "--results", str(results),
            "--data-dir", str(tmp_path / "data")]  # fmt: skip
    assert main(argv) == 0
    return results


def test_two_runs_log_to_one_server_and_the_leaderboard_links_into_it(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = _run(tmp_path, "node-a", "reverse", server), _run(tmp_path, "node-b", "sub", server)
    experiment = _get(f"{server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=bench")["experiment"]
    runs = _get(f"{server}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]

    def tag(run: dict[str, Any], key: str) -> str | None:
        return next((t["value"] for t in run["data"]["tags"] if t["key"] == key), None)

    cells = [r for r in runs if tag(r, "level") == "cell"]
    assert sorted(tag(r, "task") or "" for r in cells) == ["reverse", "sub"]  # one cell from each run
    for cell in cells:  # each cell's trial and seed are its children, wherever the cell ran
        children = [r["info"]["run_name"] for r in runs if tag(r, "mlflow.parentRunId") == cell["info"]["run_id"]]
        assert sorted(children) == ["seed-0", "trial-0"]
    assert len(runs) == 3 * len(cells)
    assert not experiment["artifact_location"].startswith("file:")  # the server keeps artifacts, not a node
    for results in (first, second):
        (cell,) = (results / "cells").glob("*.json")
        record = json.loads(cell.read_text())
        assert record["mlflow"]["tracking_uri"] == server and not record.get("mlflow_problems")
        page = (results / "leaderboard" / "index.html").read_text()
        assert f"{server}/#/experiments/{experiment['experiment_id']}/runs/{record['mlflow']['run_id']}" in page
    capsys.readouterr()
    assert main(["ui", "--tracking-uri", server]) == 0  # a server is its own UI: say where
    assert f"MLflow UI: {server}" in capsys.readouterr().out


def test_ui_serves_a_store_named_by_its_uri(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ui", "--tracking-uri", f"sqlite:///{tmp_path / 'missing.db'}"]) == 2
    assert "no MLflow store at" in " ".join(capsys.readouterr().err.split())


def _listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:  # refused: nothing holds the port
        return False


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited but not yet reaped by whoever inherited it, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def test_ui_stopped_by_sigterm_stops_its_server_and_frees_the_port(tmp_path: Path) -> None:
    """`kill` (a process supervisor) stops `bench ui` as Ctrl-C does: its server too. SIGHUP (a terminal
    closed) takes the same path."""
    from tests.servers import descendants

    (tmp_path / "mlflow.db").touch()  # an empty store: the server makes its tables
    port = _free_port()
    argv = [sys.executable, "-m", "bench.cli", "ui", "--results", str(tmp_path), "--port", str(port)]
    log = tmp_path / "ui.log"
    with log.open("w") as out:  # a file, not a pipe: a chatty server never blocks on it
        ui = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not _listens(port):
            assert ui.poll() is None and time.monotonic() < deadline, "bench ui did not listen on loopback in 120 s"
            time.sleep(0.5)
        server = descendants(ui.pid)
        assert server, "bench ui runs its server as a child process"
        ui.send_signal(signal.SIGTERM)  # to bench ui alone, as `kill PID` does, not to its process group
        stopped = time.monotonic()
        ui.wait(timeout=30)
        took = time.monotonic() - stopped
        assert took < 15, f"bench ui took {took:.1f} s to stop"
        said = log.read_text()
        assert ui.returncode == 128 + signal.SIGTERM and "stopping the MLflow UI (SIGTERM)" in said, said[-2000:]
        assert not _listens(port)  # the port is free
        assert [pid for pid in server if _running(pid)] == []  # no process of its server is left
        print(f"\nbench ui and its {len(server)} server process(es) stopped {took:.1f} s after SIGTERM")
    finally:
        for pid in [ui.pid, *server]:  # whatever a failure left behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        ui.wait(timeout=30)
