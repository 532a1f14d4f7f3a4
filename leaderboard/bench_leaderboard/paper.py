"""The study's reported numbers as data, and our results set beside them.

Source: "Do Transformers Need Three Projections? Systematic Study of QKV Variants" (Kayyam, Madan
Gopal, Lewis; ICML 2026; arXiv 2606.04032), Tables 1, 2 and 4, as transcribed in
`shared/reference/paper.md`. Table 4 is compared as the perplexity CHANGE against QKV in percent:
the paper's absolute perplexities score padding tokens and are not comparable with ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench_record import CellRecord

from .model import BASELINE, Cells

PAPER_SCALE = "paper"  # our scale whose configs follow the paper's

TABLE1: dict[str, dict[str, float]] = {
    "qkv": {"reverse": 0.698, "sort": 0.971, "sub": 1.0, "swap": 0.588, "copy": 1.0},
    "tied-qk": {"reverse": 0.705, "sort": 0.967, "sub": 1.0, "swap": 0.597, "copy": 1.0},
    "tied-qk-pos": {"reverse": 0.718, "sort": 0.963, "sub": 1.0, "swap": 0.671, "copy": 1.0},
    "tied-kv": {"reverse": 0.701, "sort": 0.958, "sub": 1.0, "swap": 0.590, "copy": 1.0},
    "tied-qkv": {"reverse": 0.514, "sort": 0.939, "sub": 1.0, "swap": 0.446, "copy": 1.0},
    "tied-qkv-pos": {"reverse": 0.581, "sort": 0.957, "sub": 1.0, "swap": 0.576, "copy": 1.0},
}

_T2_TASKS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "set-anomaly", "tinyimagenet")
_T2_ROWS: dict[str, tuple[float | None, ...]] = {
    "qkv": (0.981, 0.887, 0.663, 0.363, 0.942, 0.229),
    "tied-qk": (0.981, 0.885, 0.666, 0.369, 0.954, 0.236),
    "tied-qk-pos": (0.982, 0.884, 0.662, 0.366, 0.966, None),
    "tied-kv": (0.976, 0.883, 0.659, 0.358, 0.949, None),
    "tied-qkv": (0.978, 0.877, 0.672, 0.376, 0.933, 0.266),
    "tied-qkv-pos": (0.977, 0.875, 0.669, 0.364, 0.961, None),
}
TABLE2: dict[str, dict[str, float]] = {
    v: {t: x for t, x in zip(_T2_TASKS, xs, strict=True) if x is not None} for v, xs in _T2_ROWS.items()
}

#: Table 4, 300M LM: variant -> (val perplexity, change vs QKV in %, KV-cache reduction in % as printed)
TABLE4: dict[str, tuple[float, float, float]] = {
    "qkv": (5.11, 0.0, 0.0),
    "tied-kv": (5.27, 3.1, 50.0),
    "tied-qk": (5.36, 4.9, 0.0),
    "tied-qkv": (6.41, 25.4, 50.0),
    "gqa4": (5.15, 0.7, 75.0),
    "mqa": (5.19, 1.5, 93.8),
    "tied-kv-gqa4": (5.32, 3.9, 87.5),
    "tied-kv-mqa": (5.36, 4.8, 96.9),
}

TABLES = (
    ("Table 1", "token accuracy, averaged over the paper's size sweep", ("reverse", "sort", "sub", "swap", "copy")),
    ("Table 2", "top-1 accuracy; Anomaly = odd-one-out accuracy", _T2_TASKS),
    ("Table 4", "300M LM: validation perplexity change vs QKV, %", ("lm",)),
)
TASK_LABELS = {"set-anomaly": "Anomaly", "fashion-mnist": "FMNIST", "tinyimagenet": "TinyImageNet"}
PAPER_VARIANTS = ("qkv", "tied-qk", "tied-qk-pos", "tied-kv", "tied-qkv", "tied-qkv-pos")
PAPER_NAMES = {
    "qkv": "QKV", "tied-qk": "Q=K-V", "tied-qk-pos": "(Q=K-V)+", "tied-kv": "Q-K=V", "tied-qkv": "Q=K=V",
    "tied-qkv-pos": "(Q=K=V)+", "gqa4": "GQA-4", "mqa": "MQA", "tied-kv-gqa4": "Q-GQA-4", "tied-kv-mqa": "Q-MQA",
}  # fmt: skip
TABLE4_VARIANTS = ("qkv", "tied-kv", "tied-qk", "tied-qkv", "gqa4", "mqa", "tied-kv-gqa4", "tied-kv-mqa")


def reported_gain(task: str, variant: str, base: str) -> float | None:
    """The paper's `variant` - `base` on `task` (Tables 1 and 2, to their 3 decimals); None where either is missing."""
    a, b = ({**TABLE1.get(v, {}), **TABLE2.get(v, {})}.get(task) for v in (variant, base))
    return None if a is None or b is None else round(a - b, 3)


