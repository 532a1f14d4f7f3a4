"""Synthetic sequence tasks: the study's Table 1 (REVERSE, SORT, SUB, SWAP, COPY) and MQAR.

Digit tasks: a sequence of digits 0-9 in, one digit per position out (10-way per-token
classification, token accuracy), through an unmasked encoder with learned positions.

MQAR (multi-query associative recall; Arora et al., "Zoology", 2023): n key-value pairs, then
queries that repeat some of the keys; the target at each query is the value paired with that key
(every other position is ignored). Here it runs through the same unmasked encoder as the digit tasks.

Data are generated in memory, deterministically per seed; nothing is read from disk.

What they measure: given enough steps, every one of the study's variants solves each of these tasks
at our sizes (`bench converge`; the records are in `convergence/`), so a fixed short budget measures
how fast a design learns, not what it can learn. Their verdict is therefore **steps to target**: the
optimiser steps until the validation token accuracy first reaches `TARGET`, read every few steps,
each fit stopping there, censored at a cap twice the slowest study variant's steps on the tuning seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from bench_variants.base import VariantSpec

from . import baselines
from .backbones import Encoder, EncoderConfig
from .base import STEPS_TO_TARGET, Baseline, DataSource, OptimConfig, Scale, SpeedTarget, Task, TaskConfig
from .datamodule import SplitDataModule, split_seed, split_tensors
from .module import Sums, TaskModule, accuracy_sums, loss_sums

IGNORE = -100
#: the validation token accuracy a speed task's fit runs to
TARGET = 0.99
#: looks at the validation split per cap: a speed verdict's resolution is cap / LOOKS_PER_CAP steps
LOOKS_PER_CAP = 40


@dataclass(frozen=True)
class SyntheticConfig(TaskConfig):
    seq_len: int = 16
    n_train: int = 4096
    n_val: int = 512
    n_test: int = 1024
    vocab: int = 10  # input symbols (digits); MQAR uses more
    packed: bool = False  # MQAR: a key and its value share one position (one attention hop, not two)


def _digit_targets(name: str) -> Callable[[Tensor], Tensor]:
    def reverse(x: Tensor) -> Tensor:
        return x.flip(-1)

    def sort(x: Tensor) -> Tensor:
        return x.sort(dim=-1).values

    def sub(x: Tensor) -> Tensor:
        return 9 - x

    def swap(x: Tensor) -> Tensor:
        half = x.shape[-1] // 2
        return torch.cat([x[:, half:], x[:, :half]], dim=-1)

    def copy(x: Tensor) -> Tensor:
        return x.clone()

    return {"reverse": reverse, "sort": sort, "sub": sub, "swap": swap, "copy": copy}[name]


def digit_examples(name: str, n: int, seq_len: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`n` sequences of digits and their per-position targets for the digit task `name`."""
    x_NT = torch.randint(10, (n, seq_len), generator=generator)
    return x_NT, _digit_targets(name)(x_NT)


