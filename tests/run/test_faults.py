"""Fault injection: `bench run` killed, starved or sabotaged at each stage of a cell, then run again.

Every scenario runs one small suite (sub x {QKV, MQA}, 2 trials, seeds 0 and 1, 4 epochs: 8 fits of
16 steps) as `python -m bench.cli run` subprocesses with `tests/faults` on PYTHONPATH: its
`sitecustomize` installs the hooks of `faults/faultlib.py` in every process, the `--jobs 2` workers
too, and logs every fit started, ended and saved. Nothing in bench/ knows of it. Each scenario is
compared with one uninterrupted reference run of the same suite:

- lost: fits started again because an earlier start of the same fit never got its result stored
  (the fit in flight when the fault struck);
- run twice: fits started again although their result had been stored (a seed file, a trial);
- equal: the final cell records (and, where the cells are the same, the leaderboard's data) equal the
  reference's, leaving out dates, durations, throughput, memory and provenance.

Each test adds its row to a table printed when the module ends (`pytest -s` shows it) and written to
`faults-table.json` in pytest's base temp folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # about 4 minutes of subprocess runs

FAULTS = Path(__file__).resolve().parents[1] / "faults"
SUITE = ("--suite", "smoke", "--tasks", "sub", "--trials", "2", "--seeds", "0,1", "--epochs", "4")
RUN_TIMEOUT = 240.0  # seconds one run may take (about 15 s here)
KILLED = -signal.SIGKILL
#: fields that differ between two runs of the same fits: dates, durations, speed, memory, provenance
VOLATILE = frozenset({
    "created_at", "provenance", "timing", "mlflow", "mlflow_problems", "mlflow_url", "git_sha", "seconds",
    "train_seconds", "step_seconds", "eval_seconds", "train_seconds_per_fit", "examples_per_second",
    "decode_tokens_per_second", "peak_memory_bytes", "peak_memory_growth_bytes",
})  # fmt: skip
PLUGINS = {"fault-hang": "fault_variants:HANG", "fault-nan": "fault_variants:NAN"}


@dataclass(frozen=True)
class Row:
    """One line of the closing table."""

    scenario: str
    reference_fits: int
    fits_done: int
    lost: int
    twice: int
    equal: bool | None  # None: judged on the scenario's last run, in its own row
    exit_codes: tuple[int, ...]
    note: str = ""


ROWS: list[Row] = []


@dataclass
class Run:
    returncode: int
    output: str


@dataclass
class Tally:
    """Fits started, redone after being lost, and redone after being stored, per run of a scenario."""

    started: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)  # by the run whose start was lost
    twice: dict[str, int] = field(default_factory=dict)  # by the run that started a stored fit again
    keys: set[str] = field(default_factory=set)


def tally(events: list[dict[str, Any]], variants: set[str] | None = None) -> Tally:
    """Read the fit log in order: a fit is stored when its trial is told (tuning) or its seed file is saved (final)."""
    out = Tally()
    stored: set[str] = set()
    unstored: dict[str, str] = {}  # fit -> the run of its last start that has not been stored
    for event in events:
        if "key" not in event or (variants is not None and event["key"]["variant"] not in variants):
            continue
        key, run = json.dumps(event["key"], sort_keys=True), event["run"]
        if event["event"] == "start":
            out.started[run] = out.started.get(run, 0) + 1
            out.keys.add(key)
            if key in stored:
                out.twice[run] = out.twice.get(run, 0) + 1
            elif key in unstored:
                out.lost[unstored[key]] = out.lost.get(unstored[key], 0) + 1
            unstored[key] = run
        elif event["event"] == "saved":
            stored.add(key)
            unstored.pop(key, None)
    return out


def comparable(value: Any) -> Any:
    """`value` without the fields that differ between two runs of the same fits."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def _kill_group(pid: int) -> None:
    """End whatever the run left in its process group (a killed run's orphans); nothing if it is empty."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@dataclass
class Scenario:
    """One results folder, the runs made on it, and the log all their processes append to."""

    root: Path
    variants: str = "qkv,mqa"
    jobs: int = 1
    sites: tuple[Path, ...] = ()
    runs: list[Run] = field(default_factory=list)
    launched: int = 0  # runs started so far: each one's label in the log, and its own fault marker
    labels: dict[int, str] = field(default_factory=dict)  # pid -> label

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def log(self) -> Path:
        return self.root / "fits.jsonl"

    def seed_from(self, reference: Scenario) -> Scenario:
        """Start from the reference's study-shape checks (the same file everywhere; 4 s a folder to remake)."""
        shutil.copytree(reference.results / "analytic", self.results / "analytic")
        return self

    def start(self, fault: dict[str, Any] | None = None, *extra: str) -> subprocess.Popen[str]:
        label, self.launched = str(self.launched), self.launched + 1
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(FAULTS), *map(str, self.sites), os.environ.get("PYTHONPATH", "")]),
            "BENCH_THREADS": "1",  # the same arithmetic in the main process and in --jobs workers
            "OMP_NUM_THREADS": "1",
            "BENCH_FAULT_LOG": str(self.log),
            "BENCH_FAULT_MARKER": str(self.root / f"fault-{label}.fired"),
            "BENCH_FAULT": json.dumps(fault or {}),
            "BENCH_FAULT_RUN": label,
        }
        argv = [sys.executable, "-m", "bench.cli", "run", *SUITE, "--variants", self.variants, "--jobs", str(self.jobs)]
        argv += ["--tracking-uri", "none", "--results", str(self.results), "--data-dir", str(self.root / "data")]
        argv += extra
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        self.labels[proc.pid] = label
        return proc

    def finish(self, proc: subprocess.Popen[str], timeout: float = RUN_TIMEOUT) -> Run:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            output, _ = proc.communicate()
            raise AssertionError(f"bench run still running after {timeout:.0f} s:\n{output[-3000:]}") from None
        finally:
            _kill_group(proc.pid)
        run = Run(proc.returncode, output)
        (self.root / f"run-{self.labels[proc.pid]}.txt").write_text(output)  # kept with the scenario's folder
        self.runs.append(run)
        return run

    def run(self, fault: dict[str, Any] | None = None, *extra: str) -> Run:
        return self.finish(self.start(fault, *extra))

    def events(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def faults(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == "fault"]

    def records(self) -> dict[str, dict[str, Any]]:
        """Every cell record by cell id, as stored."""
        out = {}
        for path in (self.results / "cells").glob("*.json"):
            record = json.loads(path.read_text())
            out[record["cell_id"]] = record
        return out

    def by_variant(self) -> dict[str, dict[str, Any]]:
        return {r["variant"]["id"]: r for r in self.records().values()}

    def leaderboard(self) -> Any:
        return comparable(json.loads((self.results / "leaderboard" / "leaderboard.json").read_text()))

    def codes(self) -> tuple[int, ...]:
        return tuple(r.returncode for r in self.runs)

    def tail(self) -> str:
        return "\n".join(f"--- run {i}: exit {r.returncode}\n{r.output[-2500:]}" for i, r in enumerate(self.runs))


def same_results(scenario: Scenario, reference: Scenario) -> bool:
    """The reference's cells hold the same results in `scenario`."""
    mine, theirs = scenario.records(), reference.records()
    return all(cell in mine and comparable(mine[cell]) == comparable(theirs[cell]) for cell in theirs)


def _first_difference(mine: Any, theirs: Any, where: str = "") -> str | None:
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for key in sorted(set(mine) | set(theirs), key=str):
            found = _first_difference(mine.get(key), theirs.get(key), f"{where}.{key}")
            if found:
                return found
        return None
    return None if mine == theirs else f"{where}: {str(mine)[:200]} != reference {str(theirs)[:200]}"


def differences(scenario: Scenario, reference: Scenario) -> list[str]:
    """Where `scenario`'s results and leaderboard first differ from the reference's, per cell (for failures)."""
    mine, theirs = scenario.records(), reference.records()
    found = [f"{cell}{_first_difference(comparable(mine.get(cell)), comparable(record))}" for cell, record in
             theirs.items() if comparable(mine.get(cell)) != comparable(record)]  # fmt: skip
    board = _first_difference(scenario.leaderboard(), reference.leaderboard(), "leaderboard")
    return found + ([board] if board else [])


def same_as_reference(scenario: Scenario, reference: Scenario) -> bool:
    """The reference's cells hold the same results in `scenario`, and the leaderboards agree."""
    return same_results(scenario, reference) and scenario.leaderboard() == reference.leaderboard()


def add_row(
    scenario: str,
    tallied: Tally,
    reference_fits: int,
    equal: bool | None,
    codes: tuple[int, ...],
    note: str = "",
    runs: list[str] | None = None,
) -> Row:
    """Record a row; `runs` limits the counts to those runs (all by default)."""

    def total(counts: dict[str, int]) -> int:
        return sum(n for run, n in counts.items() if runs is None or run in runs)

    row = Row(
        scenario, reference_fits, total(tallied.started), total(tallied.lost), total(tallied.twice), equal, codes, note
    )
    ROWS.append(row)
    return row


@pytest.fixture(scope="module", autouse=True)
def table(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Print the rows when the module ends and write them to faults-table.json."""
    started = time.perf_counter()
    yield
    head = "| scenario | fits in reference | fits done in all | lost | run twice | equal | exit codes | note |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in ROWS:
        codes = ", ".join(map(str, r.exit_codes))
        lines.append(
            f"| {r.scenario} | {r.reference_fits} | {r.fits_done} | {r.lost} | {r.twice} | "
            f"{ {True: 'yes', False: 'NO', None: '-'}[r.equal] } | {codes} | {r.note} |"
        )
    lines.append(f"(fault scenarios: {time.perf_counter() - started:.0f} s)")
    out = tmp_path_factory.getbasetemp() / "faults-table.json"
    out.write_text(json.dumps([asdict(r) for r in ROWS], indent=2))
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    for line in ["", f"fault injection ({out}):", *lines]:
        if reporter is not None:
            reporter.write_line(line)
        else:
            print(line)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """The uninterrupted run every scenario is compared with."""
    ref = Scenario(tmp_path_factory.mktemp("reference"))
    run = ref.run()
    assert run.returncode == 0, ref.tail()
    assert {r["status"] for r in ref.records().values()} == {"ok"} and len(ref.records()) == 2, ref.tail()
    assert sum(tally(ref.events()).started.values()) == 8  # 2 cells x (2 trials + 2 seeds)
    return ref


def _new(tmp_path: Path, reference: Scenario, **kw: Any) -> Scenario:
    return Scenario(tmp_path, **kw).seed_from(reference)


# --- kill -9 at each stage of a cell: one results folder, each run killed at the next stage, then run again

CHAIN: list[tuple[str, dict[str, Any]]] = [
    ("during a trial", {"where": "step", "variant": "qkv", "kind": "tune", "nth": 2, "step": 4}),
    # run 2 first reruns QKV's cut trial, then its seeds; MQA's second trial is asked, its fit not begun
    ("between trials", {"where": "fit_start", "variant": "mqa", "kind": "tune", "nth": 2}),
    ("during a seed", {"where": "step", "variant": "mqa", "kind": "final", "nth": 2, "step": 4}),
    ("while writing a result", {"where": "replace", "path": "*/cells/sub__mqa__*.json"}),
    ("while building the leaderboard", {"where": "replace", "path": "*/leaderboard/leaderboard.json"}),
]


@dataclass
class Chain:
    """The kill chain's folder, and what its unharmed rerun left before `--retry-failed` ran."""

    scenario: Scenario
    equal_after_rerun: bool
    after_rerun: dict[str, dict[str, Any]]  # the cell records by variant


@pytest.fixture(scope="module")
def kill_chain(reference: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """Runs 1-5 of the same command on one folder, each SIGKILLed at the next stage; run 6 unharmed; run 7
    with --retry-failed. Each run resumes what the kill before it left, so every resume starts from a cut state.
    """
    chain = _new(tmp_path_factory.mktemp("kill-chain"), reference)
    for _, fault in CHAIN:
        chain.run({**fault, "action": "kill"})
    chain.run()
    equal = same_as_reference(chain, reference)
    after = chain.by_variant()
    chain.run(None, "--retry-failed")
    return Chain(chain, equal, after)


@pytest.mark.parametrize("stage", range(len(CHAIN)), ids=[name for name, _ in CHAIN])
def test_kill_9_at_a_stage_loses_at_most_the_fit_in_flight(stage: int, kill_chain: Chain) -> None:
    name, fault = CHAIN[stage]
    chain = kill_chain.scenario
    fired = [f for f in chain.faults() if f["run"] == str(stage)]
    in_flight = 1 if fault["where"] == "step" else 0
    row = add_row(
        f"kill -9 {name} (run {stage + 1})",
        tally(chain.events()),
        8,
        None,
        (chain.runs[stage].returncode,),
        "fits: this run's",
        runs=[str(stage)],
    )
    assert len(fired) == 1 and chain.runs[stage].returncode == KILLED, chain.tail()
    assert row.lost == in_flight and row.twice == 0, chain.tail()


def test_the_same_command_after_the_kills_ends_with_the_reference_results(kill_chain: Chain) -> None:
    chain = kill_chain.scenario
    mqa = kill_chain.after_rerun["mqa"]
    add_row(
        f"the same command after the {len(CHAIN)} kills (run {len(CHAIN) + 1})",
        tally(chain.events()),
        8,
        kill_chain.equal_after_rerun,
        (chain.runs[len(CHAIN)].returncode,),
        f"MQA, cut by 3 of the kills, all its fits saved: {mqa['status']} '{mqa.get('reason', '').split(';')[0]}'",
        runs=[str(len(CHAIN))],
    )
    assert kill_chain.equal_after_rerun, mqa.get("reason")


def test_the_kills_then_retry_failed_end_with_every_fit_once_and_the_reference_results(
    kill_chain: Chain, reference: Scenario
) -> None:
    chain = kill_chain.scenario
    tallied = tally(chain.events())
    leftovers = sorted(p.name for p in (chain.results / "cells").glob(".*.tmp"))
    equal = same_as_reference(chain, reference)
    add_row(
        f"all {len(chain.runs)} runs: the {len(CHAIN)} kills, the rerun, --retry-failed",
        tallied,
        8,
        equal,
        chain.codes(),
        f"temp files the killed write left in cells/: {len(leftovers)}",
    )
    assert chain.codes()[: len(CHAIN)] == (KILLED,) * len(CHAIN) and chain.codes()[-1] == 0, chain.tail()
    assert tallied.keys == tally(reference.events()).keys  # the same fits: the resumed studies drew the same trials
    assert sum(tallied.lost.values()) == 2 and not tallied.twice
    assert str(len(CHAIN) + 1) not in tallied.started  # --retry-failed fitted nothing
    assert equal
    assert not any("Traceback" in r.output for r in chain.runs[len(CHAIN) :])


# --- a worker process SIGKILLed under --jobs 2


def test_a_worker_killed_under_jobs_2_costs_only_the_fits_in_flight(tmp_path: Path, reference: Scenario) -> None:
    scenario = _new(tmp_path, reference, jobs=2)
    run = scenario.run({"where": "step", "action": "kill", "variant": "mqa", "kind": "final", "nth": 1, "step": 4})
    tallied = tally(scenario.events())
    sibling = sum(tally(scenario.events(), {"qkv"}).lost.values())  # its worker ends with the broken pool
    equal = same_as_reference(scenario, reference)
    row = add_row(
        "a --jobs 2 worker SIGKILLed during a seed",
        tallied,
        8,
        equal,
        scenario.codes(),
        f"lost by the killed worker: {sum(tallied.lost.values()) - sibling}; by its sibling (ended with the pool): "
        f"{sibling}",
    )
    assert len(scenario.faults()) == 1 and run.returncode == 0, scenario.tail()
    assert "a worker process died" in run.output
    assert row.lost <= 2 and row.twice == 0, scenario.events()  # one fit in flight in each of the 2 workers
    assert tallied.keys == tally(reference.events()).keys
    assert equal, differences(scenario, reference)


# --- misbehaving plugins: one hangs once inside its attention, one turns NaN


def _plugin_site(root: Path) -> Path:
    """A folder holding the test plugins' dist-info, as `pip install --target` would leave it."""
    info = root / "site" / "fault_variants-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fault-variants\nVersion: 0.1\n")
    entries = "".join(f"{name} = {target}\n" for name, target in PLUGINS.items())
    (info / "entry_points.txt").write_text(f"[bench.variants]\n{entries}")
    return info.parent


@pytest.fixture(scope="module")
def plugins(reference: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """QKV, MQA and both plugins; the hang strikes at step 5 of the hanging plugin's seed-1 fit; then run again."""
    root = tmp_path_factory.mktemp("plugins")
    scenario = _new(root, reference, variants="qkv,mqa,fault-hang,fault-nan", sites=(_plugin_site(root),))
    hang = {
        "where": "hang",
        "action": "hang",
        "variant": "fault-hang",
        "kind": "final",
        "nth": 2,
        "step": 5,
        "time_limit": {"variant": "fault-hang", "seconds": 5},
    }
    scenario.run(hang)
    scenario.run()
    return scenario


def _as_qkv(record: dict[str, Any]) -> Any:
    """A record without what names its variant: the hanging plugin computes exactly what QKV does."""
    tuning = {k: v for k, v in record.get("tuning", {}).items() if k != "study"}
    return comparable({**record, "cell_id": None, "variant": None, "tuning": tuning})


def test_a_hanging_plugin_fails_at_its_time_limit_and_the_rerun_completes_it(
    plugins: Scenario, reference: Scenario
) -> None:
    first, second = plugins.runs
    tallied = tally(plugins.events(), {"qkv", "mqa", "fault-hang"})
    cells = plugins.by_variant()
    equal = same_results(plugins, reference) and _as_qkv(cells["fault-hang"]) == _as_qkv(reference.by_variant()["qkv"])
    row = add_row(
        "a plugin hanging in a seed (5 s time limit)",
        tallied,
        12,
        equal,
        plugins.codes(),
        "12: the reference's 8 + the 4 of QKV it repeats; cell failed, the rerun completed it",
    )
    assert [f["where"] for f in plugins.faults()] == ["hang"], plugins.tail()
    assert first.returncode == 1 and "ran past its time limit of 5 s" in first.output, plugins.tail()
    assert second.returncode == 0 and cells["fault-hang"]["status"] == "ok", plugins.tail()
    assert row.lost == 1 and row.twice == 0
    assert equal


def test_a_nan_plugin_is_diverged_never_ranked_and_not_retried(plugins: Scenario, reference: Scenario) -> None:
    tallied = tally(plugins.events(), {"qkv", "mqa", "fault-nan"})
    nan = plugins.by_variant()["fault-nan"]
    board = json.loads((plugins.results / "leaderboard" / "leaderboard.json").read_text())
    rows = {r["variant"]: r for g in board["groups"] for r in g["rows"]}
    ranked = {r["variant"] for r in board["overview"]["mean_ranks"]}
    equal = same_results(plugins, reference)
    row = add_row(
        "a plugin whose loss turns NaN",
        tallied,
        8,
        equal,
        plugins.codes(),
        "its 3 fits (2 trials pruned, seed 0) diverge; the cell is diverged, not run again",
    )
    assert nan["status"] == "diverged" and "training loss became nan" in nan["reason"]
    assert rows["fault-nan"]["state"] == "diverged" and rows["fault-nan"]["rank"] is None
    assert "fault-nan" not in ranked and {"qkv", "mqa", "fault-hang"} <= ranked
    assert tallied.started == {"0": 11} and row.lost == 0 and row.twice == 0  # the rerun left it alone
    assert equal


# --- damaged and full storage


def test_a_corrupt_cell_file_is_named_and_recomputed_without_refitting(tmp_path: Path, reference: Scenario) -> None:
    scenario = Scenario(tmp_path)
    shutil.copytree(reference.results, scenario.results)
    (damaged,) = (scenario.results / "cells").glob("sub__qkv__*.json")
    damaged.write_text(damaged.read_text()[:300])  # cut mid-file, as a crashed editor or a bad copy leaves it
    run = scenario.run()
    tallied = tally(reference.events() + scenario.events())
    equal = same_as_reference(scenario, reference)
    add_row(
        "a cell JSON cut in half, then run again",
        tallied,
        8,
        equal,
        (0, *scenario.codes()),
        "exit codes: the reference's, then the rerun's; named unreadable, rebuilt from the saved trials and seeds",
    )
    assert run.returncode == 0, scenario.tail()
    assert damaged.name in " ".join(run.output.split()) and "Traceback" not in run.output
    assert sum(tallied.started.values()) == 8 and not tallied.lost and not tallied.twice
    assert equal


@pytest.fixture(scope="module")
def full_disk(reference: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """The disk fills when QKV's seed-1 result is written and stays full for that run; then space is freed."""
    scenario = _new(tmp_path_factory.mktemp("full-disk"), reference)
    scenario.run({"where": "write", "action": "enospc", "path": "*/partial/*/seed-1.json", "persist": True})
    scenario.run()
    return scenario


def test_a_full_disk_loses_at_most_the_fit_in_flight(full_disk: Scenario, reference: Scenario) -> None:
    tallied = tally(full_disk.events())
    equal = same_as_reference(full_disk, reference)
    first = full_disk.runs[0].output
    traceback = "Traceback" in first
    row = add_row(
        "a full disk (ENOSPC on every JSON write from a seed result on)",
        tallied,
        8,
        equal,
        full_disk.codes(),
        "the first run ended in a Python traceback" if traceback else "",
    )
    assert len(full_disk.faults()) == 1 and full_disk.codes()[-1] == 0, full_disk.tail()
    assert row.lost == 1 and row.twice == 0
    assert equal


def test_a_full_disk_is_reported_as_an_error_naming_the_file_and_the_fix(full_disk: Scenario) -> None:
    first = full_disk.runs[0]
    assert first.returncode != 0
    assert "Traceback" not in first.output, first.output[-3000:]
    assert "No space left on device" in first.output


# --- two runs on one folder


def test_two_runs_at_once_on_one_folder_share_the_cells(tmp_path: Path, reference: Scenario) -> None:
    import optuna

    scenario = _new(tmp_path, reference)
    optuna.storages.RDBStorage(f"sqlite:///{scenario.results / 'optuna.db'}")  # as any earlier run leaves it
    in_turn = {"serialize": ["leaderboard"]}  # their race at the leaderboard's files has its own test below
    procs = [scenario.start(in_turn), scenario.start(in_turn)]
    runs = [scenario.finish(p) for p in procs]
    tallied = tally(scenario.events())
    equal = same_as_reference(scenario, reference)
    row = add_row(
        "two identical runs at once on one folder (Optuna store already there)",
        tallied,
        8,
        equal,
        scenario.codes(),
        f"fits by run: {dict(sorted(tallied.started.items()))}",
    )
    assert [r.returncode for r in runs] == [0, 0], scenario.tail()
    assert not any("Traceback" in r.output for r in runs), scenario.tail()
    assert row.fits_done == 8 and row.lost == 0 and row.twice == 0
    assert equal


def _race(scenario: Scenario, fault: dict[str, Any], *extra: str) -> Scenario:
    """Two runs at once, each held at the fault's place until the other is there too."""
    procs = [scenario.start({**fault, "action": "barrier", "parties": 2}, *extra) for _ in range(2)]
    for proc in procs:
        scenario.finish(proc)
    return scenario


def _met(scenario: Scenario, name: str) -> None:
    crashed = [r for r in scenario.runs if r.returncode != 0]
    note = f"{len(crashed)} of 2 ended in a traceback" if crashed else ""
    add_row(name, tally(scenario.events()), 0, None, scenario.codes(), note)
    assert [f.get("met") for f in scenario.faults()] == [True, True], scenario.tail()  # the race was forced


@pytest.fixture(scope="module")
def leaderboard_race(reference: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """Two runs at once on a finished folder (nothing to fit): both build the leaderboard; they meet at its rename."""
    scenario = Scenario(tmp_path_factory.mktemp("leaderboard-race"))
    shutil.copytree(reference.results, scenario.results)
    return _race(scenario, {"where": "replace", "path": "*/leaderboard/index.html"})


def test_two_runs_ending_together_meet_at_the_leaderboard(leaderboard_race: Scenario) -> None:
    _met(leaderboard_race, "two runs ending at once, both writing the leaderboard")


def test_two_runs_ending_together_both_write_the_leaderboard(leaderboard_race: Scenario) -> None:
    assert leaderboard_race.codes() == (0, 0), leaderboard_race.tail()
    assert not any("Traceback" in r.output for r in leaderboard_race.runs)


@pytest.fixture(scope="module")
def fresh_race(reference: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """Two runs (--dry-run: the race comes before any fit) started at once on a new folder; they meet just
    before each readies the Optuna storage, which neither has created yet."""
    return _race(_new(tmp_path_factory.mktemp("fresh-race"), reference), {"where": "storage_init"}, "--dry-run")


def test_two_runs_started_at_once_on_a_fresh_folder_meet_at_the_storage(fresh_race: Scenario) -> None:
    _met(fresh_race, "two runs started at once on a fresh folder (--dry-run)")


def test_two_runs_started_at_once_on_a_fresh_folder_both_start(fresh_race: Scenario) -> None:
    assert fresh_race.codes() == (0, 0), fresh_race.tail()
    assert not any("Traceback" in r.output for r in fresh_race.runs)
