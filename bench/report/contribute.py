"""Contributed results: `bench submit` packs a plugin variant's results into a bundle (`bench.report.bundle`),
and `bench leaderboard --add` checks a bundle against this checkout before it takes the records in.

`submit` bundles the variant's ok records that match this checkout (naming those it leaves out, such as an
older version's), with check-variant's report, and refuses a built-in variant or a failing check.

`add_bundle` checks all of the bundle before it writes anything: the manifest and its format version; every file
present and matching its sha256 (a torn or edited file); every record parsing with the schema; the variant
installed here from the same package and version, and not built in; each record's task and variant versions and
cell id equal to those this checkout gives the cell of the record's suite; the bundled check-variant report
passing, and check-variant passing again on the installed variant (run last, once all else passed). Only then
are the records written into RESULTS/cells, each atomically. A record already stored under the same cell id is
left alone when byte-identical (adding a bundle twice changes nothing) and refused when it differs: no bundle
replaces a stored result, a built-in's or a contributed one's; to replace a contributed variant's older record,
remove its file first. Every refusal names the file, what differs and the fix, and changes nothing.

The page marks a contributed variant from the registry (`bench.run.pipeline.variant_catalog`): a variant whose
records were added is installed here, from its plugin's package.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from bench.record.store import ResultStore
from bench.registry import BUILTIN_DISTRIBUTION, Registry, tasks, variants
from bench.report.bundle import MANIFEST, REMAKE, Bundle, field, make_manifest, read_bundle, refusal, write_bundle
from bench_record import CellRecord
from bench_record.files import atomic_file

if TYPE_CHECKING:
    from rich.console import Console

    from bench.measure.conformance import CheckResult
    from bench_variants.base import VariantSpec


def _rerun(variant: str) -> str:
    return f"re-run `bench run --variants {variant}` on this version of bench, then `bench submit {variant}`"


def _installed_version(package: str) -> str | None:
    try:
        return dist_version(package)
    except PackageNotFoundError:
        return None


# ---- one record against this checkout -------------------------------------------------------------------


def _fit_length(record: CellRecord) -> dict[str, int]:
    """The suite overrides a record's config shows (`bench run --epochs/--max-steps/--devices`)."""
    config = record.config or {}
    keys = ("max_epochs", "max_steps", "devices")
    return {k: config[k] for k in keys if isinstance(config.get(k), int) and not isinstance(config.get(k), bool)}


def _versions(name: str, record: CellRecord, task: Any, spec: VariantSpec) -> list[str]:
    rerun = _rerun(spec.id)
    out = []
    if record.task.version != task.version:
        out.append(
            f"{name}: task {task.id} ran at version {record.task.version!r}, this checkout's is "
            f"{task.version!r}; {rerun}"
        )
    if record.variant.version != spec.version:
        out.append(
            f"{name}: variant {spec.id} ran at version {record.variant.version!r}, the installed one is "
            f"{spec.version!r}; {rerun}"
        )
    return out


def record_problems(name: str, record: CellRecord, spec: VariantSpec, task_registry: Registry[Any]) -> list[str]:
    """What keeps `record` (the bundle's file `name`) from being a result of `spec` on this checkout; [] if
    nothing: an ok record of that variant, its task and variant versions this checkout's, and its cell id the
    one this checkout gives the task x variant cell of the record's suite (with the fit length it ran at)."""
    from bench.plan.matrix import expand
    from bench.plan.suites import get_suite

    if record.variant.id != spec.id:
        return [
            f"{name}: a record of variant {record.variant.id!r}, not of {spec.id!r}: a bundle holds one "
            f"variant's records (`bench submit {record.variant.id}` bundles that one's)"
        ]
    if not record.ok:
        return [f"{name}: a {record.status!r} record; a bundle holds ok records only: {_rerun(spec.id)}"]
    try:
        task = task_registry.get(record.task.id)
        suite = get_suite(record.suite or "?")
    except (KeyError, ValueError, ImportError) as exc:
        return [f"{name}: {exc}; {_rerun(spec.id)}"]
    versions = _versions(name, record, task, spec)
    if versions:
        return versions
    suite = suite.override(tasks=(task.id,), variants=(spec.id,), **_fit_length(record))
    (cell,) = expand(suite, [task], [spec])
    if cell.id != record.cell_id:
        return [
            f"{name}: cell id {record.cell_id} is foreign: this checkout gives {task.id} x {spec.id} of suite "
            f"{suite.name!r} the id {cell.id} (its config, search space or code differ); {_rerun(spec.id)}"
        ]
    if cell.na_reason:
        return [f"{name}: this checkout does not run cell {cell.id} ({cell.na_reason}); leave it out"]
    expected = f"cells/{task.id}__{spec.id}__{cell.id}.json"
    if name != expected:
        return [f"{name}: holds cell {cell.id}, whose file is {expected}; {REMAKE}"]
    return []


