"""A bundle: one variant's contributed results in one file, `bench submit`'s output and `bench leaderboard
--add`'s input (`bench.report.contribute` makes and checks them).

A bundle is one gzipped tar file (`<variant>-<plugin version>.bundle.tar.gz` by default) holding

    manifest.json       `FORMAT` and `FORMAT_VERSION`; the variant (id, display name, version); its plugin
                        (package name and version, from importlib.metadata); bench (version, git sha and dirty
                        flag, record schema version); created_at; provenance (packages, device, ...);
                        `bench check-variant`'s report (each check: name, status, passed, message); and the
                        sha256 of every other file
    cells/<file>.json   the variant's ok cell records, byte for byte as the contributor's results store holds them

`read_bundle` reads the whole file into memory (nothing is extracted, so no member can land outside a folder)
and refuses, naming the problem and the fix, a torn file, a member a bundle does not hold, a manifest of another
format, and a file missing, extra or whose sha256 differs from the manifest's.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import __version__
from bench_record import SCHEMA_VERSION
from bench_record.files import atomic_file

FORMAT = "bench-bundle"
#: the bundle's layout and manifest; a bundle of another format is refused with the fix
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CELL_FILE = re.compile(r"cells/[A-Za-z0-9][A-Za-z0-9._-]{0,250}\.json")
MAX_FILE_BYTES = 16 * 2**20  # a cell record is tens of KiB: a larger member is not one
REMAKE = "make the bundle again with `bench submit` and copy the file whole"
#: what the manifest must hold, by dotted key, and of which type
REQUIRED: tuple[tuple[str, type], ...] = (
    ("variant.id", str),
    ("variant.version", str),
    ("plugin.package", str),
    ("plugin.version", str),
    ("check_variant.passed", bool),
    ("check_variant.checks", list),
    ("files", dict),
)


@dataclass(frozen=True)
class Bundle:
    """A bundle read whole: its manifest and its cell files' bytes by name (`cells/<file>.json`)."""

    path: Path
    manifest: dict[str, Any]
    cells: dict[str, bytes]

    @property
    def variant(self) -> str:
        return str(self.manifest["variant"]["id"])


def sha256(data: bytes) -> str:
    """The hex sha256 of `data`, as the manifest lists each file's."""
    return hashlib.sha256(data).hexdigest()


def field(data: Any, dotted: str) -> Any:
    """`data[a][b]` for the dotted key "a.b"; None where any step is missing."""
    for key in dotted.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data


def refusal(path: Path, problems: list[str]) -> str:
    """The message refusing the bundle at `path`, one line per problem."""
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"bundle {path} refused; nothing was changed:\n{lines}"


# ---- reading and writing a bundle ----------------------------------------------------------------------


def _members(path: Path) -> dict[str, bytes]:
    """Every file of the tar at `path` by name; ValueError for a torn file or a member a bundle does not hold."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:  # reads the whole stream: a torn tail raises here
                name = member.name
                if member.isdir() and name.rstrip("/") == "cells":
                    continue
                if not member.isfile() or (name != MANIFEST and not CELL_FILE.fullmatch(name)):
                    raise ValueError(
                        f"{path}: holds {name!r}, neither {MANIFEST} nor a cells/<file>.json record; {REMAKE}"
                    )
                if name in files or member.size > MAX_FILE_BYTES:
                    raise ValueError(f"{path}: {name} is twice in it or larger than a record; {REMAKE}")
                handle = tar.extractfile(member)
                files[name] = handle.read() if handle else b""
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ValueError(
            f"{path}: not a whole bundle, torn or not a .tar.gz ({type(exc).__name__}: {exc}); {REMAKE}"
        ) from None
    return files


def _manifest(path: Path, raw: bytes | None) -> dict[str, Any]:
    """The manifest's data, checked for its format, format version and required keys."""
    if raw is None:
        raise ValueError(f"{path}: holds no {MANIFEST}; {REMAKE}")
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: its {MANIFEST} is not JSON ({exc}); {REMAKE}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f'{path}: its {MANIFEST} is not a bench bundle\'s (no "format": "{FORMAT}"); {REMAKE}')
    found = manifest.get("format_version")
    if found != FORMAT_VERSION:
        wrote = field(manifest, "bench.version") or "?"
        raise ValueError(
            f"{path}: bundle format {found!r} (written by bench {wrote}), but this bench ({__version__}) reads "
            f"format {FORMAT_VERSION}: run `bench submit` again with this version of bench, or add the bundle "
            "with the version that wrote it"
        )
    wrong = [key for key, kind in REQUIRED if not isinstance(field(manifest, key), kind)]
    wrong += [f"files[{k!r}]" for k, v in (field(manifest, "files") or {}).items() if not isinstance(v, str)]
    if wrong:
        raise ValueError(f"{path}: its {MANIFEST} lacks or mistypes {', '.join(wrong)}; {REMAKE}")
    return manifest


def read_bundle(path: Path) -> Bundle:
    """The bundle at `path`, read whole and checked against its manifest's sha256s.

    Raises:
        ValueError: no such file, a torn one, a manifest of another format, a file missing, extra or changed;
            the message names it and the fix.
    """
    if not path.is_file():
        raise ValueError(f"no bundle at {path}: give the .tar.gz file `bench submit` wrote")
    files = _members(path)
    manifest = _manifest(path, files.pop(MANIFEST, None))
    listed: dict[str, str] = manifest["files"]
    problems = [f"{n}: listed in {MANIFEST} but not in the bundle (torn)" for n in sorted(set(listed) - set(files))]
    problems += [f"{n}: in the bundle but not listed in {MANIFEST}" for n in sorted(set(files) - set(listed))]
    problems += [
        f"{n}: its sha256 differs from the one {MANIFEST} lists (torn or changed since `bench submit`); {REMAKE}"
        for n in sorted(set(files) & set(listed))
        if sha256(files[n]) != listed[n]
    ]
    if not files and not problems:
        problems.append(f"holds no cell records; {REMAKE}")
    if problems:
        raise ValueError(refusal(path, problems))
    return Bundle(path, manifest, files)


def make_manifest(
    variant: dict[str, Any],
    plugin: tuple[str, str],
    check_variant: dict[str, Any],
    cells: dict[str, bytes],
    provenance: dict[str, Any],
    created_at: str,
) -> dict[str, Any]:
    """The manifest of a bundle of `cells` (name -> bytes): see the module docstring."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "variant": variant,
        "plugin": {"package": plugin[0], "version": plugin[1]},
        "bench": {
            "version": __version__,
            "git_sha": provenance.get("git_sha"),
            "git_dirty": provenance.get("git_dirty"),
            "schema_version": SCHEMA_VERSION,
        },
        "created_at": created_at,
        "provenance": provenance,
        "check_variant": check_variant,
        "files": {n: sha256(raw) for n, raw in sorted(cells.items())},
    }


def write_bundle(path: Path, manifest: dict[str, Any], cells: dict[str, bytes]) -> None:
    """Write the tar.gz of `manifest` and `cells` (name -> bytes) atomically at `path`."""
    members = {MANIFEST: json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n", **cells}
    stamp = int(time.time())
    with atomic_file(path, "wb") as handle, tarfile.open(fileobj=handle, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, stamp
            tar.addfile(info, io.BytesIO(data))
