"""`bench verify`: committed seeds refitted bit for bit, a record that disagrees named, nothing written."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from bench.run.verify import DIFFERS, IDENTICAL, WITHIN, compare, recorded_threads, same_setup, verdict

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"


def _committed(task: str) -> Path:
    (path,) = sorted((RESULTS / "cells").glob(f"{task}__qkv__*.json"))
    return path


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_one_seed_of_two_committed_cells_fits_again_bit_for_bit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [json.loads(_committed(task).read_text())["cell_id"] for task in ("copy", "sub")]
    results = tmp_path / "results"  # the committed records alone, as a fresh clone holds them (no databases)
    shutil.copytree(RESULTS / "cells", results / "cells")
    before = _files(results)
    argv = ["verify", "--cells", ",".join(ids), "--seeds", "0", "--results", str(results), "--data-dir", str(tmp_path)]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0, out  # bit for bit on the records' own setup, within the tolerance on another machine
    if "different" not in out:  # the machine and versions the committed records came from (ours and CI's)
        assert out.count(f"seed 0: {IDENTICAL}") == 2 and out.count("same as the record's") == 2
    assert _files(results) == before  # verifying writes nothing, not even a database


def test_a_record_its_refit_disagrees_with_is_named_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    (results / "cells").mkdir(parents=True)
    source = _committed("copy")
    record = json.loads(source.read_text())
    record["per_seed"][0]["test"]["loss"] *= 1.001  # a figure edited by hand, or a fit that does not repeat
    shutil.copy(source, results / "cells" / source.name)
    (results / "cells" / source.name).write_text(json.dumps(record))
    argv = ["verify", "--cells", record["cell_id"], "--results", str(results), "--data-dir", str(tmp_path / "data")]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert f"copy x qkv seed 0: {DIFFERS}" in out and "0.000999" in out
    assert "test/loss" in out and "test/accuracy" not in out  # the metric that moved is named


def test_bad_input_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--results", str(RESULTS), "--data-dir", str(tmp_path)]
    assert main(["verify", "--cells", "c0ffee000000", *common]) == 2
    assert "bench run --dry-run" in capsys.readouterr().err
    assert main(["verify", "--sample", "0", *common]) == 2
    assert "--cells" in capsys.readouterr().err
    assert main(["verify", "--seeds", "first", *common]) == 2
    assert "--seeds 0,1" in capsys.readouterr().err
    assert main(["verify", "--results", str(tmp_path / "empty"), "--data-dir", str(tmp_path)]) == 2
    assert "`bench run` makes them" in capsys.readouterr().err


def test_the_verdict_asks_bit_for_bit_on_the_records_setup_and_a_tolerance_elsewhere() -> None:
    same = compare({"test": {"accuracy": 0.5}}, {"test": {"accuracy": 0.5}})
    near = compare({"test": {"accuracy": 0.5}}, {"test": {"accuracy": 0.50001}})
    assert verdict(same, True, 1e-4) == (0.0, IDENTICAL)
    assert verdict(near, False, 1e-4)[1] == WITHIN
    assert verdict(near, True, 1e-4)[1] == DIFFERS  # on the record's own setup a fit must repeat exactly
    assert verdict(near, False, 1e-6)[1] == DIFFERS
    lost = compare({"test": {"accuracy": 0.5}}, {"test": {}})
    assert math.isnan(lost["test/accuracy"][1]) and verdict(lost, False, 1.0)[1] == DIFFERS
    recorded = {"device": "cpu: x86_64, 1 threads", "packages": {"torch": "2.14.1", "lightning": "2.6.6"}}
    assert recorded_threads(recorded) == 1 and recorded_threads({"device": "cuda: H100"}) is None
    assert same_setup(recorded, dict(recorded))
    assert not same_setup(recorded, {**recorded, "packages": {"torch": "2.9.0", "lightning": "2.6.6"}})