def comparability(cells: Mapping[str, CellRecord]) -> tuple[bool, list[str]]:
    """Whether one task's results can stand beside the paper's, and why not.

    Args:
        cells: variant id -> record for one task.

    Returns:
        (comparable, reasons); not comparable when any result used proxy data or ran at a scale
        other than the paper's, or when there is no result at all.
    """
    if not cells:
        return False, ["no results"]
    reasons: set[str] = set()
    for record in cells.values():
        source = record.data_source
        if source is not None and source.kind == "proxy":
            reasons.add(f"proxy data ({source.name or 'unnamed'})")
        scale = record.scale or ""
        if scale != PAPER_SCALE:
            reasons.add(f"scale {scale or 'unknown'} (the paper's is {PAPER_SCALE!r})")
    return not reasons, sorted(reasons)


def _ours(record: CellRecord | None) -> float | None:
    return float(record.summary.mean) if record and record.summary else None


def _accuracy(record: CellRecord | None) -> float | None:
    """A cell's mean test accuracy: its primary metric, or beside it where the task measures steps to a target
    (the study reports accuracy after a fixed budget; a speed task's fit stops at its target)."""
    if not record or record.task.measures != "speed":
        return _ours(record)
    values = [fit.test["accuracy"] for fit in record.per_seed or () if "accuracy" in fit.test]
    return sum(values) / len(values) if values else None


def lm_change(cells: Mapping[str, CellRecord], variant: str) -> float | None:
    """Our perplexity change vs QKV on the LM task, in percent; None when either is missing."""
    base, mine = _ours(cells.get(BASELINE)), _ours(cells.get(variant))
    if base is None or mine is None or base == 0:
        return None
    return (mine / base - 1) * 100


def _columns(tasks: tuple[str, ...], cells: Cells, excluded: Mapping[str, str]) -> list[dict[str, Any]]:
    columns = []
    for task in tasks:
        ok, reasons = comparability(cells.get(task, {}))
        if task in excluded:
            ok, reasons = False, [f"left out, {excluded[task]}"]
        label = TASK_LABELS.get(task, task.upper())
        columns.append({"task": task, "label": label, "comparable": ok, "left_out": task in excluded, "why": reasons})
    return columns


def _accuracy_table(
    name: str, caption: str, tasks: tuple[str, ...], cells: Cells, excluded: Mapping[str, str]
) -> dict[str, Any]:
    paper = TABLE1 if name == "Table 1" else TABLE2
    rows = []
    for variant in PAPER_VARIANTS:
        values = []
        for task in tasks:
            ours = _accuracy(cells.get(task, {}).get(variant))
            values.append({"paper": paper[variant].get(task), "ours": ours})
        rows.append({"variant": variant, "values": values})
    return {"name": name, "caption": caption, "columns": _columns(tasks, cells, excluded), "rows": rows}


def _lm_table(name: str, caption: str, cells: Cells, excluded: Mapping[str, str]) -> dict[str, Any]:
    lm = cells.get("lm", {})
    rows = []
    for variant in TABLE4_VARIANTS:
        ppl, change, reduction = TABLE4[variant]
        values = [{"paper": change, "ours": lm_change(lm, variant), "paper_ppl": ppl, "paper_kv_reduction": reduction}]
        rows.append({"variant": variant, "values": values})
    return {"name": name, "caption": caption, "columns": _columns(("lm",), cells, excluded), "rows": rows}


def side_by_side(cells: Cells, excluded: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The paper's tables with our numbers beside them, per column flagged comparable or not.

    Args:
        cells: task id -> variant id -> fresh ok record (see `model.current_cells`), without the
            tasks that did not pass the learning gate.
        excluded: task id -> why it was left out (see `model.left_out`); its column says so.

    Returns:
        One dict per paper table with `columns` (task, comparable, why) and `rows` (variant, values).
    """
    tables = []
    for name, caption, tasks in TABLES:
        gone = excluded or {}
        if name == "Table 4":
            table = _lm_table(name, caption, cells, gone)
        else:
            table = _accuracy_table(name, caption, tasks, cells, gone)
        for row in table["rows"]:
            row["display_name"] = PAPER_NAMES[row["variant"]]
        tables.append(table)
    return tables
