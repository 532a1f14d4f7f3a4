"""A GPT-2-style decoder LM around any attention variant, with real incremental decoding.

Pre-LN, learned absolute positions, biases on, GELU MLP 4d, LM head tied to the token embedding;
padding is masked out of the loss (the study's own code scored it, which deflated its perplexities).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench_variants.base import AttentionConfig, LayerCache, VariantSpec

from .blocks import Block, BlockConfig


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    context: int
    n_layers: int
    d_model: int
    n_heads: int
    bias: bool = True
    dropout: float = 0.0

    @property
    def block(self) -> BlockConfig:
        return BlockConfig(self.d_model, self.n_heads, bias=self.bias, dropout=self.dropout)

    @property
    def attention(self) -> AttentionConfig:
        return self.block.attention

    @classmethod
    def study_300m(cls) -> GPTConfig:
        """The study's 300M model: 20 layers, width 1024, 16 heads of 64."""
        return cls(vocab_size=50_304, context=2_048, n_layers=20, d_model=1024, n_heads=16)

    @classmethod
    def study_1b2(cls) -> GPTConfig:
        """The study's 1.2B model: 22 layers, width 2048, 32 heads of 64."""
        return cls(vocab_size=50_304, context=2_048, n_layers=22, d_model=2048, n_heads=32)


class GPT(nn.Module):
    """Token + position embeddings, `n_layers` causal blocks, final LN, tied head."""

    def __init__(self, config: GPTConfig, variant: VariantSpec) -> None:
        super().__init__()
        self.config, self.variant = config, variant
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        layers = variant.build_layers(config.block.attention, config.n_layers)
        self.blocks = nn.ModuleList(Block(config.block, variant, attn) for attn in layers)
        self.ln_f = nn.LayerNorm(config.d_model, bias=config.bias)
        self.apply(_init_weights)

    def forward(
        self, idx_BT: Tensor, pad_mask_BT: Tensor | None = None, caches: list[LayerCache] | None = None
    ) -> Tensor:
        """Logits (B, T, vocab). With `caches`, `idx_BT` holds only new tokens, placed after the cached ones.

        `pad_mask_BT` (True = padding) must then cover every key, cached and new.
        """
        start = caches[0].length if caches else 0
        T = idx_BT.shape[1]
        if start + T > self.config.context:
            raise ValueError(f"sequence of {start + T} tokens exceeds the context of {self.config.context}")
        pos_T = torch.arange(start, start + T, device=idx_BT.device)
        x_BTD = self.drop(self.tok_emb(idx_BT) + self.pos_emb(pos_T))
        for i, block in enumerate(self.blocks):
            cache = caches[i] if caches else None
            x_BTD = block(x_BTD, causal=True, pad_mask_BT=pad_mask_BT, cache=cache)
        return self.ln_f(x_BTD) @ self.tok_emb.weight.T  # tied head

    def new_cache(
        self, batch_size: int, capacity: int | None = None, dtype: torch.dtype | None = None
    ) -> list[LayerCache]:
        """The cache each layer reads, holding up to `capacity` tokens (default: the context).

        Layers that share a cache (`CacheSpec.share_layers`) get the same object: count the bytes held
        over distinct caches (`held_bytes`).
        """
        weight, attention = self.tok_emb.weight, self.config.block.attention
        share = self.variant.cache_spec(attention).share_layers
        own = [
            self.variant.new_cache(
                attention, batch_size, capacity or self.config.context, dtype or weight.dtype, weight.device
            )
            for _ in range(math.ceil(self.config.n_layers / share))
        ]
        return [own[i // share] for i in range(self.config.n_layers)]


def held_bytes(caches: list[LayerCache]) -> int:
    """Bytes held by a model's caches, each shared cache counted once."""
    return sum(cache.nbytes for cache in {id(cache): cache for cache in caches}.values())


def lm_loss(logits_BTV: Tensor, targets_BT: Tensor, pad_mask_BT: Tensor | None = None) -> Tensor:
    """Mean next-token cross-entropy over non-padding targets (`pad_mask_BT` True = padding)."""
    targets = targets_BT if pad_mask_BT is None else targets_BT.masked_fill(pad_mask_BT, -100)
    return F.cross_entropy(logits_BTV.flatten(0, 1), targets.flatten(), ignore_index=-100)


def _init_weights(module: nn.Module) -> None:
    # GPT-2's initialisation; the projections of every variant get the same treatment
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


class _Reference:
    """The reference decoder of `bench.measure.decoder` (entry point `bench.decoder`): this GPT."""

    def config(self, *, vocab_size: int, context: int, n_layers: int, d_model: int, n_heads: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, context=context, n_layers=n_layers, d_model=d_model, n_heads=n_heads)

    def study_300m(self) -> GPTConfig:
        return GPTConfig.study_300m()

    def build(self, config: GPTConfig, variant: VariantSpec) -> GPT:
        return GPT(config, variant)

    def held_bytes(self, caches: list[LayerCache]) -> int:
        return held_bytes(caches)

    def lm_loss(self, logits_BTV: Tensor, targets_BT: Tensor) -> Tensor:
        return lm_loss(logits_BTV, targets_BT)


REFERENCE_DECODER = _Reference()
