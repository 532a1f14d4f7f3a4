"""The cell record's schema (`bench_record`): every committed record reads and writes back exactly; other
versions are migrated or refused with the command to run; the store writes nothing that does not match it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.record.store import ResultStore, write_json_atomic
from bench_record import SCHEMA_VERSION, CellRecord, SchemaError
from bench_record import schema as schema_mod
from bench_record.compare import with_baseline

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted((ROOT / "results" / "cells").glob("*.json"))


def _ok(**changes: Any) -> dict[str, Any]:
    """A small ok record of the current schema."""
    record = {
        "schema_version": SCHEMA_VERSION, "cell_id": "abc123", "status": "ok", "suite": "smoke", "scale": "smoke",
        "task": {"id": "reverse", "metric": "accuracy", "higher_is_better": True, "version": "1"},
        "variant": {"id": "tied-kv", "display_name": "Q-K=V", "tie": "k=v", "positional_2d": "off"},
        "summary": {"metric": "accuracy", "mean": 0.5, "ci95_low": 0.4, "ci95_high": 0.6, "n": 2, "std": None},
        "costs": {"parameters": 10, "kv_measured": None}, "tuning": {"trials_budget": 0}, "seeds": [0, 1],
        "seed_design": None,
        "per_seed": [{"seed": 0, "test": {"accuracy": 0.45}}, {"seed": 1, "test": {"accuracy": 0.55}}],
    }  # fmt: skip
    return {**record, **changes}


def test_the_results_hold_cells() -> None:
    assert len(COMMITTED) > 100  # the round trip below reads every one of them


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_every_committed_record_round_trips_exactly(path: Path) -> None:
    text = path.read_text()
    data = json.loads(text)
    record = CellRecord.from_dict(data)
    assert record.to_dict() == data
    assert json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n" == text  # the very bytes store writes
    assert record.task.id in path.name and record.variant.id in path.name and record.cell_id in path.name


def test_the_stored_comparison_is_the_one_both_sides_compute() -> None:
    """Each committed ok record's `baseline_comparison` is what `with_baseline` gives against its task's QKV."""
    records = [CellRecord.from_dict(json.loads(p.read_text())) for p in COMMITTED]
    base = {r.task.id: r for r in records if r.ok and r.variant.id == "qkv"}
    compared = [r for r in records if r.ok and r.task.id in base]
    assert compared
    for record in compared:
        assert with_baseline(record, base[record.task.id]) == record.baseline_comparison, record.cell_id


def test_typed_parts_keep_what_they_do_not_type() -> None:
    data = _ok(future_field={"x": 1})
    record = CellRecord.from_dict(data)
    assert record.variant.extra == {"positional_2d": "off"} and record.extra["future_field"] == {"x": 1}
    assert record.summary is not None and record.summary.std is None and "std" in record.summary.to_dict()
    assert record.costs is not None and record.costs.kv_measured is None and record.seed_design is None
    assert record.to_dict() == data  # nulls stay nulls, absent keys stay absent
    assert record.seed_values() == {0: 0.45, 1: 0.55}


def test_item_scores_are_optional_and_round_trip() -> None:
    """A seed's packed item scores (schema 1 still: records without them read as before) and the comparison's
    seed x item interval read and write back exactly."""
    data = _ok()
    data["per_seed"][0]["item_scores"] = {"correct": "oA==", "metric": "accuracy", "n": 3}  # 1, 0, 1
    data["baseline_comparison"] = {"baseline": "qkv", "mean_diff": 0.01, "item_interval": [-0.02, 0.04],
                                   "item_interval_method": "seed×item paired bootstrap", "n_items": 3}  # fmt: skip
    record = CellRecord.from_dict(data)
    assert record.to_dict() == data and record.per_seed is not None
    scores = record.per_seed[0].item_scores
    assert scores is not None and scores.unpack().tolist() == [True, False, True]
    assert set(record.seed_items()) == {0} and record.per_seed[1].item_scores is None
    assert record.baseline_comparison is not None and record.baseline_comparison.item_interval == (-0.02, 0.04)
    data["per_seed"][0]["item_scores"]["n"] = 9
    with pytest.raises(SchemaError, match="holds 1 bytes, expected 2 for n=9"):
        CellRecord.from_dict(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("variant"), "missing variant.id, variant.display_name"),
        (lambda r: r["summary"].update(mean=float("nan")), "summary.mean is nan"),
        (lambda r: r["summary"].update(n=True), "summary.n is bool, expected int"),
        (lambda r: r["task"].update(metric=3), "task.metric is int, expected str"),
        (lambda r: r["per_seed"][1].pop("seed"), r"missing per_seed\[1\]\.seed"),
        (lambda r: r.pop("costs"), "missing costs"),
        (lambda r: r.update(status="done"), "status 'done', expected one of ok, n/a, failed, diverged"),
        (lambda r: r.update(status="failed"), "a failed cell needs a reason string"),
    ],
)
def test_a_malformed_record_says_what_is_wrong(change: Any, message: str) -> None:
    data = _ok()
    change(data)
    with pytest.raises(SchemaError, match=message):
        CellRecord.from_dict(data)


def test_a_newer_record_is_refused_with_what_to_do() -> None:
    with pytest.raises(SchemaError, match=r"expected 1 \(written by another bench\); a newer bench wrote it: update"):
        CellRecord.from_dict(_ok(schema_version=SCHEMA_VERSION + 1))


@pytest.mark.parametrize("version", [0, None, "1"])
def test_a_record_no_migration_reaches_names_the_command_that_recreates_it(version: Any) -> None:
    with pytest.raises(SchemaError, match=r"no migration from it is known: re-create it with `bench run`"):
        CellRecord.from_dict(_ok(schema_version=version))


def test_an_older_record_is_migrated_through_the_known_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    def from_0(old: dict[str, Any]) -> dict[str, Any]:  # say version 0 named the variant's display name "name"
        variant = dict(old["variant"])
        variant["display_name"] = variant.pop("name")
        return {**old, "variant": variant}

    monkeypatch.setitem(schema_mod.MIGRATIONS, 0, from_0)
    old = _ok(schema_version=0, variant={"id": "qkv", "name": "QKV"})
    record = CellRecord.from_dict(old)
    assert record.schema_version == SCHEMA_VERSION and record.variant.display_name == "QKV"
    assert "name" not in record.variant.extra
    assert old["schema_version"] == 0  # the file's data is left as it was


def test_write_cell_refuses_a_malformed_record_and_writes_nothing(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results")
    bad = _ok()
    del bad["summary"]
    with pytest.raises(SchemaError, match=r"not writing the reverse/tied-kv cell 'abc123'.*missing summary"):
        store.write_cell(bad)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_write_cell_writes_what_the_schema_reads(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results")
    data = _ok()
    data["summary"]["std"] = float("nan")  # one seed's spread: written as null, as every number that is not finite
    path = store.write_cell({k: v for k, v in data.items() if k != "schema_version"})
    written = json.loads(path.read_text())
    assert written == {**data, "summary": {**data["summary"], "std": None}}
    assert store.cell("abc123") == CellRecord.from_dict(written)
    assert store.record("abc123") == written


def test_the_store_reads_an_unknown_version_as_unreadable(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results")
    path = store.cell_path("reverse", "tied-kv", "abc123")
    write_json_atomic(path, _ok(schema_version=0))
    assert store.cell("abc123") is None and store.record("abc123") == {}
    (problem,) = store.unreadable("abc123")
    assert problem.startswith(str(path)) and "re-create it with `bench run`" in problem


def test_the_board_skips_a_record_of_another_version_saying_what_to_run(tmp_path: Path) -> None:
    from bench_leaderboard.load import load_results

    cells = tmp_path / "cells"
    cells.mkdir()
    (cells / "reverse__tied-kv__abc123.json").write_text(json.dumps(_ok(schema_version=0)))
    (cells / "reverse__tied-kv__def456.json").write_text(json.dumps(_ok(cell_id="def456")))
    records, problems = load_results(tmp_path)
    assert [r.cell_id for r in records] == ["def456"]
    assert problems == [
        "cells/reverse__tied-kv__abc123.json: schema_version 0, expected 1 (written by another bench); "
        "no migration from it is known: re-create it with `bench run` (the cell runs again)"
    ]
