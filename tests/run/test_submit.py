"""`bench submit` and `bench leaderboard --add`: a contributor's bundle is taken in whole once all of it checks out
against this checkout, and every bad bundle is refused with its fix, leaving the results folder byte for byte as
it was. The contributed variant is the example plugin's `latent-kv` (pip-installed by tests/conftest.py); its
record is a committed QKV record of the reverse task given latent-kv's variant fields and cell id (no training)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from bench.plan.matrix import Cell, expand
from bench.plan.suites import get_suite
from bench.registry import tasks, variants
from bench.report.bundle import read_bundle, write_bundle

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "results" / "cells"
PLUGIN = "latent-kv"

Edit = Callable[[dict[str, Any], dict[str, bytes]], None]


def _committed(variant: str) -> Path:
    return next(COMMITTED.glob(f"reverse__{variant}__*.json"))


def _cell(variant: str) -> Cell:
    (cell,) = expand(get_suite("default"), [tasks().get("reverse")], [variants().get(variant)])
    return cell


def contributed(variant: str = PLUGIN, **changes: Any) -> tuple[str, bytes]:
    """(bundle name, bytes) of an ok record of `variant` on reverse that matches this checkout, `changes` applied."""
    cell = _cell(variant)
    record = json.loads(_committed("qkv").read_text())
    record.update(cell_id=cell.id, suite="default", scale="default",
                  config={"type": type(cell.config).__name__, **cell.config.as_dict()},
                  variant={**cell.variant.describe(), "summary": cell.variant.summary})  # fmt: skip
    record["task"]["version"] = cell.task.version
    record.update(changes)
    name = f"cells/reverse__{variant}__{record['cell_id']}.json"
    return name, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, " ".join((out.out + out.err).split())


@pytest.fixture
def board(tmp_path: Path) -> Path:
    """The maintainer's results folder: committed records of two built-in variants on the reverse task."""
    cells = tmp_path / "results" / "cells"
    cells.mkdir(parents=True)
    for variant in ("qkv", "tied-kv"):
        shutil.copy(_committed(variant), cells)
    return tmp_path / "results"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """A good bundle of latent-kv, made once by `bench submit` from a contributor's results folder that also
    holds a built-in's record and a stale record of latent-kv (both left out)."""
    mine = tmp_path_factory.mktemp("contributor")
    (mine / "cells").mkdir()
    shutil.copy(_committed("qkv"), mine / "cells")
    for name, raw in (contributed(), contributed(cell_id="00000000000f")):
        (mine / name).write_bytes(raw)
    out = mine / "latent.bundle.tar.gz"
    assert main(["submit", PLUGIN, "--results", str(mine), "--out", str(out)]) == 0
    return out


def edited(bundle: Path, tmp_path: Path, edit: Edit) -> Path:
    """The bundle written again after `edit(manifest, cells)` (its sha256s as `edit` leaves them)."""
    found = read_bundle(bundle)
    manifest, cells = json.loads(json.dumps(found.manifest)), dict(found.cells)
    edit(manifest, cells)
    out = tmp_path / "edited.bundle.tar.gz"
    write_bundle(out, manifest, cells)
    return out


def _rehash(manifest: dict[str, Any], cells: dict[str, bytes]) -> None:
    manifest["files"] = {n: hashlib.sha256(raw).hexdigest() for n, raw in cells.items()}


def _only(cells: dict[str, bytes], name: str, raw: bytes, manifest: dict[str, Any]) -> None:
    cells.clear()
    cells[name] = raw
    _rehash(manifest, cells)


def _newer_format(manifest: dict[str, Any], cells: dict[str, bytes]) -> None:
    manifest["format_version"] = 2


def _foreign_cell(manifest: dict[str, Any], cells: dict[str, bytes]) -> None:
    _only(cells, *contributed(cell_id="0123456789ab"), manifest)


def _torn_record(manifest: dict[str, Any], cells: dict[str, bytes]) -> None:
    name = next(iter(cells))
    cells[name] = cells[name][:200]  # the manifest keeps the whole file's sha256


def _missing_record(manifest: dict[str, Any], cells: dict[str, bytes]) -> None:
    cells.clear()


def _failed_report(manifest: dict[str, Any], cells: dict[str, bytes]) -> None:
    manifest["check_variant"]["passed"] = False
    manifest["check_variant"]["checks"][1]["passed"] = False


def _builtin_variant(manifest: dict[str, Any], cells: dict[str, bytes]) -> None:
    manifest["variant"] = variants().get("qkv").describe()
    _only(cells, f"cells/{_committed('qkv').name}", _committed("qkv").read_bytes(), manifest)


def _builtin_record(manifest: dict[str, Any], cells: dict[str, bytes]) -> None:
    cells[f"cells/{_committed('qkv').name}"] = _committed("qkv").read_bytes()
    _rehash(manifest, cells)


def _old_task(manifest: dict[str, Any], cells: dict[str, bytes]) -> None:
    name, raw = contributed()
    record = json.loads(raw)
    record["task"]["version"] = "0"
    _only(cells, name, json.dumps(record).encode(), manifest)


def _newer_schema(manifest: dict[str, Any], cells: dict[str, bytes]) -> None:
    _only(cells, *contributed(schema_version=99), manifest)


