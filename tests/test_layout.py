"""The house's plan, checked over the imports: `bench/` is arranged in rooms by the steps of a run, each
room imports only the rooms below it, and no two modules import each other. Beneath the house,
`bench_record` (the cell record's schema and statistics) imports neither `bench` nor the leaderboard, and
the leaderboard imports `bench_record`, never `bench`.

Every import counts: at module level, inside functions, and under `TYPE_CHECKING` (a type is an arrow
too). Run `pytest tests/test_layout.py -q` after moving code; a failure names the arrow to remove.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: the rooms of `bench/`, bottom up: a module may import its own room and the rooms below it
ROOMS = ("ground", "record", "fit", "plan", "measure", "run", "report", "cli")
GROUND = {"bench", "bench.console", "bench.registry", "bench.options"}

#: the plug-in packages' contract modules, the only parts of them the core may import
#: (`bench_tasks.baselines`: the count baselines every task is gated on)
PLUGIN_CONTRACTS = {"bench_tasks", "bench_tasks.base", "bench_tasks.module", "bench_tasks.optim",
                    "bench_tasks.baselines", "bench_variants", "bench_variants.base"}  # fmt: skip


def _module(path: Path, top: Path) -> str:
    """The dotted name of the module at `path` under the import root `top`."""
    parts = path.relative_to(top).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(top: Path, package: str) -> dict[str, Path]:
    return {_module(p, top): p for p in (top / package).rglob("*.py")}


#: every module of the five packages, by name
PACKAGES = {"bench": ROOT, "bench_tasks": ROOT / "tasks", "bench_variants": ROOT / "variants",
            "bench_leaderboard": ROOT / "leaderboard", "bench_record": ROOT / "leaderboard"}  # fmt: skip
ALL = {name: path for package, top in PACKAGES.items() for name, path in _modules(top, package).items()}


def _imports(path: Path, name: str, is_package: bool) -> Iterator[str]:
    """Every module `path` imports (absolute names), wherever the import statement stands."""
    here = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)


def _graph(top: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of the five packages it imports, for every module of `package`."""
    graph: dict[str, set[str]] = {}
    for name, path in _modules(top, package).items():
        graph[name] = {t for t in _imports(path, name, path.name == "__init__.py") if t in ALL and t != name}
    return graph


def _room(module: str) -> str:
    if module in GROUND:
        return "ground"
    parts = module.split(".")
    return "cli" if parts[1] == "cli" else parts[1]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle of the graph once (as found by depth-first search); a package's `__init__` importing its
    own submodules is not one."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph or node.startswith(nxt + "."):  # a submodule reading its package's __init__
                continue
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


@pytest.fixture(scope="module")
def core() -> dict[str, set[str]]:
    return _graph(ROOT, "bench")


def test_every_module_lives_in_a_room_whose_docstring_says_what_it_owns(core: dict[str, set[str]]) -> None:
    for module in core:
        assert _room(module) in ROOMS, f"{module} is in no room: move it into one of {ROOMS[1:-1]} or the ground floor"
    for room in ROOMS[1:-1]:
        init = ROOT / "bench" / room / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "Imports" in doc, f"{init}: say what the room owns and which rooms it imports"
        for path in sorted((ROOT / "bench" / room).glob("*.py")):
            assert path.stem == "__init__" or path.stem in doc, f"{init}'s docstring does not name {path.stem}"


def test_no_arrow_goes_from_a_lower_room_up(core: dict[str, set[str]]) -> None:
    upward = [
        f"{module} ({_room(module)}) imports {target} ({_room(target)})"
        for module, targets in sorted(core.items())
        for target in sorted(targets)
        if target.startswith("bench.") and ROOMS.index(_room(target)) > ROOMS.index(_room(module))
    ]
    assert not upward, "\n".join(upward)


def test_no_modules_import_each_other() -> None:
    for package, top in PACKAGES.items():
        graph = _graph(top, package)
        assert graph, package
        assert not _cycles({m: {t for t in ts if t in graph} for m, ts in graph.items()}), (package, _cycles(graph))


def test_the_core_imports_only_the_plugins_contracts(core: dict[str, set[str]]) -> None:
    reached = {t for targets in core.values() for t in targets if t.startswith(("bench_tasks", "bench_variants"))}
    assert reached >= {"bench_tasks.base", "bench_variants.base"}  # the contracts are read through these
    beyond = reached - PLUGIN_CONTRACTS
    assert not beyond, f"the core reaches into a plugin's internals: {sorted(beyond)}"


def test_the_checks_find_what_they_look_for() -> None:
    graph = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a": {"a.x"}, "a.x.k": {"a.x"}}
    assert _cycles(graph) == [["a.x", "a.y", "a.z", "a.x"]]
    assert _room("bench.run.cells") == "run" and _room("bench.options") == "ground"
    assert _room("bench.cli") == "cli" and _room("bench.console") == "ground"


def test_the_graph_holds_the_imports_wherever_they_stand(core: dict[str, set[str]]) -> None:
    assert {"bench.fit.train", "bench.record.store", "bench.plan.matrix"} <= core["bench.run.cells"]  # top level
    assert "bench.measure.decoder" in core["bench.measure.costs"]  # inside TYPE_CHECKING and functions
    assert "bench_tasks.base" in core["bench.plan.matrix"]
    assert "bench.run.summary" in core["bench.run.pipeline"]  # `from bench.run import summary`


def _reaching(package: str, forbidden: tuple[str, ...]) -> list[str]:
    """`module imports target` for each import of a module of `package` into a `forbidden` package."""
    graph = _graph(PACKAGES[package], package)
    return [f"{module} imports {target}" for module, targets in sorted(graph.items()) for target in sorted(targets)
            if target.split(".")[0] in forbidden]  # fmt: skip


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("bench_record", ("bench", "bench_leaderboard", "bench_tasks", "bench_variants")),
     ("bench_leaderboard", ("bench", "bench_tasks", "bench_variants"))],
)  # fmt: skip
def test_the_record_schema_and_the_board_depend_on_no_bench(package: str, forbidden: tuple[str, ...]) -> None:
    """The board reads results through `bench_record` alone, so it builds wherever the results folder is copied;
    `bench_record` is the ground under both."""
    reaching = _reaching(package, forbidden)
    assert not reaching, "\n".join(reaching)


def test_the_dependency_check_finds_an_import_of_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bench_record").mkdir()
    (tmp_path / "bench_record" / "__init__.py").write_text("def f():\n    from bench.run import cells\n")
    monkeypatch.setitem(PACKAGES, "bench_record", tmp_path)
    assert "bench_record imports bench.run.cells" in _reaching("bench_record", ("bench",))


def test_the_tests_mirror_the_rooms() -> None:
    """Each test file sits in the folder of the room (or plug-in package) it tests; only the house-wide
    checks stand at the top."""
    tests = ROOT / "tests"
    rooms = {p.name for p in tests.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    code = set(ROOMS[1:-1]) | {"stats", "leaderboard", "tasks", "variants"}
    assert rooms <= code, f"test folders that mirror no room or package: {sorted(rooms - code)}"
    assert {"record", "fit", "plan", "measure", "run"} <= rooms
    assert sorted(p.name for p in tests.glob("test_*.py")) == ["test_guide.py", "test_layout.py"]
    for room in rooms:
        assert ast.get_docstring(ast.parse((tests / room / "__init__.py").read_text())), room
