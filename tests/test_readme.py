"""The README's figures are generated from the committed results, and a test holds them together."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench_leaderboard.readme import BEGIN, END, figures, sync

ROOT = Path(__file__).resolve().parent.parent
BOARD = ROOT / "results" / "leaderboard" / "leaderboard.json"


def test_the_committed_readme_holds_the_figures_of_the_committed_results() -> None:
    board = json.loads(BOARD.read_text())
    assert sync(ROOT / "README.md", board, check=True), "README figures differ from results: run `bench readme`"
    block = figures(board)
    assert block.startswith(BEGIN) and block.endswith(END)
    assert "| lm (perplexity) |" in block and "| (c) " in block


def test_sync_rewrites_only_the_block_and_names_missing_markers(tmp_path: Path) -> None:
    board = json.loads(BOARD.read_text())
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nOLD FIGURES\n{END}\noutro\n")
    assert not sync(readme, board, check=True) and "OLD FIGURES" in readme.read_text()  # a check changes nothing
    assert not sync(readme, board)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "OLD FIGURES" not in text
    assert sync(readme, board)  # now in step: nothing to write
    readme.write_text("no markers here\n")
    with pytest.raises(ValueError, match="no generated-figures block"):
        sync(readme, board)