def _collision(name: str, raw: bytes, record: CellRecord, store: ResultStore) -> list[str]:
    """A stored record this one would replace ([] when none, or when it is byte-identical)."""
    target = store.cell_path(record.task.id, record.variant.id, record.cell_id)
    found = store.find(record.cell_id)
    if found is None or (found == target and found.read_bytes() == raw):
        return []
    if found != target:
        return [f"{name}: {found} already holds cell id {record.cell_id}, another variant's result, never replaced"]
    return [
        f"{name}: {found} already holds a different record of this cell, and a bundle never replaces a stored "
        f"result: remove {found} first if the bundle's record is to take its place"
    ]


# ---- the variant and its checks -------------------------------------------------------------------------


def _check_report(results: list[CheckResult]) -> dict[str, Any]:
    """check-variant's results as the manifest keeps them; `passed` when no check failed."""
    from bench.measure.conformance import FAIL

    checks = [{"name": r.check, "status": r.status, "passed": r.status != FAIL, "message": r.detail} for r in results]
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def _failed(report: dict[str, Any]) -> list[str]:
    """The checks a check-variant report names as failed; [] when it passed."""
    checks = report.get("checks")
    if not isinstance(checks, list) or not checks:
        return ["(the report holds no checks)"]
    failed = [
        str(c.get("name", "?")) if isinstance(c, dict) else "?"
        for c in checks
        if not (isinstance(c, dict) and c.get("passed") is True)
    ]
    if not failed and report.get("passed") is not True:
        return ["(the report says it did not pass)"]
    return failed


def _installed(manifest: dict[str, Any], registry: Registry[Any]) -> tuple[VariantSpec | None, list[str]]:
    """The installed variant the bundle's results are of, or None, and what is wrong with it."""
    vid, package, wanted = (field(manifest, k) for k in ("variant.id", "plugin.package", "plugin.version"))
    install = f"`pip install '{package}=={wanted}'`"
    if vid not in registry.names():
        return None, [f"variant {vid!r} is not installed here: install its plugin ({install}), then add the bundle"]
    origin = registry.origin(vid)
    if origin == BUILTIN_DISTRIBUTION:
        return None, [
            f"variant {vid!r} is built in: its results come from `bench run` in this repository, never "
            "from a bundle, and a built-in's result is never replaced"
        ]
    try:
        spec: VariantSpec = registry.get(vid)
    except ImportError as exc:
        return None, [f"variant {vid!r} fails to load here ({exc}): reinstall its plugin ({install})"]
    problems = []
    if origin != package:
        problems.append(
            f"variant {vid!r} is installed here from {origin!r}, the bundle's results come from "
            f"{package!r}: install {install} in its place"
        )
    elif (here := _installed_version(origin)) != wanted:
        problems.append(
            f"the bundle's results come from {package} {wanted}, this checkout has {here} installed: "
            f"install {install}, or ask for a bundle made with {here}"
        )
    return spec, problems


def _check_again(spec: VariantSpec, console: Console) -> list[str]:
    """check-variant on the installed variant, now: [] when it passes."""
    from bench.measure import conformance

    with console.status(f"bench check-variant {spec.id}"):
        report = _check_report(conformance.run_checks(spec))
    if report["passed"]:
        return []
    return [
        f"`bench check-variant {spec.id}` fails on the installed plugin now (failed: {', '.join(_failed(report))})"
        ": install the plugin version the bundle names, or ask its author to fix the variant and submit again"
    ]


# ---- the two commands ----------------------------------------------------------------------------------


def add_bundle(path: Path, results: Path, console: Console) -> list[Path]:
    """Take the records of the bundle at `path` into the results folder `results` once all of it checks out
    (see the module docstring); return the files written (none for records already there, byte-identical).

    Raises:
        ValueError: naming every problem found, its file and its fix; nothing was written.
    """
    bundle = read_bundle(path)
    store = ResultStore(results)
    task_registry = tasks()
    spec, problems = _installed(bundle.manifest, variants())
    if failed := _failed(bundle.manifest["check_variant"]):
        problems.append(
            f"{MANIFEST}: its check-variant report did not pass (failed: {', '.join(failed)}): fix the "
            f"variant until `bench check-variant {bundle.variant}` passes, then `bench submit` again"
        )
    records: dict[str, CellRecord] = {}
    for name, raw in sorted(bundle.cells.items()):
        try:
            record = CellRecord.from_dict(json.loads(raw))
        except ValueError as exc:  # not JSON, or not this schema (SchemaError says what to run)
            problems.append(f"{name}: not a cell record of this bench's schema ({exc}); {_rerun(bundle.variant)}")
            continue
        found = record_problems(name, record, spec, task_registry) if spec else []
        problems += found or (_collision(name, raw, record, store) if spec else [])
        records[name] = record
    if spec is not None and not problems:
        problems += _check_again(spec, console)
    if problems:
        raise ValueError(refusal(path, problems))
    written = _take_in(bundle, records, store)
    console.print(
        f"added {len(written)} record(s) of {escape(bundle.variant)} from {escape(str(path))} "
        f"({len(records) - len(written)} already there)",
        highlight=False,
    )
    return written


