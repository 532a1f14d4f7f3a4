"""Sliding-window attention: each token attends to the last `window` tokens only, so the cache is bounded.

Mechanism: QKV attention under a band mask, key j visible to query i when i - window < j <= i (causal);
the cache is a ring of `window` tokens, whatever the context (`TokenCache` with a window), so decoding a
long context holds and reads a constant cache.
Reference: Beltagy, Peters, Cohan, "Longformer", 2020 (arXiv:2004.05150); Child et al. 2019 (sparse
transformers); as used in Mistral 7B (Jiang et al. 2023, arXiv:2310.06825).
Cache per token per layer: 2 x H x d_head x b, for at most `window` tokens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Attention, AttentionConfig, CacheSpec, LayerCache, Supports, TokenCache
from .grid import SharedProjectionAttention, SharedProjectionVariant, Tie


class SlidingWindowAttention(SharedProjectionAttention):
    """QKV attention that sees the last `window` positions only (with a cache: only what the ring holds)."""

    def __init__(self, config: AttentionConfig, window: int) -> None:
        super().__init__(config, Tie.NONE, config.n_heads)
        self.window = window

    def _masking(
        self, t_q: int, t_k: int, causal: bool, pad_mask_BT: Tensor | None, cache: LayerCache | None, q: Tensor
    ) -> tuple[Tensor | None, bool]:
        k_pos = cache.key_positions() if cache is not None else torch.arange(t_k, device=q.device)
        q_pos = k_pos[-t_q:]  # the new tokens are the last keys
        offset_QK = q_pos[:, None] - k_pos[None, :]
        allowed = (offset_QK < self.window) & (offset_QK >= 0 if causal else offset_QK > -self.window)
        if pad_mask_BT is not None:
            allowed = allowed & ~pad_mask_BT[:, k_pos][:, None, None, :]
        return allowed, False


@dataclass(frozen=True)
class SlidingWindowVariant(SharedProjectionVariant):
    """QKV within a window of `window` tokens (a hyperparameter: `replace(SWA, window=512)`)."""

    window: int = 16

    @property
    def supports(self) -> Supports:  # type: ignore[override]
        return Supports(non_causal=False)  # a decoder cache design: it runs where a causal model decodes

    @property
    def reference(self) -> str:  # type: ignore[override]
        return "Beltagy et al. 2020 (Longformer, arXiv:2004.05150); Jiang et al. 2023 (Mistral, arXiv:2310.06825)"

    def check(self, config: AttentionConfig) -> str | None:
        return None if self.window >= 1 else f"the window must hold at least 1 token, got {self.window}"

    def mechanism(self, config: AttentionConfig) -> tuple[object, ...] | None:
        return ("sliding-window", self.window)

    def build(self, config: AttentionConfig) -> Attention:
        return SlidingWindowAttention(config, self.window)

    def cache_spec(self, config: AttentionConfig) -> CacheSpec:
        spec = self.cache_layout(config).spec()
        return dataclasses.replace(spec, window=self.window, formula=f"{spec.formula}, last {self.window} tokens")

    def new_cache(
        self,
        config: AttentionConfig,
        batch_size: int,
        capacity: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> TokenCache:
        return TokenCache(self.cache_layout(config).shapes, batch_size, capacity, dtype, device, window=self.window)

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "window": str(self.window)}