BAD: dict[str, tuple[Edit, tuple[str, ...]]] = {
    "a bundle format of another bench": (_newer_format, ("bundle format 2", "run `bench submit` again")),
    "a foreign cell id": (_foreign_cell, ("cell id 0123456789ab is foreign", "`bench run --variants latent-kv`")),
    "a torn record": (_torn_record, ("sha256 differs", "make the bundle again with `bench submit`")),
    "a record missing": (_missing_record, ("listed in manifest.json but not in the bundle",)),
    "a failed check-variant report": (_failed_report, ("report did not pass (failed: shapes)",
                                                       "until `bench check-variant latent-kv` passes")),
    "a built-in variant": (_builtin_variant, ("variant 'qkv' is built in", "never replaced")),
    "a built-in's record": (_builtin_record, ("a record of variant 'qkv', not of 'latent-kv'", "bench submit qkv")),
    "an older task version": (_old_task, ("task reverse ran at version '0'", "re-run `bench run")),
    "a record of a newer schema": (_newer_schema, ("schema_version 99", "update this one")),
}  # fmt: skip


def _refused(argv: list[str], board: Path, capsys: pytest.CaptureFixture[str]) -> str:
    before = snapshot(board)
    code, text = _run(argv, capsys)
    assert code == 2, text
    assert "Traceback" not in text
    assert snapshot(board) == before  # nothing written, not even the page
    return text


def test_submit_bundles_the_plugin_variants_matching_records(bundle: Path) -> None:
    found = read_bundle(bundle)
    name, raw = contributed()
    assert found.cells == {name: raw}  # the built-in's and the stale record are left out
    manifest = found.manifest
    assert manifest["variant"]["id"] == PLUGIN and manifest["format_version"] == 1
    assert manifest["plugin"] == {"package": "bench-latent-attention", "version": "0.1.0"}
    assert manifest["bench"]["version"] and "git_sha" in manifest["bench"] and manifest["provenance"]["device"]
    report = manifest["check_variant"]
    assert report["passed"] and {"name", "status", "passed", "message"} <= set(report["checks"][0])
    assert manifest["files"] == {name: hashlib.sha256(raw).hexdigest()}


@pytest.fixture
def passing(monkeypatch: pytest.MonkeyPatch) -> None:
    """check-variant passing at once: `bundle` ran the real checks on latent-kv; here only their verdict is needed."""
    import bench.measure.conformance as conformance

    passed = [conformance.CheckResult(name, conformance.PASS, "stub") for name, _ in conformance.CHECKS]
    monkeypatch.setattr(conformance, "run_checks", lambda spec: passed)


@pytest.mark.usefixtures("passing")
def test_a_good_bundle_is_added_and_the_board_built(
    bundle: Path, board: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = _run(["leaderboard", "--results", str(board), "--add", str(bundle)], capsys)
    assert code == 0, text
    assert "added 1 record(s) of latent-kv" in text
    name, raw = contributed()
    assert (board / name).read_bytes() == raw
    assert PLUGIN in (board / "leaderboard" / "leaderboard.json").read_text()
    cells = snapshot(board / "cells")
    code, text = _run(["leaderboard", "--results", str(board), "--add", str(bundle)], capsys)
    assert code == 0 and "added 0 record(s) of latent-kv from" in text and "(1 already there)" in text
    assert snapshot(board / "cells") == cells  # adding it twice changes nothing


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_bundle_is_refused_with_the_fix_and_changes_nothing(
    case: str, bundle: Path, board: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit, words = BAD[case]
    bad = edited(bundle, tmp_path, edit)
    text = _refused(["leaderboard", "--results", str(board), "--add", str(bad)], board, capsys)
    for word in words:
        assert word in text, (case, text)


def test_a_torn_bundle_file_is_refused(
    bundle: Path, board: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torn = tmp_path / "torn.bundle.tar.gz"
    torn.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    text = _refused(["leaderboard", "--results", str(board), "--add", str(torn)], board, capsys)
    assert "not a whole bundle" in text and "copy the file whole" in text


def test_a_bundle_of_a_variant_not_installed_is_refused(
    bundle: Path, board: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import bench.registry as registry

    real = registry.entry_points
    monkeypatch.setattr(registry, "entry_points", lambda group: [e for e in real(group=group) if e.name != PLUGIN])
    text = _refused(["leaderboard", "--results", str(board), "--add", str(bundle)], board, capsys)
    assert "variant 'latent-kv' is not installed here" in text
    assert "pip install 'bench-latent-attention==0.1.0'" in text


def test_a_variant_failing_check_variant_here_now_is_refused(
    bundle: Path, board: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import bench.measure.conformance as conformance

    failing = [conformance.CheckResult("decoding = full pass", conformance.FAIL, "ValueError: differs")]
    monkeypatch.setattr(conformance, "run_checks", lambda spec: failing)
    text = _refused(["leaderboard", "--results", str(board), "--add", str(bundle)], board, capsys)
    assert "`bench check-variant latent-kv` fails on the installed plugin now (failed: decoding = full pass)" in text


def test_a_different_stored_record_of_the_cell_is_never_replaced(
    bundle: Path, board: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, _ = contributed()
    (board / name).write_bytes(contributed(created_at="2026-01-01T00:00:00+00:00")[1])
    text = _refused(["leaderboard", "--results", str(board), "--add", str(bundle)], board, capsys)
    assert "already holds a different record of this cell" in text and "remove" in text


@pytest.mark.parametrize(
    ("variant", "words"),
    [("qkv", "variant 'qkv' is built in"), (PLUGIN, "no ok result of variant 'latent-kv'")],
)
def test_submit_refuses_a_builtin_or_no_results(
    variant: str, words: str, board: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.bundle.tar.gz"
    code, text = _run(["submit", variant, "--results", str(board), "--out", str(out)], capsys)
    assert code == 2 and words in text and not out.exists()
