"""How a typed part of a cell record is read from JSON and written back, exactly.

A part is a frozen dataclass whose fields are the keys the code reads, with their types. A field
without a default must be present; one that defaults to None may be absent. What the fields do not
say stays in `extra`: keys the schema does not type, and typed keys the file holds as an explicit
null (the field reads None, as for an absent key; `extra` remembers that the file said null). So
`to_dict(from_dict(d)) == d` for every `d` that parses, and a record read and written again is the
same file.

Values are kept as read: a float field that holds `0` keeps the int, a mapping keeps its key order.
"""

from __future__ import annotations

import copy
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

P = TypeVar("P", bound="Part")


class SchemaError(ValueError):
    """A record, or a part of one, that does not match the schema; the message says where and what."""


@dataclass(frozen=True)
class Part:
    """A typed part of a cell record (see the module docstring)."""

    extra: Mapping[str, Any] = field(default_factory=dict, kw_only=True, repr=False)

    @classmethod
    def from_dict(cls: type[P], data: Any, where: str = "") -> P:
        """The part `data` holds; raises `SchemaError` naming the first key that does not match.

        Args:
            data: The parsed JSON object.
            where: Its dotted path in the record ("" at the top), for messages.
        """
        if not isinstance(data, Mapping):
            raise SchemaError(f"{where or 'top level'} is {_json_type(data)}, expected an object")
        values: dict[str, Any] = {}
        extra = {k: copy.deepcopy(v) for k, v in data.items() if k not in _typed(cls)}
        for name, (kind, required) in _typed(cls).items():
            path = f"{where}.{name}" if where else name
            if name not in data:
                if required:
                    raise SchemaError(f"missing {_required_keys(kind, path)}")
                continue
            if data[name] is None and not required:
                extra[name] = None  # an explicit null, written back as one
                continue
            values[name] = _read(kind, data[name], path)
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The part as JSON-able data: its typed fields (a None one left out unless required) and `extra`, keys
        sorted as results files hold them."""
        typed = _typed(type(self))
        out = {k: copy.deepcopy(v) for k, v in self.extra.items() if k not in typed or getattr(self, k) is None}
        for name, (_, required) in typed.items():
            value = getattr(self, name)
            if value is not None or required:
                out[name] = _plain(value)
        return dict(sorted(out.items()))


_TYPED: dict[type, dict[str, tuple[Any, bool]]] = {}


def _typed(cls: type[Part]) -> dict[str, tuple[Any, bool]]:
    """name -> (resolved type, required) for each field of a part but `extra` (worked out once per class)."""
    if cls not in _TYPED:
        hints = typing.get_type_hints(cls)
        _TYPED[cls] = {f.name: (hints[f.name], f.default is MISSING and f.default_factory is MISSING)
                       for f in fields(cls) if f.name != "extra"}  # fmt: skip
    return _TYPED[cls]


def _required_keys(kind: Any, path: str) -> str:
    """A missing key's path; for a missing part, the paths of the keys it must have (what a reader looks for)."""
    if isinstance(kind, type) and issubclass(kind, Part):
        inner = [f"{path}.{name}" for name, (_, required) in _typed(kind).items() if required]
        return ", ".join(inner) if inner else path
    return path


def _json_type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _read(kind: Any, value: Any, path: str) -> Any:
    """`value` checked against `kind` and kept as read (lists become tuples, objects parts or dicts)."""
    origin = typing.get_origin(kind)
    if kind is Any:
        return copy.deepcopy(value)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None and len(options) < len(typing.get_args(kind)):
            return None
        if len(options) == 1:  # X | None: X's own message says what is wrong inside it
            return _read(options[0], value, path)
        for option in options:
            try:
                return _read(option, value, path)
            except SchemaError:
                continue
        raise SchemaError(f"{path} is {_json_type(value)}, expected {' or '.join(_name(k) for k in options)}")
    if isinstance(kind, type) and issubclass(kind, Part):
        return kind.from_dict(value, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise SchemaError(f"{path} is {_json_type(value)}, expected a list")
        item = typing.get_args(kind)[0]
        return tuple(_read(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise SchemaError(f"{path} is {_json_type(value)}, expected an object")
        return copy.deepcopy(dict(value))
    return _scalar(kind, value, path)


def _scalar(kind: type, value: Any, path: str) -> Any:
    # bool is an int in Python: a number field holding true/false is still wrong
    fits = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        fits = True  # an int where a float is typed (a mean of whole numbers) is still a number
    if not fits:
        raise SchemaError(f"{path} is {_json_type(value)}, expected {_name(kind)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SchemaError(f"{path} is {value}")
    return value


def _name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin is tuple:
        return "a list"
    if (isinstance(kind, type) and issubclass(kind, Part)) or origin in (Mapping, dict):
        return "an object"
    return kind.__name__ if isinstance(kind, type) else str(kind)


def _plain(value: Any) -> Any:
    """A field's value as JSON-able data."""
    if isinstance(value, Part):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)
