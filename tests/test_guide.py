"""The contributor guide `variants/GUIDE.md`, followed to the letter: its files written, its commands run.

A reader of the guide starts in an empty folder. Every fenced block whose info string names a file
(```` ```python file=bench_talking/__init__.py ````) is written where the reader stands at that point,
and every `$ ` line of a ```` ```console ```` block is run, in the guide's order: `mkdir` and `cd` move
the reader, `pip install` installs the folder (with `--no-deps --no-build-isolation --target DIR` and
DIR on PYTHONPATH, which the guide says is equivalent to `pip install -e .`, and which needs no
network), and `bench ...` runs the real CLI in a subprocess (`python -P`: like the `bench` script, it
does not put the current folder on sys.path). Each `bench` command must exit 0 and print, in order,
the lines the guide shows under it (numbers may differ, `…` stands for anything); the variant the
guide's pyproject.toml registers must pass `check-variant` by id and by `module:object`, appear in
`bench list` with its distribution, and stand on the leaderboard the guide builds.

Nothing of the guide is copied here: a command the test does not know fails it (teach the test, do
not copy the guide into it). 45-70 s on 2 shared CPU cores, most of it the two check-variant runs and the
smoke run.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+: reads the guide's pyproject.toml

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "variants" / "GUIDE.md"
FENCE = re.compile(r"^```(\S*)[ \t]*([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
ENV_ASSIGNMENT = re.compile(r"[A-Z_][A-Z0-9_]*=.*")
NUMBER = re.compile(r"[-+]?\d[\d,.]*(?:e[-+]?\d+)?")
#: without -P, `python -m` would put the reader's folder on sys.path and hide a missing PYTHONPATH
BENCH = [sys.executable, "-P", "-m", "bench.cli"]
COMMAND_TIMEOUT = 300  # seconds; each command takes a few (the smoke run about 15)


@dataclass
class Step:
    """One `$ ` line of a console block: its environment assignments, its words, the output shown under it."""

    env: dict[str, str]
    argv: list[str]
    shown: list[str] = field(default_factory=list)


@dataclass
class Block:
    """A fenced block: its language, its `file=` path if the reader is to create it, its text."""

    language: str
    file: str | None
    body: str


def blocks(text: str) -> list[Block]:
    found = []
    for language, info, body in FENCE.findall(text):
        attrs = dict(word.partition("=")[::2] for word in info.split() if "=" in word)
        found.append(Block(language, attrs.get("file"), body))
    return found


def steps(console: str) -> list[Step]:
    found: list[Step] = []
    for line in console.splitlines():
        if line.startswith("$ "):
            words = shlex.split(line[2:])
            env = {}
            while words and ENV_ASSIGNMENT.fullmatch(words[0]):
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            found.append(Step(env, words))
        elif found:
            found[-1].shown.append(line)
    return found


def line_pattern(shown: str) -> re.Pattern[str] | None:
    """A shown output line as a regex over a whitespace-collapsed real line; None for rules and `…` alone."""
    if not re.search(r"[^\W_]", shown.replace("…", "")):
        return None
    parts = []
    for piece in " ".join(shown.split()).split("…"):
        literal = [re.escape(text) for text in NUMBER.split(piece)]
        parts.append(NUMBER.pattern.join(literal))
    return re.compile(".*?".join(parts))


def assert_shows(output: str, shown: list[str], argv: list[str]) -> None:
    """Every shown line matches a line of `output`, in the order shown."""
    real = [" ".join(line.split()) for line in output.splitlines()]
    at = 0
    for line in shown:
        pattern = line_pattern(line)
        if pattern is None:
            continue
        hit = next((i for i in range(at, len(real)) if pattern.search(real[i])), None)
        assert hit is not None, f"`bench {' '.join(argv)}` did not print, where the guide shows it:\n{line}\n{output}"
        at = hit + 1


@dataclass
class Reader:
    """Follows the guide: where the reader stands, what they installed, what each bench command printed."""

    cwd: Path
    site: Path
    installed: bool = False
    outputs: list[tuple[list[str], str]] = field(default_factory=list)

    def write(self, block: Block) -> None:
        assert block.file is not None
        path = self.cwd / block.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.body)

    def run(self, step: Step) -> None:
        command = step.argv[:1]
        if command == ["mkdir"]:
            (self.cwd / step.argv[-1]).mkdir(parents=True)
        elif command == ["cd"]:
            self.cwd = (self.cwd / step.argv[1]).resolve()
        elif step.argv[:2] == ["pip", "install"]:
            self.install(step.argv[-1])
        elif command == ["bench"]:
            self.bench(step)
        else:
            pytest.fail(f"the guide runs `{shlex.join(step.argv)}`, which tests/test_guide.py cannot follow yet")

    def install(self, folder: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
             "--target", str(self.site), str(self.cwd / folder)],
            check=True, timeout=COMMAND_TIMEOUT,
        )  # fmt: skip
        self.installed = True

    def environment(self, assigned: dict[str, str]) -> dict[str, str]:
        """The inherited environment, with the step's assignments and the install folder on PYTHONPATH."""
        env = {**os.environ, **assigned, "BENCH_DATA_DIR": str(self.site.parent / "data")}
        guide_paths = [str(self.cwd / p) for p in assigned.get("PYTHONPATH", "").split(os.pathsep) if p]
        site = [str(self.site)] if self.installed else []
        env["PYTHONPATH"] = os.pathsep.join([*guide_paths, *site, os.environ.get("PYTHONPATH", "")])
        return env

    def bench(self, step: Step) -> None:
        argv = step.argv[1:]
        done = subprocess.run(
            [*BENCH, *argv], cwd=self.cwd, env=self.environment(step.env), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=COMMAND_TIMEOUT,
        )  # fmt: skip
        assert done.returncode == 0, f"`bench {' '.join(argv)}` exited {done.returncode}:\n{done.stdout}"
        assert_shows(done.stdout, step.shown, argv)
        self.outputs.append((argv, done.stdout))

    def printed(self, *words: str) -> list[str]:
        """The outputs of the bench commands that began with `words`; failing when the guide ran none."""
        found = [out for argv, out in self.outputs if argv[: len(words)] == list(words)]
        assert found, f"the guide never runs `bench {' '.join(words)}`"
        return found


