"""What changed: verdicts that flipped, appeared or vanished against an earlier board, a file given or the
page's committed history (the latest board whose verdicts differ, so a rebuild of a commit says the same)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from bench.run.history import committed
from bench_leaderboard.changes import Earlier, diff, since, verdicts

from .test_leaderboard import built, group

__all__ = ["built"]


def _row(board: dict[str, Any], task: str, variant: str) -> dict[str, Any]:
    return next(r for r in group(board, task)["rows"] if r["variant"] == variant)


def earlier_board(board: dict[str, Any]) -> dict[str, Any]:
    """The built board as it might have been: tied-qkv's reverse verdict not yet starred, tied-kv's lm cell not
    yet run, and a variant since removed."""
    old = copy.deepcopy(board)
    _row(old, "reverse", "tied-qkv")["vs_baseline"]["significant"] = False
    lm = group(old, "lm")
    lm["rows"] = [r for r in lm["rows"] if r["variant"] != "tied-kv"]
    gone = copy.deepcopy(_row(old, "lm", "gqa4"))
    gone.update(variant="gone", display_name="Gone")
    lm["rows"].append(gone)
    return old


def test_the_diff_names_flipped_appeared_and_vanished_verdicts(built: dict[str, Any]) -> None:
    new = built["data"]
    found = diff(verdicts(earlier_board(new)), verdicts(new))
    assert found["flipped"] == [{"task": "reverse", "variant": "tied-qkv", "name": "Q=K=V",
                                 "before": "undecided", "after": "worse"}]  # fmt: skip
    assert [(c["task"], c["variant"]) for c in found["appeared"]] == [("lm", "tied-kv")]
    assert [(c["task"], c["variant"], c["before"]) for c in found["vanished"]] == [("lm", "gone", "undecided")]
    assert ("swap", "tied-qkv") not in verdicts(new)  # swap did not learn: no verdict to change


def test_history_skips_boards_with_the_same_verdicts(built: dict[str, Any]) -> None:
    new = built["data"]
    history = [("HEAD", copy.deepcopy(new)), ("HEAD~1", earlier_board(new))]
    found = since(new, Earlier(history))
    assert found["against"] == "HEAD~1" and found["note"] == "3 verdict(s) differ from HEAD~1"
    same = since(new, Earlier(history[:1]))
    assert same["against"] is None and "1 earlier committed board" in same["note"]
    pinned = since(new, Earlier(history[:1], given=True))  # a board the user named is compared with as it is
    assert pinned["against"] == "HEAD" and pinned["note"] == "no verdict differs from HEAD"
    assert since(new, None)["note"] == "no earlier leaderboard to compare with"


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def test_the_page_lists_changes_against_its_committed_history(
    built: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the fixture's records predate today's task versions: read them as fresh, staleness is not what is tested
    monkeypatch.setattr("bench.plan.staleness.stale_reasons", lambda records: {})
    repo = tmp_path / "repo"
    results = repo / "results"
    shutil.copytree(built["root"] / "cells", results / "cells")
    page_data = results / "leaderboard" / "leaderboard.json"
    _git(repo, "init", "-q")
    assert main(["leaderboard", "--results", str(results)]) == 0  # today's board, with nothing committed yet
    today = json.loads(page_data.read_text())
    assert today["changes"]["note"] == "no earlier leaderboard to compare with" and verdicts(today)
    for old in (earlier_board(today), today):  # history: an earlier board, then today's
        page_data.write_text(json.dumps(old))
        _git(repo, "add", "-A")
        _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "board")
    assert len(list(committed(page_data.parent))) == 2
    assert main(["leaderboard", "--results", str(results)]) == 0
    changes = json.loads(page_data.read_text())["changes"]
    assert changes["against"].startswith("the board committed in")  # the earlier one: HEAD's has today's verdicts
    assert changes == {**since(today, Earlier([("x", earlier_board(today))])), "against": changes["against"],
                       "note": changes["note"]}  # fmt: skip
    section = (page_data.parent / "index.html").read_text().split('id="changes"', 1)[1].split("</section>", 1)[0]
    assert section.count("data-change=") == sum(len(changes[k]) for k in ("flipped", "appeared", "vanished")) > 0
    assert main(["leaderboard", "--results", str(results)]) == 0  # rebuilt from the same commit: the same
    assert json.loads(page_data.read_text())["changes"] == changes


def test_against_a_file_and_bad_input(built: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps(earlier_board(built["data"])))
    out = tmp_path / "board"
    argv = ["leaderboard", "--results", str(built["root"]), "--out", str(out)]
    assert main([*argv, "--against", str(old)]) == 0
    assert json.loads((out / "leaderboard.json").read_text())["changes"]["against"] == str(old)
    before = (out / "leaderboard.json").read_bytes()
    (tmp_path / "torn.json").write_text('{"groups": [')
    assert main([*argv, "--against", str(tmp_path / "torn.json")]) == 2
    assert "give the leaderboard.json of an earlier build" in capsys.readouterr().err
    assert (out / "leaderboard.json").read_bytes() == before  # nothing rebuilt on bad input
