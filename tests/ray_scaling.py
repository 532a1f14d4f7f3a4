"""Benchmark: the same suite on a Ray cluster of 1 node and of 2 nodes (1 CPU each), as a speed-up.

    python -m tests.ray_scaling [--tasks sub,reverse,swap,copy] [--epochs 40]

Everything runs on this machine in a loopback-only network namespace (root; see `tests.servers`):
PostgreSQL for the trials, MLflow in the results folder, the driver and the nodes. Prints the wall
time of each run, the speed-up of the whole run, and the speed-up of its cells once the nodes were
up (first cell submitted to last cell recorded, less the first cell's start: the nodes' one-time
start-up, importing torch and MLflow, which a real cluster pays on each machine at once but two
nodes on one 2-core machine pay on the same cores). Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.servers import LoopbackNamespace, RayCluster, postgres_server


def _run(ns: LoopbackNamespace, ray: RayCluster, storage: str, suite: list[str], results: Path) -> tuple[float, float]:
    """Wall time of the run, and of its cells after the first one finished (per-cell progress lines)."""
    argv = [*ns.prefix, sys.executable, "-m", "bench.cli", "run", *suite, "--ray", ray.address, "--storage", storage,
            "--results", str(results), "--data-dir", str(results.parent / "data")]  # fmt: skip
    started, ends = time.perf_counter(), []
    driver = subprocess.Popen(argv, env=ray.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert driver.stdout is not None
    for line in driver.stdout:
        if re.search(r": ok \(on node \w+\)", line):
            ends.append(time.perf_counter())
    if driver.wait() != 0:
        raise SystemExit(f"the run failed (exit {driver.returncode})")
    return time.perf_counter() - started, ends[-1] - ends[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="sub,reverse,swap,copy")
    parser.add_argument("--variants", default="qkv,mqa,tied-kv")
    parser.add_argument("--epochs", default="40")
    args = parser.parse_args()
    suite = ["--suite", "smoke", "--tasks", args.tasks, "--variants", args.variants, "--trials", "2", "--seeds", "2",
             "--epochs", args.epochs]  # fmt: skip
    cells = len(args.tasks.split(",")) * len(args.variants.split(","))
    ns = LoopbackNamespace()
    try:
        with postgres_server(tuple(ns.prefix)) as postgres, tempfile.TemporaryDirectory() as tmp:
            ray = RayCluster(ns, {})
            try:
                one = _run(ns, ray, postgres.create("one"), suite, Path(tmp) / "one")
                ray.add_node()
                two = _run(ns, ray, postgres.create("two"), suite, Path(tmp) / "two")
            finally:
                ray.close()
    finally:
        ns.close()
    print(f"{cells} cells x (2 trials + 2 seeds), smoke scale, {args.epochs} epochs")
    print(f"whole run: 1 node {one[0]:.1f} s, 2 nodes {two[0]:.1f} s: {one[0] / two[0]:.2f}x")
    print(f"cells after the first (nodes up): 1 node {one[1]:.1f} s, 2 nodes {two[1]:.1f} s: {one[1] / two[1]:.2f}x")


if __name__ == "__main__":
    main()
