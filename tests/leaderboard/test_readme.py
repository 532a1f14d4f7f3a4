"""The README and the docs pages: short, linked, and every figure in them generated from the committed results.

Each page with figures holds one block that `bench readme` renders from `results/` (`PAGES` in
`bench_leaderboard.readme`); these tests fail when a committed page and the committed results disagree,
when a figure of a block is typed again in the prose around it, when a link or a module path named in
the pages points nowhere, and when the README outgrows what a newcomer reads in five minutes.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench_leaderboard.readme import BEGIN, END, PAGES, Figures, render, sync, sync_all

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
ALL_PAGES = [README, *DOCS]
BLOCK = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
#: a figure as a run prints it: a number with two or more decimals, not part of a version string
FIGURE = re.compile(r"(?<![\w.])\d+\.\d{2,}(?!\.?\w)")
#: a measurement typed with its unit (a ratio, a rate, a size), which belongs in a block
MEASURED = re.compile(r"\d[\d,.]*(?:x\b|\s?(?:GFLOP/s|GB/s|tok/s|tokens/s|ms\b|MiB|KiB|GiB))")
LINK = re.compile(r"\]\(([^)\s]+)\)")
#: entry-point groups, named like modules
GROUPS = {"bench.variants", "bench.tasks", "bench.decoder"}
PACKAGE_ROOTS = {"bench": ROOT, "bench_variants": ROOT / "variants", "bench_tasks": ROOT / "tasks",
                 "bench_leaderboard": ROOT / "leaderboard", "bench_record": ROOT / "leaderboard"}  # fmt: skip


@pytest.fixture(scope="module")
def figures() -> Figures:
    return Figures.load(ROOT / "results")


def _prose(page: Path) -> str:
    return BLOCK.sub("", page.read_text())


def _nudged(data: Any) -> Any:
    """The same results with every measured value moved: what a page must not keep showing."""
    if isinstance(data, dict):
        return {k: _nudged(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_nudged(v) for v in data]
    return data * 1.37 + 0.011 if isinstance(data, float) else data


# ---- the figures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_holds_the_figures_of_the_committed_results(page: str, figures: Figures) -> None:
    block = render(page, figures)
    assert block.startswith(BEGIN) and block.endswith(END) and "None" not in block
    assert sync(ROOT / page, block, check=True), f"{page}: figures differ from results: run `bench readme`"


def test_the_blocks_hold_what_the_old_readme_guarded(figures: Figures) -> None:
    results = render("docs/results.md", figures)
    assert "| lm (perplexity) |" in results and "| (c) " in results
    assert "| QKV |" in render("README.md", figures)


def test_only_the_listed_pages_hold_a_block_and_each_exactly_one() -> None:
    for page in ALL_PAGES:
        text, name = page.read_text(), page.relative_to(ROOT).as_posix()
        listed = name in PAGES
        assert text.count(BEGIN) == text.count(END) == int(listed), f"{name}: one block if listed in PAGES, else none"


@pytest.mark.parametrize("page", list(PAGES))
def test_a_page_that_disagrees_with_the_results_fails_the_check(page: str, figures: Figures, tmp_path: Path) -> None:
    changed = Figures(_nudged(figures.board), _nudged(dict(figures.perf)))
    copy = tmp_path / "page.md"
    shutil.copy(ROOT / page, copy)
    before = copy.read_text()
    assert render(page, changed) != render(page, figures), f"{page}: its block does not depend on the results"
    assert not sync(copy, render(page, changed), check=True)
    assert copy.read_text() == before  # a check writes nothing


def test_no_figure_of_a_block_is_typed_in_the_prose(figures: Figures) -> None:
    generated = {n for page in PAGES for n in FIGURE.findall(render(page, figures))}
    for page in ALL_PAGES:
        prose, name = _prose(page), page.relative_to(ROOT).as_posix()
        typed = sorted(set(FIGURE.findall(prose)) & generated)
        assert not typed, f"{name}: figures typed by hand outside the generated block: {typed}"
        assert not MEASURED.findall(prose), f"{name}: measurements typed by hand: {MEASURED.findall(prose)}"


def test_sync_rewrites_only_the_block_and_names_missing_markers(tmp_path: Path, figures: Figures) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nOLD FIGURES\n{END}\noutro\n")
    block = render("README.md", figures)
    assert not sync(readme, block, check=True) and "OLD FIGURES" in readme.read_text()  # a check changes nothing
    assert not sync(readme, block)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "OLD FIGURES" not in text
    assert sync(readme, block)  # now in step: nothing to write
    readme.write_text("no markers here\n")
    with pytest.raises(ValueError, match="no generated-figures block"):
        sync(readme, block)
    with pytest.raises(ValueError, match=r"names the folder that holds README\.md, docs/results\.md"):
        sync(tmp_path / "docs" / "results.md", block)


def test_bench_readme_writes_every_page_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    from bench.cli import main

    for page in PAGES:  # every page with its block emptied
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text(BLOCK.sub(f"{BEGIN}\n{END}", (ROOT / page).read_text()))
    args = ["readme", "--results", str(ROOT / "results"), "--root", str(tmp_path)]
    assert main([*args, "--check"]) == 1
    assert main(args) == 0
    assert all(sync_all(tmp_path, Figures.load(ROOT / "results"), check=True).values())
    assert main([*args, "--check"]) == 0
    for page in PAGES:
        assert (tmp_path / page).read_text() == (ROOT / page).read_text(), page


def test_missing_or_broken_results_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="build it first with `bench leaderboard"):
        Figures.load(tmp_path)
    (tmp_path / "leaderboard").mkdir()
    (tmp_path / "leaderboard" / "leaderboard.json").write_text(json.dumps({"groups": []}))
    (tmp_path / "perf").mkdir()
    (tmp_path / "perf" / "harness.json").write_text('{"cut sho')
    with pytest.raises(ValueError, match=r"harness\.json is not JSON"):
        Figures.load(tmp_path)


# ---- the pages ----------------------------------------------------------------------------------------


def test_the_readme_is_read_in_five_minutes() -> None:
    assert len(README.read_text().splitlines()) <= 150


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / link).resolve() for link in LINK.findall(README.read_text())}
    assert DOCS and not [p.name for p in DOCS if p.resolve() not in linked]


@pytest.mark.parametrize("page", ALL_PAGES, ids=lambda p: p.name)
def test_every_relative_link_points_to_a_file(page: Path) -> None:
    for link in LINK.findall(page.read_text()):
        if link.startswith(("http://", "https://", "mailto:", "#")):
            continue
        assert (page.parent / link.split("#")[0]).exists(), f"{page.name}: link to {link}, which does not exist"


def _module_exists(dotted: str) -> bool:
    """Whether the dotted name starts with a module or package of ours (what follows may be an attribute)."""
    parts = dotted.split(".")
    top = PACKAGE_ROOTS.get(parts[0])
    if top is None:
        return True  # not ours
    for n in range(len(parts), 1, -1):
        path = top.joinpath(*parts[:n])
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return True
    return len(parts) == 1


@pytest.mark.parametrize("page", ALL_PAGES, ids=lambda p: p.name)
def test_module_paths_named_in_the_pages_exist(page: Path) -> None:
    text = page.read_text()
    for path in re.findall(r"`((?:bench|variants|tasks|leaderboard|tests|examples|docs)/[\w./-]*)`", text):
        assert (ROOT / path).exists(), f"{page.name}: `{path}` does not exist"
    for dotted in re.findall(r"`(bench\w*(?:\.\w+)+)", text):
        assert dotted in GROUPS or _module_exists(dotted), f"{page.name}: `{dotted}` names no module"
