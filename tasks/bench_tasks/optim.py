"""What every cell tunes (its own module, so that `base` and `module` both read it without importing
each other)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OptimConfig:
    """What every cell tunes: AdamW with linear warmup then cosine decay to `min_lr_ratio` x lr."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_frac: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    min_lr_ratio: float = 0.1
