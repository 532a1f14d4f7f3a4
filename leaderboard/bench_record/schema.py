"""The cell record: what `results/cells/*.json` holds, one typed structure that bench writes and the board reads.

    CellRecord          one cell's result: its task, variant and config, its status, and where it came from;
                        an ok record adds its tuning, seeds, per-seed fits, summary, costs and the
                        comparison with the baseline
      TaskInfo          the task as it ran (SpeedTarget: what a speed task counts steps to)
      VariantInfo       the attention variant as it ran
      Provenance        git commit, packages, device
      TrivialBaseline   the task's trivial baseline (chance, a linear probe, ...) and its learning margin
      Tuning, Trial     the Optuna study that chose the settings, trial by trial
      SeedDesign        the adaptive seeds' group-sequential design (null: fixed seeds)
      SeedFit           one seed's final fit: its test metrics, curve, speed and memory
        ItemScores      what the fit got right per test item, packed (accuracy tasks only)
      Summary           mean and 95% interval of the primary metric over the seeds
      Costs             parameters, KV-cache bytes (Attention: the head shape; KvMeasured: by decoding), speed
      BaselineComparison  the paired comparison with the baseline variant (`bench_record.compare`)
      DataSource, Timing, MlflowRun

Every record carries `schema_version`. `CellRecord.from_dict` reads the current version, migrates an older one
it knows (`MIGRATIONS`), and refuses any other with a message saying what to run. Each part keeps what it does
not type in `extra` (see `bench_record.parts`), so a record read and written again is the same file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench_record.parts import Part, SchemaError

SCHEMA_VERSION = 1
STATUSES = ("ok", "n/a", "failed", "diverged")
#: the parts an ok record must have
OK_PARTS = ("summary", "costs", "per_seed", "tuning", "seeds")
RERUN = "re-create it with `bench run` (the cell runs again)"

#: version -> the function that turns a record of that version into one of the next; none yet: version 1 is the
#: first this schema states (a record of an earlier bench is re-created by `bench run`)
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

__all__ = ["SCHEMA_VERSION", "CellRecord", "SchemaError", "VersionError", "migrate"]


class VersionError(SchemaError):
    """A record of a version this bench cannot read; the message says what to run."""


@dataclass(frozen=True)
class SpeedTarget(Part):
    metric: str | None = None
    target: float | None = None
    every: int | None = None
    cap: int | None = None  # null: the fit's length (its epochs) bounds it


@dataclass(frozen=True)
class TaskInfo(Part):
    id: str
    metric: str
    higher_is_better: bool
    version: str | None = None
    family: str | None = None
    direction: str | None = None
    measures: str | None = None  # "budget" or "speed"
    causal: bool | None = None
    equivalence_margin: float | None = None
    speed_target: SpeedTarget | None = None


@dataclass(frozen=True)
class VariantInfo(Part):
    """The variant's descriptive fields; those beyond these (positional_2d, share_layers, window...) are in `extra`."""

    id: str
    display_name: str
    version: str | None = None
    summary: str | None = None
    tie: str | None = None
    kv_heads: str | None = None  # "H" or a count
    ablates: str | None = None


@dataclass(frozen=True)
class Provenance(Part):
    git_sha: str | None = None
    git_dirty: bool | None = None
    packages: Mapping[str, Any] | None = None
    device: str | None = None
    platform: str | None = None
    python: str | None = None


@dataclass(frozen=True)
class TrivialBaseline(Part):
    name: str | None = None
    value: float | None = None
    others: Mapping[str, Any] | None = None
    note: str | None = None
    learn_margin: float | None = None
    metric: str | None = None
    error: str | None = None  # why it could not be computed


@dataclass(frozen=True)
class Trial(Part):
    number: int | None = None
    state: str | None = None
    value: float | None = None
    params: Mapping[str, Any] | None = None
    steps: int | None = None
    fit_steps: int | None = None


@dataclass(frozen=True)
class Tuning(Part):
    trials_budget: int | None = None
    trials_finished: int | None = None
    best_params: Mapping[str, Any] | None = None
    best_value: float | None = None
    defaults: Mapping[str, Any] | None = None
    search_space: Mapping[str, Any] | None = None
    trials: tuple[Trial, ...] | None = None
    study: str | None = None
    split: str | None = None
    settings_of: str | None = None  # the cell whose study chose these settings, when not this one's
    horizon: float | None = None  # a trial's training steps as a share of the cell's (null: recorded before it)


@dataclass(frozen=True)
class SeedDesign(Part):
    looks: tuple[int, ...] | None = None
    seeds: tuple[int, ...] | None = None
    baseline: str | None = None
    spending: str | None = None
    alpha: float | None = None


