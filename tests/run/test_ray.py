"""Cells on a real Ray cluster of two nodes on this machine, trials on a real PostgreSQL, runs in MLflow.

Everything lives in a network namespace of its own with only loopback up (`tests.servers`): the Ray
nodes (two `ray start` processes of one CPU each), the PostgreSQL server and every `bench run` driver.
Each scenario is counted in the Optuna storage (trials per study, by state) and in MLflow (each fit is
a child run of its cell: `trial-N` or `seed-N`; a fit lost in flight is one the retry of its cell ended as
LOST, and none stays RUNNING), and compared with the same suite run on one node.

Skipped where the namespace cannot be made (not root, no `unshare`) or PostgreSQL is not installed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the Ray extra is not installed: pip install 'bench[ray]'")

from tests.servers import LoopbackNamespace, Postgres, RayCluster, postgres_server

#: 3 variants x 2 tasks, 2 trials + 2 seeds each: 24 fits of about a second each on one thread
SUITE = ["--suite", "smoke", "--tasks", "sub,reverse", "--variants", "qkv,mqa,tied-kv", "--trials", "2",
         "--seeds", "2", "--epochs", "40"]  # fmt: skip
N_CELLS, TRIALS, SEEDS = 6, 2, 2
#: heartbeats of the trials: a trial on a lost node is seen silent after a few seconds, not two minutes
QUICK_HEARTBEATS = {"BENCH_HEARTBEAT_S": "1", "BENCH_GRACE_S": "4"}


@dataclass
class Cluster:
    ns: LoopbackNamespace
    ray: RayCluster
    postgres: Postgres
    data: Path

    def bench_run(self, results: Path, storage: str, *extra: str) -> subprocess.Popen[str]:
        argv = [*self.ns.prefix, sys.executable, "-m", "bench.cli", "run", *SUITE, "--ray", self.ray.address,
                "--storage", storage, "--results", str(results), "--data-dir", str(self.data), *extra]  # fmt: skip
        return subprocess.Popen(argv, env=self.ray.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@dataclass
class Run:
    results: Path
    storage: str
    seconds: float
    output: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A one-node Ray cluster (add nodes with `cluster.ray.add_node()`) and PostgreSQL, in one namespace."""
    ns = LoopbackNamespace()
    try:
        with postgres_server(tuple(ns.prefix)) as postgres:
            ray = RayCluster(ns, QUICK_HEARTBEATS)
            try:
                yield Cluster(ns, ray, postgres, tmp_path_factory.mktemp("data"))
            finally:
                ray.close()
    finally:
        ns.close()


def _finish(cluster: Cluster, name: str, tmp: Path, *extra: str) -> Run:
    storage = cluster.postgres.create(name)
    started = time.perf_counter()
    driver = cluster.bench_run(tmp / name, storage, *extra)
    output, _ = driver.communicate(timeout=900)
    assert driver.returncode == 0, output[-4000:]
    return Run(tmp / name, storage, time.perf_counter() - started, output)


