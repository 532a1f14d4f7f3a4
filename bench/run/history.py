"""Earlier leaderboards to say what changed against: the page's committed history, or a file the user names."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench_leaderboard.changes import Earlier

PAGE_DATA = "leaderboard.json"
HISTORY = 20  # commits of the page read at most, newest first


def _git(where: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None  # not a checkout, no git, or the file has no history: nothing to compare with
    return out.stdout


def committed(out_dir: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The page's data as committed in `out_dir`'s repository, newest first (nothing outside a checkout)."""
    if not out_dir.is_dir():
        return
    log = _git(out_dir, "log", f"-n{HISTORY}", "--format=%H %cs", "--", PAGE_DATA) or ""
    for line in log.splitlines():
        sha, day = line.split(" ", 1)
        text = _git(out_dir, "show", f"{sha}:./{PAGE_DATA}")
        try:
            board = json.loads(text or "")
        except ValueError:
            continue  # a torn or foreign file in history: skip it
        if isinstance(board, dict):
            yield f"the board committed in {sha[:10]} ({day})", board


def earlier(out_dir: Path, against: Path | None) -> Earlier:
    """The boards to compare with: `against` when given (it must be a leaderboard.json), else the history."""
    if against is None:
        return Earlier(committed(out_dir))
    try:
        board = json.loads(against.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"--against {against}: cannot read it as a leaderboard.json ({exc}); give the "
                         "leaderboard.json of an earlier build") from exc  # fmt: skip
    if not isinstance(board, dict) or "groups" not in board:
        raise ValueError(f"--against {against}: not a leaderboard.json (no groups); give the leaderboard.json "
                         "of an earlier build")  # fmt: skip
    return Earlier([(str(against), board)], given=True)