@dataclass(frozen=True)
class DataSource(Part):
    kind: str | None = None  # "real", "proxy", "synthetic"
    name: str | None = None
    note: str | None = None
    origin: str | None = None


@dataclass(frozen=True)
class ItemScores(Part):
    """What one fit got right per test item, in the test split's fixed order (the same for every seed and variant
    of a task): `correct` is numpy.packbits of the N 0/1 values (big-endian bit order, the last byte padded with
    zeros), base64-encoded: 10,000 items take 1,250 bytes before base64.

    Only tasks whose primary metric is a per-item accuracy record it (the image classifiers, set-anomaly); its
    mean is then the fit's test `metric`. Others record none: perplexity and AUROC are not means of per-item
    0/1 values, and the synthetic sequence tasks measure steps to a target (their accuracy is per token).
    """

    metric: str
    n: int
    correct: str

    def __post_init__(self) -> None:
        import base64
        import binascii

        try:
            size = len(base64.b64decode(self.correct, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise SchemaError(f"item_scores.correct is not base64: {exc}") from None
        if self.n < 0 or size != (self.n + 7) // 8:
            raise SchemaError(f"item_scores.correct holds {size} bytes, expected {(self.n + 7) // 8} for n={self.n}")

    @classmethod
    def pack(cls, metric: str, correct: Any) -> ItemScores:
        """The record of `correct`, a 1-D sequence of 0/1 (or bool) per test item in test-set order."""
        import base64

        import numpy as np

        bits = np.asarray(correct)
        if bits.ndim != 1 or not np.isin(bits, (0, 1)).all():
            raise ValueError(f"expected a 1-D sequence of 0/1 per test item, got shape {bits.shape}")
        packed = np.packbits(bits.astype(np.uint8)).tobytes()
        return cls(metric=metric, n=int(bits.size), correct=base64.b64encode(packed).decode("ascii"))

    def unpack(self) -> Any:
        """The N per-item values as a numpy bool array, in test-set order."""
        import base64

        import numpy as np

        packed = np.frombuffer(base64.b64decode(self.correct), dtype=np.uint8)
        return np.unpackbits(packed, count=self.n).astype(bool)


@dataclass(frozen=True)
class SeedFit(Part):
    seed: int
    test: Mapping[str, Any]
    params: Mapping[str, Any] | None = None
    val: Mapping[str, Any] | None = None
    curve: tuple[Mapping[str, Any], ...] | None = None  # [{"step", "val": {...}, "test": {...}}]
    steps: int | None = None
    data_source: DataSource | None = None
    parameters: int | None = None
    examples_per_second: float | None = None
    peak_memory_bytes: int | None = None
    peak_memory_growth_bytes: int | None = None
    train_seconds: float | None = None
    fit: str | None = None  # for a cell that trains as another: "evaluated on <cell>" or why it trained
    item_scores: ItemScores | None = None  # null: not recorded (a task without a per-item accuracy, an older record)


@dataclass(frozen=True)
class Summary(Part):
    mean: float
    ci95_low: float
    ci95_high: float
    n: int
    metric: str | None = None
    std: float | None = None
    method: str | None = None  # the scale the interval was computed on


@dataclass(frozen=True)
class Attention(Part):
    n_heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    tensors_per_head: int | None = None
    cache: str | None = None  # the formula of a cache that is not per-head K/V
    window: int | None = None
    share_layers: int | None = None


@dataclass(frozen=True)
class KvMeasured(Part):
    dtype: str | None = None
    tokens: int | None = None
    bytes_held: int | None = None
    bytes_derived: int | None = None
    decode_tokens_per_second: float | None = None
    max_abs_logit_diff_vs_full_pass: float | None = None


@dataclass(frozen=True)
class Costs(Part):
    parameters: int | None = None
    context_length: int | None = None
    n_layers: int | None = None
    kv_dtype: str | None = None
    attention: Attention | None = None
    kv_bytes_per_token: int | None = None
    kv_bytes_per_token_per_layer: float | None = None  # a shared cache's spread over its layers: a fraction
    kv_bytes_at_context: int | None = None
    kv_bytes_long_context: Mapping[str, Any] | None = None  # str(tokens) -> bytes
    kv_measured: KvMeasured | None = None  # null: not measured (a variant that cannot decode, or too large)
    examples_per_second: float | None = None
    peak_memory_bytes: int | None = None
    peak_memory_growth_bytes: int | None = None
    train_seconds_per_fit: float | None = None
    non_embedding_parameters: int | None = None
    train_flops_per_token: int | None = None  # 6N + 12 x layers x heads x head_dim x context
    train_flops_per_fit: float | None = None  # per token x the tokens a fit trained, mean over its seeds


@dataclass(frozen=True)
class Timing(Part):
    tuning_seconds: float | None = None
    final_seconds: float | None = None


@dataclass(frozen=True)
class MlflowRun(Part):
    tracking_uri: str | None = None
    experiment_id: str | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class BaselineComparison(Part):
    """Variant minus baseline over shared seeds, as `bench_record.compare.with_baseline` computes it."""

    baseline: str | None = None
    n: int | None = None
    mean_diff: float | None = None
    ci95_low: float | None = None
    ci95_high: float | None = None
    p_value: float | None = None
    significant: bool | None = None
    scale: str | None = None
    scale_diff: float | None = None
    scale_ci95_low: float | None = None
    scale_ci95_high: float | None = None
    scale_std: float | None = None
    #: the seed x item interval of `mean_diff` where both cells recorded item scores (`bench_record.stats.items`)
    item_interval: tuple[float, ...] | None = None  # [low, high]
    item_interval_method: str | None = None
    n_items: int | None = None  # the test items it resampled


@dataclass(frozen=True)
class CellRecord(Part):
    """One cell's result (see the module docstring); its `status` is one of `STATUSES`."""

    schema_version: int
    cell_id: str
    status: str
    task: TaskInfo
    variant: VariantInfo
    suite: str | None = None
    scale: str | None = None  # "smoke", "default", "paper"
    config: Mapping[str, Any] | None = None  # the task's config, as its `type` says
    created_at: str | None = None
    provenance: Provenance | None = None
    baseline: TrivialBaseline | None = None
    reason: str | None = None  # why a cell is not ok
    traceback: str | None = None
    attempts: int | None = None
    mlflow: MlflowRun | None = None
    mlflow_problems: tuple[str, ...] | None = None
    tuning: Tuning | None = None
    seeds: tuple[int, ...] | None = None
    seed_design: SeedDesign | None = None
    per_seed: tuple[SeedFit, ...] | None = None
    summary: Summary | None = None
    costs: Costs | None = None
    data_source: DataSource | None = None
    timing: Timing | None = None
    evaluated_on: str | None = None  # the cell whose fits this one was scored on
    fits_saved: int | None = None
    baseline_comparison: BaselineComparison | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise SchemaError(f"status {self.status!r}, expected one of {', '.join(STATUSES)}")
        if self.status == "ok":
            missing = [name for name in OK_PARTS if getattr(self, name) is None]
            if missing:
                raise SchemaError(f"missing {', '.join(missing)} (an ok record has {', '.join(OK_PARTS)})")
        elif self.reason is None:
            raise SchemaError(f"a {self.status} cell needs a reason string")

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> CellRecord:  # type: ignore[override]
        """The record `data` holds, migrated to `SCHEMA_VERSION`; raises `SchemaError` saying what is wrong
        and, for a version this bench cannot read, what to run."""
        return super().from_dict(migrate(data), where)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def seed_values(self) -> dict[int, float]:
        """seed -> the task's primary test metric, for each seed of an ok record with a finite value; {} otherwise."""
        if self.status != "ok":
            return {}
        metric, out = self.task.metric, {}
        for fit in self.per_seed or ():
            value = fit.test.get(metric)
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                out[fit.seed] = float(value)
        return out

    def seed_items(self) -> dict[int, ItemScores]:
        """seed -> what that seed's fit got right per test item, for each seed of an ok record that recorded it on
        the task's primary metric; {} otherwise."""
        if self.status != "ok":
            return {}
        out = {}
        for fit in self.per_seed or ():
            if fit.item_scores is not None and fit.item_scores.metric == self.task.metric:
                out[fit.seed] = fit.item_scores
        return out


def migrate(data: Any) -> Any:
    """`data` as a record of `SCHEMA_VERSION`: itself when it is one, else migrated through `MIGRATIONS`.

    Raises:
        VersionError: for a newer version (update bench) or one no migration leads from (re-create the cell).
    """
    if not isinstance(data, Mapping) or data.get("schema_version") == SCHEMA_VERSION:
        return data
    version = data.get("schema_version")
    found = f"schema_version {version!r}, expected {SCHEMA_VERSION} (written by another bench)"
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise VersionError(f"{found}; a newer bench wrote it: update this one to read it")
    steps = range(version, SCHEMA_VERSION) if isinstance(version, int) and not isinstance(version, bool) else None
    if steps is None or any(v not in MIGRATIONS for v in steps):
        raise VersionError(f"{found}; no migration from it is known: {RERUN}")
    record = dict(data)
    for v in steps:
        record = {**MIGRATIONS[v](record), "schema_version": v + 1}
    return record
