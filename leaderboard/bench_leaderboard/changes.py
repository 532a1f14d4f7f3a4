"""What changed: the verdicts against QKV that flipped, appeared or vanished since an earlier leaderboard.

A verdict is a (task, variant) pair's reading on a ranked task, as the cards give it (`cards.verdict`:
better, worse, same, undecided). The earlier board is the caller's choice: a file given, or the committed
history of the page (`history`: newest first), where the first board whose verdicts differ from these is the
one compared with, so that rebuilding the page from the commit that holds it says the same thing again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import cards, model

Verdicts = dict[tuple[str, str], dict[str, Any]]


@dataclass(frozen=True)
class Earlier:
    """The boards to compare with, newest first, each with a label ("commit 1a2b3c4, 2026-12-07")."""

    boards: Iterable[tuple[str, Mapping[str, Any]]]
    given: bool = False  # one board the user named: compared with as it is, even where nothing differs


def verdicts(board: Mapping[str, Any]) -> Verdicts:
    """(task, variant) -> {verdict, name} over the board's ranked tables (a board of any schema that has groups)."""
    out: Verdicts = {}
    for group in board.get("groups") or []:
        if not (group.get("primary") and (group.get("gate") or {}).get("learns")):
            continue
        for row in group.get("rows") or []:
            if row.get("variant") == model.BASELINE or row.get("state") != "ok" or row.get("ablates"):
                continue
            if "higher_is_better" not in row:
                continue
            out[(group["task"], row["variant"])] = {"verdict": cards.verdict(row), "name": row.get("display_name", "")}
    return out


def _entry(key: tuple[str, str], found: Mapping[str, Any], **more: Any) -> dict[str, Any]:
    return {"task": key[0], "variant": key[1], "name": found["name"], **more}


def diff(old: Verdicts, new: Verdicts) -> dict[str, list[dict[str, Any]]]:
    """The pairs whose verdict differs, the pairs only `new` has, the pairs only `old` has; in task order."""
    order = sorted(set(old) | set(new), key=lambda k: (model.TASK_ORDER.index(k[0]) if k[0] in model.TASK_ORDER
                                                       else len(model.TASK_ORDER), k))  # fmt: skip
    flipped = [_entry(k, new[k], before=old[k]["verdict"], after=new[k]["verdict"])
               for k in order if k in old and k in new and old[k]["verdict"] != new[k]["verdict"]]  # fmt: skip
    appeared = [_entry(k, new[k], after=new[k]["verdict"]) for k in order if k not in old]
    vanished = [_entry(k, old[k], before=old[k]["verdict"]) for k in order if k not in new]
    return {"flipped": flipped, "appeared": appeared, "vanished": vanished}


def since(current: Mapping[str, Any], earlier: Earlier | None) -> dict[str, Any]:
    """The changes against the earlier board: the first of `earlier` whose verdicts differ (or the one given).

    Returns:
        {against, note, flipped, appeared, vanished}; `against` None when there was nothing to compare with.
    """
    new = verdicts(current)
    empty: dict[str, list[dict[str, Any]]] = {"flipped": [], "appeared": [], "vanished": []}
    seen = 0
    for label, board in earlier.boards if earlier else ():
        seen += 1
        found = diff(verdicts(board), new)
        if (earlier and earlier.given) or any(found.values()):
            changed = sum(len(v) for v in found.values())
            note = f"{changed} verdict(s) differ from {label}" if changed else f"no verdict differs from {label}"
            return {"against": label, "note": note, **found}
    if seen:
        return {"against": None, "note": f"no verdict differs from the {seen} earlier committed board(s) read", **empty}
    return {"against": None, "note": "no earlier leaderboard to compare with", **empty}