def _take_in(bundle: Bundle, records: dict[str, CellRecord], store: ResultStore) -> list[Path]:
    """Write the bundle's records, each atomically; on any failure remove those written, leaving the store as it was."""
    written: list[Path] = []
    try:
        for name, record in records.items():
            target = store.cell_path(record.task.id, record.variant.id, record.cell_id)
            if target.exists():  # byte-identical: `_collision` refused any other
                continue
            with atomic_file(target, "wb") as handle:
                handle.write(bundle.cells[name])
            written.append(target)
    except BaseException:
        for target in written:
            target.unlink(missing_ok=True)
        raise
    return written


def _plugin(registry: Registry[Any], vid: str) -> tuple[str, str]:
    """(package, version) of the plugin that registers `vid`; ValueError for a built-in or an unpackaged one."""
    origin = registry.origin(vid)
    if origin == BUILTIN_DISTRIBUTION:
        raise ValueError(
            f"variant {vid!r} is built in: its results are this repository's own (`bench run`), not a "
            "contribution; `bench submit` bundles a plugin's variant (`bench list`: origin)"
        )
    found = _installed_version(origin)
    if found is None:
        raise ValueError(
            f"variant {vid!r} comes from {origin!r}, which has no installed package version: install "
            "the plugin as a package (`pip install -e .` in its folder), then `bench submit` again"
        )
    return origin, found


def _submittable(store: ResultStore, spec: VariantSpec, console: Console) -> dict[str, bytes]:
    """The variant's ok records in `store` that match this checkout, by bundle name; the others are named."""
    task_registry, cells = tasks(), {}
    for path in sorted(store.cells_dir.glob(f"*__{spec.id}__*.json")):
        name, raw = f"cells/{path.name}", path.read_bytes()
        try:
            record = CellRecord.from_dict(json.loads(raw))
        except ValueError as exc:
            console.print(f"[yellow]left out[/] {escape(name)}: unreadable ({escape(str(exc))})", highlight=False)
            continue
        if record.variant.id != spec.id or not record.ok:
            continue
        problems = record_problems(name, record, spec, task_registry)
        if problems:  # e.g. a record of an older version of the variant, left beside the new one
            console.print(f"[yellow]left out[/] {escape(problems[0])}", highlight=False)
            continue
        cells[name] = raw
    if not cells:
        raise ValueError(
            f"no ok result of variant {spec.id!r} that matches this checkout in {store.cells_dir}: run "
            f"`bench run --variants {spec.id} --results {store.root}` first"
        )
    return cells


def submit(name: str, results: Path, out: Path | None, console: Console) -> Path:
    """Bundle variant `name`'s ok records from `results` with its plugin, check-variant's report and provenance
    (see the module docstring); return the bundle's path.

    Raises:
        ValueError: a built-in variant, no ok record of it matching this checkout, or check-variant failing;
            nothing is written.
    """
    from bench.measure.conformance import run_checks
    from bench.record.provenance import now, provenance
    from bench.report.tables import conformance_table

    registry = variants()
    spec: VariantSpec = registry.get(name)
    package, plugin_version = _plugin(registry, spec.id)
    cells = _submittable(ResultStore(results), spec, console)
    with console.status(f"bench check-variant {spec.id}"):
        checked = run_checks(spec)
    if conformance_table(spec, spec.id, checked, console):
        raise ValueError(f"`bench check-variant {spec.id}` failed (above): fix the variant, then `bench submit` again")
    manifest = make_manifest(
        spec.describe(), (package, plugin_version), _check_report(checked), cells, provenance(), now()
    )
    path = out or Path(f"{spec.id}-{plugin_version}.bundle.tar.gz")
    write_bundle(path, manifest, cells)
    console.print(
        f"bundle: {escape(str(path))} ({len(cells)} cell record(s) of {escape(spec.id)}, "
        f"{escape(package)} {escape(plugin_version)})",
        highlight=False,
    )
    return path