def mqar_examples(n: int, seq_len: int, vocab: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """MQAR: the first half holds key-value pairs, the second half queries; targets only at queries.

    Keys come from [0, vocab/2) and values from [vocab/2, vocab), so a value is never a key.
    """
    n_pairs = seq_len // 4
    half = vocab // 2
    if n_pairs < 1 or n_pairs > half:
        raise ValueError(f"MQAR needs 4 <= seq_len <= 4 * vocab/2; got seq_len={seq_len}, vocab={vocab}")
    keys_NP = torch.stack([torch.randperm(half, generator=generator)[:n_pairs] for _ in range(n)])
    values_NP = torch.randint(half, vocab, (n, n_pairs), generator=generator)
    pairs_NT = torch.stack([keys_NP, values_NP], dim=-1).flatten(1)  # k1 v1 k2 v2 ...
    n_queries = seq_len - pairs_NT.shape[1]
    pick_NQ = torch.randint(n_pairs, (n, n_queries), generator=generator)
    queries_NQ = keys_NP.gather(1, pick_NQ)
    x_NT = torch.cat([pairs_NT, queries_NQ], dim=1)
    y_NT = torch.full_like(x_NT, IGNORE)
    y_NT[:, pairs_NT.shape[1] :] = values_NP.gather(1, pick_NQ)
    return x_NT, y_NT


def packed_mqar_examples(n: int, seq_len: int, vocab: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """MQAR with each key-value pair at one position: inputs (n, T, 2), summed embeddings per position.

    The first T/4 positions hold (key, value), the rest (query key, `vocab`), `vocab` being an extra
    "no value" symbol; targets as in `mqar_examples`. Recall is then one hop (query -> its pair)
    instead of two (a value first looks up its key, then the query finds the value), which a small
    encoder learns in hundreds of steps rather than thousands.
    """
    x_NT, y_NT = mqar_examples(n, seq_len, vocab, generator)
    n_pairs = seq_len // 4
    pairs_NP2 = x_NT[:, : 2 * n_pairs].view(n, n_pairs, 2)
    queries_NQ = x_NT[:, 2 * n_pairs :]
    queries_NQ2 = torch.stack([queries_NQ, torch.full_like(queries_NQ, vocab)], dim=-1)
    return torch.cat([pairs_NP2, queries_NQ2], dim=1), torch.cat(
        [y_NT[:, n_pairs : 2 * n_pairs], y_NT[:, 2 * n_pairs :]], 1
    )


class SyntheticDataModule(SplitDataModule):
    """Train/val/test splits generated from disjoint seeds."""

    def __init__(
        self, make: Callable[[int, torch.Generator], tuple[Tensor, Tensor]], config: SyntheticConfig, seed: int
    ) -> None:
        super().__init__(config.batch_size, seed)
        self.make, self.config = make, config

    def build(self) -> dict[str, Dataset]:
        sizes = {"train": self.config.n_train, "val": self.config.n_val, "test": self.config.n_test}
        return {
            split: TensorDataset(*self.make(n, torch.Generator().manual_seed(split_seed(self.seed, split))))
            for split, n in sizes.items()
        }


class SequenceTagger(nn.Module):
    """Token embedding (the one-hot input times a matrix), encoder with learned positions, per-token head."""

    def __init__(self, variant: VariantSpec, config: SyntheticConfig, n_classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(config.vocab + int(config.packed), config.d_model)
        encoder = EncoderConfig(config.n_layers, config.d_model, config.n_heads, max_len=config.seq_len)
        self.encoder = Encoder(encoder, variant)
        self.head = nn.Linear(config.d_model, n_classes)

    def forward(self, x_BT: Tensor) -> Tensor:
        x_BTD = self.embed(x_BT)
        if x_BTD.ndim == 4:  # (B, T, symbols per position, D): packed inputs, embeddings summed
            x_BTD = x_BTD.sum(2)
        return self.head(self.encoder(x_BTD))  # (B, T, classes)


class TaggingModule(TaskModule):
    def evaluate(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Sums]:
        x_BT, y_BT = batch
        logits_BTC = self.net(x_BT)
        loss = F.cross_entropy(logits_BTC.flatten(0, 1), y_BT.flatten(), ignore_index=IGNORE)
        sums = accuracy_sums(logits_BTC, y_BT, IGNORE)
        return loss, {**sums, **loss_sums(loss, sums["accuracy"][1])}


_SCALES: dict[Scale, SyntheticConfig] = {
    "smoke": SyntheticConfig(d_model=32, n_layers=1, n_heads=2, batch_size=64, n_train=256, n_val=64, n_test=64),
    # heads of 16 (the study's synthetic heads were 2 or 4); about a second of one CPU core per fit
    "default": SyntheticConfig(d_model=64, n_layers=2, n_heads=4, batch_size=128, max_epochs=2, seq_len=16),
    # the study: embed up to 256, 4 layers, 4 heads, up to length 128, 2 epochs (size not stated; 50k/1k/10k)
    "paper": SyntheticConfig(
        d_model=256,
        n_layers=4,
        n_heads=4,
        batch_size=128,
        max_epochs=2,
        seq_len=64,
        n_train=50_000,
        n_val=1_000,
        n_test=10_000,
    ),
}


_POINTWISE = SyntheticConfig(
    d_model=64, n_layers=2, n_heads=4, batch_size=128, max_epochs=1, seq_len=16, n_train=1280
)  # fmt: skip


def capped(config: SyntheticConfig, cap: int) -> SyntheticConfig:
    """`config` run for `cap` optimiser steps: as many epochs of its training set as that takes."""
    batches = -(-config.n_train // config.batch_size)
    return dataclasses.replace(config, max_steps=cap, max_epochs=-(-cap // batches))


def cap_of(config: SyntheticConfig) -> int:
    """The steps a fit of `config` takes at most (its cap when it measures speed)."""
    epochs = config.max_epochs * -(-config.n_train // config.batch_size)
    return min(epochs, config.max_steps) if config.max_steps > 0 else epochs


class DigitTask(Task):
    """One of the study's digit-sequence tasks: steps to `TARGET` validation token accuracy."""

    version = "2"  # 2: a speed task (steps to the target, each fit stopping there)
    family = "synthetic"
    metric = STEPS_TO_TARGET
    higher_is_better = False
    causal = False
    measures = "speed"
    #: QKV's steps (upper 95% bound) at most 90% of the cap: it reaches the target with room to spare
    learn_margin = 0.10
    #: within 10% of QKV's steps counts as the same speed
    equivalence_margin = 0.10

    def __init__(self, name: str, default: SyntheticConfig | None = None, lr: float | None = None) -> None:
        self.name = name
        self.id = name
        self.description = (f"{name.upper()} digit sequences (the study's Table 1): steps to {TARGET:.0%} "
                            "validation token accuracy")  # fmt: skip
        self.default = default or _SCALES["default"]
        self.lr = lr

    def config(self, scale: Scale) -> TaskConfig:
        return self.default if scale == "default" else _SCALES[scale]

    def speed_target(self, config: TaskConfig) -> SpeedTarget:
        return SpeedTarget("accuracy", TARGET, every=max(1, cap_of(self._config(config)) // LOOKS_PER_CAP))

    def optim_defaults(self) -> dict[str, float]:
        return {"lr": self.lr} if self.lr else {}

    def prepare(self, data_dir: Path) -> DataSource:
        return self.source

    @property
    def source(self) -> DataSource:
        return DataSource(f"{self.name.upper()} digit sequences", "synthetic", "generated in memory per seed")

    def _config(self, config: TaskConfig) -> SyntheticConfig:
        if not isinstance(config, SyntheticConfig):
            raise TypeError(f"task {self.id!r} needs a SyntheticConfig, got {type(config).__name__}")
        return config

    def datamodule(self, data_dir: Path, config: TaskConfig, seed: int) -> L.LightningDataModule:
        cfg = self._config(config)
        return SyntheticDataModule(lambda n, g: digit_examples(self.name, n, cfg.seq_len, g), cfg, seed)

    def build_model(self, variant: VariantSpec, config: TaskConfig, optim: OptimConfig) -> TaskModule:
        return TaggingModule(SequenceTagger(variant, self._config(config), n_classes=10), optim)

    def context_length(self, config: TaskConfig) -> int:
        return self._config(config).seq_len

    def token_baseline(self, data_dir: Path, config: TaskConfig) -> Baseline:
        """The better of chance and the per-position majority class of the seed-0 train split, on test (accuracy)."""
        splits = split_tensors(self.datamodule(data_dir, config, seed=0))
        train_y_NT, test_y_NT = splits["train"][1], splits["test"][1]
        scores = baselines.position_scores(train_y_NT, test_y_NT, IGNORE)
        name = max(scores, key=scores.__getitem__)
        note = f"fit on {len(train_y_NT)} seed-0 train sequences, scored on {len(test_y_NT)} test sequences"
        return Baseline(name, scores[name], {k: v for k, v in scores.items() if k != name}, note)

    def baseline(self, data_dir: Path, config: TaskConfig) -> Baseline:
        """A model that never reaches the target stops at the cap: the bar is the cap. The note gives the trivial
        token accuracy (`token_baseline`), far below the target."""
        trivial = self.token_baseline(data_dir, config)
        note = (f"a fit that never reaches {TARGET:.0%} validation accuracy counts at the cap; the trivial "
                f"{trivial.name} scores {trivial.value:.4f} token accuracy ({trivial.note})")  # fmt: skip
        return Baseline("never reaches the target (the cap)", float(cap_of(self._config(config))), {}, note)


class MQARTask(DigitTask):
    """Multi-query associative recall through the unmasked encoder."""

    def __init__(self) -> None:
        super().__init__("mqar")
        self.version = "3"  # 2: each key-value pair packed into one position; 3: a speed task
        self.description = f"multi-query associative recall: steps to {TARGET:.0%} validation accuracy at the queries"

    def config(self, scale: Scale) -> TaskConfig:
        if scale == "default":  # 4 packed pairs, 12 queries of 16 keys; the cap as the digit tasks' (below)
            return capped(dataclasses.replace(_SCALES["default"], vocab=32, n_train=5120, packed=True), 232)
        base = _SCALES[scale]
        return SyntheticConfig(**{**base.as_dict(), "vocab": 64, "seq_len": max(16, base.seq_len)})

    def context_length(self, config: TaskConfig) -> int:
        cfg = self._config(config)
        return cfg.seq_len - cfg.seq_len // 4 if cfg.packed else cfg.seq_len

    @property
    def source(self) -> DataSource:
        return DataSource("MQAR key-value sequences", "synthetic", "generated in memory per seed")

    def datamodule(self, data_dir: Path, config: TaskConfig, seed: int) -> L.LightningDataModule:
        cfg = self._config(config)
        make = packed_mqar_examples if cfg.packed else mqar_examples
        return SyntheticDataModule(lambda n, g: make(n, cfg.seq_len, cfg.vocab, g), cfg, seed)

    def build_model(self, variant: VariantSpec, config: TaskConfig, optim: OptimConfig) -> TaskModule:
        cfg = self._config(config)
        return TaggingModule(SequenceTagger(variant, cfg, n_classes=cfg.vocab), optim)


# Caps: twice the slowest study variant's steps to the target in a 480-step run on the tuning seed's
# validation split, with the task's default settings (`bench converge --task T --steps 480`; the records are
# in `convergence/`, and tests/tasks/test_speed.py checks every cap against its record). REVERSE and SWAP need
# attention to route every token; SORT to count; SUB and COPY are per-position maps at a lower learning rate.
_ROUTING = dataclasses.replace(_SCALES["default"], n_train=2560)
REVERSE = DigitTask("reverse", capped(_ROUTING, 120))
SORT = DigitTask("sort", capped(dataclasses.replace(_SCALES["default"], n_train=3072), 624))
SUB = DigitTask("sub", capped(_POINTWISE, 48), lr=1e-3)
SWAP = DigitTask("swap", capped(_ROUTING, 120))
COPY = DigitTask("copy", capped(_POINTWISE, 48), lr=1e-3)
MQAR = MQARTask()
