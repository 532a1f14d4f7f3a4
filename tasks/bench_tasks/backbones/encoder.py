"""A bidirectional (unmasked) transformer encoder around any attention variant.

Used by the sequence tasks (with learned positions) and the set tasks (without: a set has no
order). Embedding and head belong to the task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bench_variants.base import VariantSpec

from .blocks import Block, BlockConfig


@dataclass(frozen=True)
class EncoderConfig:
    n_layers: int
    d_model: int
    n_heads: int
    max_len: int = 0  # learned positions for up to max_len tokens; 0: no positional embedding
    dropout: float = 0.0

    @property
    def block(self) -> BlockConfig:
        return BlockConfig(self.d_model, self.n_heads, dropout=self.dropout)


class Encoder(nn.Module):
    """x (B, T, D) -> (B, T, D): optional positions, `n_layers` blocks, final LN."""

    def __init__(self, config: EncoderConfig, variant: VariantSpec) -> None:
        super().__init__()
        self.config = config
        self.pos_emb = nn.Embedding(config.max_len, config.d_model) if config.max_len else None
        self.blocks = nn.ModuleList(Block(config.block, variant) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)

    def forward(self, x_BTD: Tensor, pad_mask_BT: Tensor | None = None) -> Tensor:
        if self.pos_emb is not None:
            T = x_BTD.shape[1]
            if self.config.max_len < T:
                raise ValueError(f"sequence of {T} exceeds the encoder's max_len={self.config.max_len}")
            x_BTD = x_BTD + self.pos_emb(torch.arange(T, device=x_BTD.device))
        for block in self.blocks:
            x_BTD = block(x_BTD, pad_mask_BT=pad_mask_BT)
        return self.ln_f(x_BTD)
