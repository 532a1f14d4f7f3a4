"""Lazy entry-point registries: the only way the core reaches variants and tasks.

Built-ins are registered by this project's own pyproject.toml under the same groups a third-party
plugin uses (`bench.variants`, `bench.tasks`). Names are listed without importing anything; an entry
is imported when first asked for. A plugin that fails to import is recorded with its distribution
and error and skipped, never a crash of everything else.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")

VARIANTS_GROUP = "bench.variants"
TASKS_GROUP = "bench.tasks"
BUILTIN_DISTRIBUTION = "bench"
#: ids become parts of file names: letters, digits, ".", "_", "-", starting with a letter or digit
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


def check_id(value: object, what: str) -> str:
    """`value` if it is a safe id (see `SAFE_ID`, and no ".."); else ValueError naming it and the rule."""
    if not isinstance(value, str) or not SAFE_ID.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{what} {value!r} is not a safe id: use letters, digits, '.', '_' and '-' (at most 80, "
            "starting with a letter or digit, no '..'); ids become file names"
        )
    return value


class UnknownNameError(KeyError):
    """A name that is not registered; the message suggests the closest ones."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class PluginFailure:
    """An entry point that could not be loaded, kept for reporting."""

    name: str
    distribution: str
    value: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.name!r} from {self.distribution} ({self.value}) failed to load: {self.error}"


def normalize(name: str) -> str:
    """Case-insensitive, whitespace-free form used to match ids and display names."""
    return "".join(name.split()).lower()


class Registry(Generic[T]):
    """Entries of one entry-point group, loaded lazily, looked up by id or display name."""

    def __init__(self, group: str, kind: str, base: type, entries: list[EntryPoint] | None = None) -> None:
        self.group, self.kind, self.base = group, kind, base
        self._entries = {ep.name: ep for ep in (entries if entries is not None else entry_points(group=group))}
        self._loaded: dict[str, T] = {}
        self.failures: dict[str, PluginFailure] = {}

    def names(self) -> list[str]:
        """Registered ids, sorted, without importing anything."""
        return sorted(self._entries)

    def origin(self, name: str) -> str:
        """The distribution that registered `name` ("bench" for built-ins)."""
        dist = self._entries[name].dist
        return dist.name if dist is not None else "unknown"

    def _load(self, name: str) -> T | None:
        if name in self._loaded:
            return self._loaded[name]
        if name in self.failures:
            return None
        ep = self._entries[name]
        try:
            obj: Any = ep.load()
            if isinstance(obj, type) and issubclass(obj, self.base):
                obj = obj()
            if not isinstance(obj, self.base):
                raise TypeError(f"{ep.value} is a {type(obj).__name__}, not a {self.base.__name__}")
            declared = getattr(obj, "id", name)
            if declared != name:
                raise ValueError(f"its id {declared!r} differs from the entry-point name {name!r}")
            check_id(name, "entry-point name")
        except Exception as exc:  # a broken plugin must not take the harness down
            self.failures[name] = PluginFailure(name, self.origin(name), ep.value, f"{type(exc).__name__}: {exc}")
            return None
        entry = cast(T, obj)
        self._loaded[name] = entry
        return entry

    def all(self) -> dict[str, T]:
        """Every entry that loads, by id; failures are recorded in `failures`."""
        loaded = {name: self._load(name) for name in self.names()}
        return {name: obj for name, obj in loaded.items() if obj is not None}

    def __iter__(self) -> Iterator[T]:
        return iter(self.all().values())

    def get(self, name: str) -> T:
        """The entry named by its id or its display name (case-insensitive).

        Raises:
            UnknownNameError: with did-you-mean suggestions and the available names.
            ImportError: the entry exists but its plugin failed to load.
        """
        key = normalize(name)
        ids = {normalize(n): n for n in self.names()}
        if key in ids:
            obj = self._load(ids[key])
            if obj is None:
                raise ImportError(str(self.failures[ids[key]]))
            return obj
        by_display = {normalize(getattr(o, "display_name", n)): o for n, o in self.all().items()}
        if key in by_display:
            return by_display[key]
        raise UnknownNameError(self._unknown_message(name, by_display))

    def _unknown_message(self, name: str, by_display: dict[str, T]) -> str:
        candidates = {k: getattr(o, "display_name", k) for k, o in by_display.items()}
        candidates.update({normalize(n): n for n in self.names()})  # an id beats a display name
        close = difflib.get_close_matches(normalize(name), list(candidates), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(candidates[c]) for c in close)}?" if close else ""
        return (
            f"Unknown {self.kind} {name!r}{hint} Available: {', '.join(self.names())}. "
            f"Run `bench list {self.kind}s` to see them all."
        )

    def resolve(self, names: list[str]) -> list[T]:
        """Several entries at once, in order, without duplicates."""
        out: list[T] = []
        for n in names:
            obj = self.get(n)
            if obj not in out:
                out.append(obj)
        return out


def variants(entries: list[EntryPoint] | None = None) -> Registry[Any]:
    """The variant registry (`bench.variants`)."""
    from bench_variants.base import VariantSpec

    return Registry(VARIANTS_GROUP, "variant", VariantSpec, entries)


def tasks(entries: list[EntryPoint] | None = None) -> Registry[Any]:
    """The task registry (`bench.tasks`)."""
    from bench_tasks.base import Task

    return Registry(TASKS_GROUP, "task", Task, entries)