@pytest.fixture(scope="module")
def one_node(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The suite on the head alone (the reference every scenario is compared with); then a second node joins."""
    run = _finish(cluster, "one_node", tmp_path_factory.mktemp("runs"))
    cluster.ray.add_node()
    return run


def _cells(results: Path) -> dict[str, dict[str, object]]:
    """Each cell's outcome as a run with no fault gives it: status, tuned settings, per-seed test metrics."""
    out = {}
    for path in sorted((results / "cells").glob("*.json")):
        record = json.loads(path.read_text())
        seeds = [(s["seed"], s["test"]) for s in record.get("per_seed", [])]
        out[record["cell_id"]] = {"status": record["status"], "best": record.get("tuning", {}).get("best_params"),
                                  "seeds": seeds}  # fmt: skip
    return out


#: run inside the namespace (where the server listens): study name -> trial state -> count, as JSON
_COUNT_TRIALS = """
import collections, json, sys, optuna
storage = optuna.storages.get_storage(sys.argv[1])
print(json.dumps({s.study_name: collections.Counter(t.state.name for t in storage.get_all_trials(s._study_id))
                  for s in storage.get_all_studies()}))
"""


def _trial_states(cluster: Cluster, storage: str) -> dict[str, Counter[str]]:
    argv = [*cluster.ns.prefix, sys.executable, "-c", _COUNT_TRIALS, storage]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    return {name: Counter(counts) for name, counts in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def _fits(results: Path) -> dict[str, Counter[tuple[str, str]]]:
    """cell id -> (fit name, MLflow status) -> count, over every fit any node started and the cell's own run
    ("cell"); "LOST" is the status of a run the harness ended because the fit in it was lost (`ENDED_TAG`)."""
    from mlflow.tracking import MlflowClient

    from bench.record.tracking import ENDED_TAG

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    fits: dict[str, Counter[tuple[str, str]]] = {}
    for run in client.search_runs(experiments, max_results=10_000):
        name = "cell" if run.data.tags.get("level") == "cell" else run.data.tags.get("mlflow.runName", "")
        if name == "cell" or name.startswith(("trial-", "seed-")):
            status = "LOST" if ENDED_TAG in run.data.tags else run.info.status
            fits.setdefault(run.data.tags["cell_id"], Counter())[(name, status)] += 1
    return fits


def _nodes_used(output: str) -> set[str]:
    return {line.rsplit("(on node ", 1)[1].rstrip(")") for line in output.splitlines() if "(on node " in line}


def _assert_each_fit_once(cluster: Cluster, run: Run, lost_allowed: int = 0) -> int:
    """Every cell done, its study at its budget, each seed fitted once; returns the fits lost in flight."""
    assert [c["status"] for c in _cells(run.results).values()] == ["ok"] * N_CELLS
    states = _trial_states(cluster, run.storage)
    assert len(states) == N_CELLS
    for study, counts in states.items():
        assert counts["COMPLETE"] + counts["PRUNED"] == TRIALS, (study, counts)  # never beyond budget
    lost = 0
    for cell, fits in _fits(run.results).items():
        assert not [fit for fit in fits if fit[1] == "RUNNING"], (cell, fits)  # the run ended: none is left running
        assert fits[("cell", "FINISHED")] == 1, (cell, fits)  # a retry carries on its cell's run
        lost += sum(n for (name, status), n in fits.items() if status == "LOST")
        for seed in range(SEEDS):
            assert fits[(f"seed-{seed}", "FINISHED")] == 1, (cell, fits)  # a seed is never fitted twice
        assert sum(n for (name, status), n in fits.items() if name.startswith("trial-") and status != "LOST") == (
            TRIALS
        ), (cell, fits)
    assert lost <= lost_allowed
    return lost


def test_the_matrix_over_two_ray_nodes_runs_every_cell_once_equal_to_one_node(
    cluster: Cluster, one_node: Run, tmp_path: Path
) -> None:
    _assert_each_fit_once(cluster, one_node)
    two_nodes = _finish(cluster, "two_nodes", tmp_path)
    _assert_each_fit_once(cluster, two_nodes)
    assert len(_nodes_used(two_nodes.output)) == 2, two_nodes.output[-3000:]
    assert _cells(two_nodes.results) == _cells(one_node.results)
    print(f"\nscaling: {N_CELLS} cells on 1 node {one_node.seconds:.1f} s, on 2 nodes {two_nodes.seconds:.1f} s: "
          f"{one_node.seconds / two_nodes.seconds:.2f}x")  # fmt: skip


def test_two_drivers_on_one_storage_and_results_never_run_a_cell_twice(
    cluster: Cluster, one_node: Run, tmp_path: Path
) -> None:
    storage = cluster.postgres.create("two_drivers")
    drivers = [cluster.bench_run(tmp_path / "results", storage) for _ in range(2)]
    outputs = [driver.communicate(timeout=900)[0] for driver in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outputs
    run = Run(tmp_path / "results", storage, 0.0, "\n".join(outputs))
    _assert_each_fit_once(cluster, run)
    assert _cells(run.results) == _cells(one_node.results)
    assert sum(len(_nodes_used(o)) > 0 for o in outputs) >= 1


def test_a_node_lost_mid_cell_costs_at_most_its_fit_in_flight(cluster: Cluster, one_node: Run, tmp_path: Path) -> None:
    storage = cluster.postgres.create("node_lost")
    results = tmp_path / "results"
    driver = cluster.bench_run(results, storage)
    deadline = time.monotonic() + 300
    while not list((results / "partial").glob("*/seed-*.json")):  # both nodes busy with a cell each
        assert driver.poll() is None and time.monotonic() < deadline, "the run ended before any seed was saved"
        time.sleep(0.2)
    cluster.ray.kill_node(1)
    output, _ = driver.communicate(timeout=900)
    assert driver.returncode == 0, output[-4000:]
    lost = _assert_each_fit_once(cluster, Run(results, storage, 0.0, output), lost_allowed=1)
    assert _cells(results) == _cells(one_node.results)  # equal to an uninterrupted run
    print(f"\nnode lost mid-cell: {lost} fit(s) lost in flight, the run finished equal to the one-node run")


class _FakeRay:
    """What the driver asks of Ray about the cluster: its nodes and their resources."""

    def __init__(self, hosts: list[str], cpus: float, gpus: float = 0) -> None:
        self.hosts, self.resources = hosts, {"CPU": cpus, **({"GPU": gpus} if gpus else {})}

    def nodes(self) -> list[dict[str, object]]:
        return [{"NodeManagerHostname": host, "Alive": True} for host in self.hosts]

    def cluster_resources(self) -> dict[str, float]:
        return self.resources


def test_a_cluster_over_several_machines_needs_servers_every_node_reaches(tmp_path: Path) -> None:
    import socket

    from bench.options import RunOptions
    from bench.run.executors.ray import check_cluster

    options = RunOptions(results=tmp_path, data_dir=tmp_path)
    check_cluster(_FakeRay([socket.gethostname()] * 2, 2), options)  # one machine: local files serve it
    many = _FakeRay([socket.gethostname(), "node-2"], 2)
    with pytest.raises(ValueError, match="local SQLite file; pass --storage postgresql://"):
        check_cluster(many, options)
    on_server = RunOptions(results=tmp_path, data_dir=tmp_path, storage="postgresql://u@db/bench")
    with pytest.raises(ValueError, match="pass --tracking-uri http://"):
        check_cluster(many, on_server)
    check_cluster(many, RunOptions(results=tmp_path, data_dir=tmp_path, storage="postgresql://u@db/bench",
                                   tracking_uri="http://mlflow:5000"))  # fmt: skip


def test_the_driver_keeps_in_flight_what_the_live_nodes_hold(tmp_path: Path) -> None:
    import contextlib

    from bench.plan.suites import get_suite
    from bench.registry import tasks
    from bench.run.executors.ray import _Driver
    from bench.run.pipeline import RunOptions, plan
    from bench_tasks.base import Resources

    suite = get_suite("smoke").override(tasks=("sub",), variants=("qkv", "mqa"))
    first, second = plan(suite, RunOptions(results=tmp_path / "r", data_dir=tmp_path / "d"))
    driver = object.__new__(_Driver)
    driver.ray, driver.running = _FakeRay(["a", "b"], cpus=2), {}
    assert driver._room_for(first) == "now"
    driver.running["ref"] = (first, Resources(cpus=1), contextlib.ExitStack())
    assert driver._room_for(second) == "now"
    driver.running["ref2"] = (second, Resources(cpus=1), contextlib.ExitStack())
    assert driver._room_for(second) == "later"  # two nodes of one CPU, both busy
    driver.ray = _FakeRay(["a"], cpus=1)  # a node lost: its CPU is gone, nothing more goes in
    assert driver._room_for(second) == "later"
    wants_gpu = copy.copy(second.task)
    wants_gpu.resources = lambda config: Resources(cpus=1, gpus=1)  # type: ignore[method-assign]
    assert driver._room_for(dataclasses.replace(second, task=wants_gpu)) == "never"  # no node has a GPU
    lm = tasks().get("lm")
    assert lm.resources(lm.config("paper")) == Resources(cpus=1, gpus=1)  # the paper's LM asks for a GPU
    assert lm.resources(dataclasses.replace(lm.config("paper"), devices=4)) == Resources(cpus=1, gpus=4)
    assert first.task.resources(dataclasses.replace(first.config, devices=2)) == Resources(cpus=2)


def test_a_run_of_a_cell_retried_elsewhere_writes_nothing_once_the_retry_holds_it(tmp_path: Path) -> None:
    from bench.record.store import Superseded
    from bench.run.executors.ray import ResultSink

    sink = ResultSink(str(tmp_path), None)
    lost, _ = sink.files("c0ffee", "sub")  # the run on the node that went silent
    retry, files = sink.files("c0ffee", "sub")  # Ray's retry of it on a live node
    assert files == {} and retry == lost + 1
    sink.write_seed("c0ffee", {"seed": 0, "by": "retry"}, retry)
    with pytest.raises(Superseded, match="a newer run of it"):
        sink.write_seed("c0ffee", {"seed": 0, "by": "lost"}, lost)
    with pytest.raises(Superseded):
        sink.write_cell({"cell_id": "c0ffee", "status": "ok"}, lost)
    assert json.loads((tmp_path / "partial" / "c0ffee" / "seed-0.json").read_text())["by"] == "retry"
    again, files = sink.files("c0ffee", "sub")  # a later run finds the retry's seed
    assert list(files) == ["partial/c0ffee/seed-0.json"] and again == retry + 1
