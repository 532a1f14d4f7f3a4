"""Servers the tests start for real, on loopback only, bounded in time, stopped by the tests that start them.

- `postgres_server`: Debian's PostgreSQL in a temporary folder (as the `postgres` user when we are root:
  the server refuses to run as root), listening on 127.0.0.1.
- `LoopbackNamespace`: a network namespace of its own with only `lo` up (root, `unshare`, `nsenter`). Ray
  advertises the machine's interface address even when told 127.0.0.1; inside the namespace there is none
  to advertise, so a Ray cluster and everything talking to it stay on loopback.
- `RayCluster`: a Ray cluster of `ray start` processes (a head, then nodes joining it) in such a namespace,
  one CPU per node; a node can be killed (its process group: the raylet and its workers) as a lost machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVER_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
BIN = Path(sys.executable).parent


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """A running server: `url(db)` for a database on it, `create(db)` to make one."""

    def __init__(self, bin_dir: Path, port: int, prefix: list[str]) -> None:
        self.bin_dir, self.port, self.prefix = bin_dir, port, prefix

    def url(self, database: str = "bench") -> str:
        return f"postgresql://bench@127.0.0.1:{self.port}/{database}"

    def create(self, database: str) -> str:
        """Make a database; retried for a few seconds while a just-started server is still starting up."""
        createdb = [str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "bench", database]
        for _ in range(20):
            done = subprocess.run([*self.prefix, *createdb], timeout=60, capture_output=True, text=True)
            if done.returncode == 0:
                return self.url(database)
            time.sleep(0.5)
        raise RuntimeError(f"createdb {database} failed: {done.stderr.strip()}")


@contextmanager
def postgres_server(prefix: tuple[str, ...] = ()) -> Iterator[Postgres]:
    """A fresh server with a database `bench`; `prefix` runs its commands elsewhere (e.g. `nsenter ...`)."""
    import pytest

    if not SERVER_BINS:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    bin_dir = SERVER_BINS[-1].parent
    as_server = [*prefix, *(["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else [])]
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    os.chmod(root, 0o755)
    if os.getuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()

    def server(*args: str) -> None:
        subprocess.run([*as_server, *args], check=True, timeout=90, capture_output=True)

    try:
        server(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "bench", "--no-sync")
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off"
        server(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "start")
        try:
            postgres = Postgres(bin_dir, port, list(prefix))
            postgres.create("bench")
            yield postgres
        finally:
            server(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


class LoopbackNamespace:
    """A network namespace holding only loopback; `prefix` runs a command inside it."""

    def __init__(self) -> None:
        import pytest

        if os.getuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter") and shutil.which("ip")):
            pytest.skip("a loopback-only network namespace needs root, unshare, nsenter and ip")
        self.holder = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
        self.prefix = ["nsenter", "-t", str(self.holder.pid), "-n"]
        deadline = time.monotonic() + 10
        while not self._entered():  # until then, nsenter would act on this machine's own network
            if self.holder.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.skip("could not make a network namespace here (unshare -n)")
            time.sleep(0.05)
        subprocess.run([*self.prefix, "ip", "link", "set", "lo", "up"], check=True, capture_output=True, timeout=30)

    def _entered(self) -> bool:
        """Whether the holder has left this process's network namespace for its own."""
        try:
            return os.readlink(f"/proc/{self.holder.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        except OSError:
            return False

    def close(self) -> None:
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait(timeout=10)


#: what every process of a test cluster runs with: no usage reports, no auth tokens from ~/.ray
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


class RayCluster:
    """`ray start` processes in `namespace`: a head with one CPU, then `add_node()` for each other node."""

    def __init__(self, namespace: LoopbackNamespace, env: dict[str, str]) -> None:
        self.ns, self.port = namespace, free_port()
        self.env = {**os.environ, **RAY_ENV, **env}
        self.temp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.address = f"127.0.0.1:{self.port}"
        self._start(["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp}"])

    def _start(self, args: list[str]) -> None:
        argv = [*self.ns.prefix, str(BIN / "ray"), "start", "--block", "--num-cpus=1",
                "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args]  # fmt: skip
        log = open(self.temp / f"node-{len(self.nodes)}.log", "wb")  # noqa: SIM115 - lives as long as the node
        self.nodes.append(subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))  # fmt: skip
        self.wait_for_nodes(len(self.nodes))

    def add_node(self) -> None:
        self._start([f"--address={self.address}"])

    def alive(self) -> int:
        probe = "import ray; ray.init(address='%s', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
        done = subprocess.run([*self.ns.prefix, sys.executable, "-c", probe % self.address], env=self.env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else 0

    def wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.alive() != count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Ray cluster did not reach {count} live nodes; logs in {self.temp}")
            time.sleep(1)

    def kill_node(self, index: int) -> None:
        """A lost machine: its raylet, object store and workers killed at once (Ray starts each worker
        in a process group of its own, so the node's group alone would leave its workers running)."""
        node = self.nodes[index]
        for pid in [*descendants(node.pid), node.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        node.wait(timeout=30)

    def close(self) -> None:
        for node in reversed(self.nodes):
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=30)
        subprocess.run([*self.ns.prefix, str(BIN / "ray"), "stop", "--force"], env=self.env,
                       capture_output=True, timeout=120)  # fmt: skip
        shutil.rmtree(self.temp, ignore_errors=True)
