"""The seed x item interval on the board: rows whose fits and QKV's recorded item scores show it beside the
seed-level interval (page, JSON, CSV), the rest are unchanged, and the methods state it."""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from markupsafe import escape

from bench_leaderboard import build_report
from bench_leaderboard.item_intervals import NOTE
from bench_record import CellRecord
from bench_record.compare import item_comparison, with_baseline
from bench_record.schema import ItemScores
from bench_record.stats import BOOT_REPS
from bench_record.stats.items import METHOD
from tests.leaderboard.test_leaderboard import board, group, html_rows, record, write_results

ITEMS = 400
#: variant id -> its chance of getting an item right (QKV's items are the ones the others are paired with)
SKILL = {"qkv": 0.80, "tied-kv": 0.78, "tied-qkv": 0.70}
SEEDS = 3
ITEM_KEYS = ("item_interval", "item_interval_method", "n_items")


def _scored(variant: str, with_items: bool = True) -> dict[str, Any]:
    """An MNIST cell whose seeds' accuracies are the means of their item scores (shared items: one uniform draw per
    seed and item, so the variants' mistakes overlap as real models' do)."""
    draws = np.random.default_rng(5).random((SEEDS, ITEMS))
    correct = draws < SKILL[variant] + np.linspace(-0.01, 0.01, SEEDS)[:, None]
    out = record("mnist", variant, [float(c.mean()) for c in correct])
    if with_items:
        for fit, bits in zip(out["per_seed"], correct, strict=True):
            fit["item_scores"] = ItemScores.pack("accuracy", bits).to_dict()
    return out


def _records() -> list[dict[str, Any]]:
    """QKV and tied-kv with item scores, tied-qkv without (a record from before them), each with its stored
    comparison as bench writes it."""
    records = [_scored("qkv"), _scored("tied-kv"), _scored("tied-qkv", with_items=False)]
    base = CellRecord.from_dict(records[0])
    for r in records:
        r["baseline_comparison"] = with_baseline(CellRecord.from_dict(r), base).to_dict()
    return records


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    built = build_report(write_results(tmp_path_factory.mktemp("results"), _records()), stale={})
    return {"html": built.index.read_text(), "data": json.loads(built.json.read_text()),
            "csv": list(csv.DictReader(io.StringIO(built.csv.read_text())))}  # fmt: skip


def test_the_stored_comparison_carries_the_interval_and_round_trips() -> None:
    qkv, tied, old = _records()
    stored = tied["baseline_comparison"]
    low, high = stored["item_interval"]
    assert low < stored["mean_diff"] < high and stored["item_interval_method"] == METHOD and stored["n_items"] == ITEMS
    assert "item_interval" not in old["baseline_comparison"]  # no item scores: the comparison as before
    for data in (qkv, tied, old):
        assert CellRecord.from_dict(data).to_dict() == data


def test_rows_with_item_scores_show_the_seed_by_item_interval(report: dict[str, Any]) -> None:
    rows = {r["variant"]: r for r in group(report["data"], "mnist")["rows"]}
    found = item_comparison(CellRecord.from_dict(_scored("tied-kv")), CellRecord.from_dict(_scored("qkv")))
    assert found is not None and found.seeds == SEEDS and found.items == ITEMS
    comp = rows["tied-kv"]["vs_baseline"]
    assert comp["item_interval"] == [found.ci95_low, found.ci95_high] and comp["item_interval_method"] == METHOD
    assert comp["mean_diff"] == pytest.approx(found.mean_diff, abs=1e-6)  # the same gap as the seed-level one
    assert found.ci95_low < found.mean_diff < found.ci95_high
    assert "item_interval" not in rows["tied-qkv"]["vs_baseline"]
    html = html_rows(report["html"], "mnist")
    assert "s×i [" in html["tied-kv"] and "s×i" not in html["tied-qkv"] and "s×i" not in html["qkv"]
    assert str(escape(NOTE)) in report["html"] and f"{BOOT_REPS:,} resamples" in NOTE
    csv_rows = {r["variant"]: r for r in report["csv"]}
    assert float(csv_rows["tied-kv"]["diff_item_ci95_low"]) == found.ci95_low
    assert csv_rows["tied-qkv"]["diff_item_ci95_low"] == ""


def test_the_seed_level_comparison_stars_and_ranks_are_unchanged() -> None:
    plain = [copy.deepcopy(r) for r in _records()]
    for r in plain:
        for fit in r["per_seed"]:
            fit.pop("item_scores", None)
        for key in ITEM_KEYS:
            r["baseline_comparison"].pop(key, None)
    with_items, without = board(_records(), [], {}), board(plain, [], {})
    for a, b in zip(group(with_items, "mnist")["rows"], group(without, "mnist")["rows"], strict=True):
        comp = {k: v for k, v in a["vs_baseline"].items() if k not in ITEM_KEYS}
        assert (a["variant"], a["rank"], comp) == (b["variant"], b["rank"], b["vs_baseline"])


def test_without_a_fresh_qkv_row_a_row_keeps_its_files_interval(tmp_path: Path) -> None:
    data = board(_records(), [], {"mnist-qkv": "variant qkv is now version 2 (ran 1)"})
    rows = {r["variant"]: r for r in group(data, "mnist")["rows"]}
    stored = _records()[1]["baseline_comparison"]
    assert rows["tied-kv"]["vs_baseline"]["item_interval"] == stored["item_interval"]
