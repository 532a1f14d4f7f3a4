"""What every perf measurement shares: interleaved rounds, medians with their spread, result files."""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.record.provenance import now, provenance
from bench.record.store import write_json_atomic

SCHEMA_VERSION = 1
T = TypeVar("T")


@dataclass(frozen=True)
class PerfContext:
    """What a measurement needs from the run: where the data lives, and where to say what it is doing."""

    data_dir: Path
    note: Callable[[str], None] = lambda message: None


@dataclass(frozen=True)
class Spread:
    """The median of repeated measurements, with their interquartile range and extremes."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no measurements to summarise")
        xs = sorted(values)
        q1, q3 = (xs[0], xs[0]) if len(xs) == 1 else statistics.quantiles(xs, n=4, method="inclusive")[::2]
        return cls(statistics.median(xs), q1, q3, xs[0], xs[-1], len(xs))

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> Spread:
        """Back from `as_dict` (a result file's form)."""
        return cls(**{f.name: fields[f.name] for f in dataclasses.fields(cls)})

    def show(self, digits: int = 2, unit: str = "x") -> str:
        """`1.03x [0.99-1.07]`: the median and, in brackets, the lowest and highest repeat."""
        if self.n == 1:
            return f"{self.median:.{digits}f}{unit}"
        return f"{self.median:.{digits}f}{unit} [{self.low:.{digits}f}-{self.high:.{digits}f}]"

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def interleave(
    contenders: Mapping[str, Callable[[], T]], rounds: int, note: Callable[[str], None] | None = None
) -> dict[str, list[T]]:
    """Run every contender once per round, the order reversed every other round.

    Slow drifts in the machine's load (another job starting, the CPU warming) then fall on all
    contenders alike, and none always runs first or always right after a particular other.
    """
    names = list(contenders)
    results: dict[str, list[T]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            if note:
                note(f"round {r + 1}/{rounds}: {name}")
            results[name].append(contenders[name]())
    return results


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Round-by-round ratios: each pair ran back to back, so it shares the machine's state."""
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def seconds_per_call(fn: Callable[[], Any], calls: int = 1) -> float:
    """Mean wall time of `calls` consecutive calls of `fn`."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def calibrated(fn: Callable[[], Any], sample_s: float) -> Callable[[], float]:
    """A timer of `fn` (mean seconds per call) whose every sample lasts about `sample_s` or more.

    Samples shorter than the scheduler's time slice (a few ms) measure the machine's other jobs more
    than `fn`; repeating `fn` within a sample averages that out. `fn` runs once first (warm-up).
    """
    fn()
    calls = max(1, math.ceil(sample_s / max(seconds_per_call(fn), 1e-6)))
    return lambda: seconds_per_call(fn, calls)


def best_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Fastest over fastest: noise from other jobs only ever adds time, so this is the robust ratio."""
    return min(numerator) / min(denominator)


def goal_text(value: float, limit: float, strict: bool = False) -> str:
    """`met` (green) or `NOT met` (red) against the goal `value <= limit` (`<` when `strict`), for tables."""
    met = value < limit if strict else value <= limit
    return "[green]met[/]" if met else "[red]NOT met[/]"


def write_result(out_dir: Path, kind: str, settings: Any, results: dict[str, Any]) -> Path:
    """Write `<out_dir>/<kind>.json` atomically, with schema version, time, provenance and settings."""
    path = out_dir / f"{kind}.json"
    payload = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "created_at": now(),
        "provenance": provenance(),
        "settings": settings if isinstance(settings, dict) else dataclasses.asdict(settings),
        "results": results,
    }
    write_json_atomic(path, payload)
    return path
