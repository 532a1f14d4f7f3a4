"""An attention that turns NaN: what the tests of divergence wrap a variant's attention in."""

from __future__ import annotations

import torch


class BlowsUp(torch.nn.Module):
    """Wraps a variant's attention and returns NaN from its third training call on."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor, **kw: object) -> torch.Tensor:
        self.calls += 1
        out = self.inner(x, **kw)
        return out * float("nan") if self.training and self.calls > 2 else out