def follow(guide: str, root: Path) -> Reader:
    reader = Reader(root, root.parent / "site")
    for block in blocks(guide):
        if block.file is not None:
            reader.write(block)
        elif block.language == "console":
            for step in steps(block.body):
                reader.run(step)
    return reader


def registered(project: Path) -> tuple[str, str, str]:
    """(distribution, variant id, `module:object`) that the guide's pyproject.toml declares."""
    declared = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    ((vid, target),) = declared["entry-points"]["bench.variants"].items()
    return declared["name"], vid, target


def test_the_guide_takes_a_variant_from_an_empty_folder_to_the_leaderboard(tmp_path: Path) -> None:
    root = tmp_path / "reader"
    root.mkdir()
    reader = follow(GUIDE.read_text(), root)
    assert reader.installed, "the guide never installs its plugin"
    distribution, vid, target = registered(reader.cwd)

    for name in (target, vid):
        (report,) = reader.printed("check-variant", name)
        assert "all applicable checks passed" in report and "FAIL" not in report
        assert f"Conformance of variant {vid} " in report
    for listing in reader.printed("list"):
        assert re.search(rf"│ {re.escape(vid)} +│.*│ {re.escape(distribution)} +│", listing), listing
    for run in reader.printed("run"):
        assert re.search(rf"\b{re.escape(vid)}\b", run.lower()), run

    for board in reader.printed("leaderboard"):
        page = reader.cwd / re.findall(r"leaderboard: (\S+index\.html)", board)[-1]
        assert vid in page.read_text()
        with (page.parent / "leaderboard.csv").open() as rows:
            states = {row["state"] for row in csv.DictReader(rows) if row["variant"] == vid}
        assert states == {"ok"}, f"{vid} on the leaderboard: {states or 'absent'}"
