"""Two misbehaving third-party variants for tests/run/test_faults.py, registered through a dist-info folder.

Both compute exactly what QKV computes (same module, same parameter names, so the paired seeds give them
QKV's initial values) and add one fault through a hook on the attention module:

- `fault-hang` sleeps inside its attention at the training step the fault spec names, once (`faultlib`);
- `fault-nan` returns NaN from its third training call of every fit on: every fit diverges.

`mechanism` is None, so neither is n/a as a twin of QKV.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faultlib
import torch
from torch import nn

from bench_variants.base import AttentionConfig
from bench_variants.grid import SharedProjectionVariant, Tie


def _hang_before_step(module: nn.Module, args: Any) -> None:
    if module.training:
        faultlib.maybe_hang()


class _NaNFromThirdCall:
    """Forward hook: the attention's output times NaN from its third training call of a fit on."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
        if not module.training:
            return None
        self.calls += 1
        return output * float("nan") if self.calls > 2 else None


@dataclass(frozen=True)
class HangingVariant(SharedProjectionVariant):
    """QKV whose attention hangs once, where the fault spec says (a plugin stuck in a wait)."""

    def build(self, config: AttentionConfig) -> Any:
        module = super().build(config)
        module.register_forward_pre_hook(_hang_before_step)
        return module

    def mechanism(self, config: AttentionConfig) -> tuple[object, ...] | None:
        return None


@dataclass(frozen=True)
class NaNVariant(SharedProjectionVariant):
    """QKV whose attention output turns NaN at the third training step of every fit."""

    def build(self, config: AttentionConfig) -> Any:
        module = super().build(config)
        module.register_forward_hook(_NaNFromThirdCall())
        return module

    def mechanism(self, config: AttentionConfig) -> tuple[object, ...] | None:
        return None


HANG = HangingVariant("fault-hang", "Hang", Tie.NONE, summary="QKV that hangs once inside its attention")
NAN = NaNVariant("fault-nan", "NaN", Tie.NONE, summary="QKV whose output turns NaN at the third step")
