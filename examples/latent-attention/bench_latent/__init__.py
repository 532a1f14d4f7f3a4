"""Multi-head latent attention, simplified (DeepSeek-V2, arXiv 2405.04434; no decoupled RoPE).

Mechanism: c = W_c x (rank r); K = W_k c, V = W_v c, split into H heads; Q = W_q x.
Cache: the latent c only, r values per token per layer: bytes = r x bytes per element.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench_variants.base import Attention, AttentionConfig, CacheLayout, KVCache, Supports, VariantSpec


class LatentAttention(Attention):
    def __init__(self, config: AttentionConfig, rank: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.dropout = config.n_heads, config.head_dim, config.dropout
        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.down = nn.Linear(config.d_model, rank, bias=config.bias)
        self.up_kv = nn.Linear(rank, 2 * config.d_model, bias=config.bias)
        self.out_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)

    def _heads(self, t_BTD: Tensor) -> Tensor:
        B, T, _ = t_BTD.shape
        return t_BTD.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

    def forward(
        self,
        x_BTD: Tensor,
        *,
        causal: bool = False,
        pad_mask_BT: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        B, T, D = x_BTD.shape
        latent_BTR = self.down(x_BTD)
        if cache is not None:
            (latent_B1SR,) = cache.append(latent_BTR[:, None])
            latent_BTR = latent_B1SR[:, 0]
        S = latent_BTR.shape[1]
        k_BSD, v_BSD = self.up_kv(latent_BTR).chunk(2, dim=-1)
        allowed = None
        if causal and S > 1:
            allowed = (
                torch.arange(S, device=x_BTD.device)[None, :] <= torch.arange(S - T, S, device=x_BTD.device)[:, None]
            )
        if pad_mask_BT is not None:
            keep_B11S = ~pad_mask_BT[:, None, None, :]
            allowed = keep_B11S if allowed is None else allowed & keep_B11S
        y_BHTK = F.scaled_dot_product_attention(
            self._heads(self.q_proj(x_BTD)),
            self._heads(k_BSD),
            self._heads(v_BSD),
            attn_mask=allowed,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(y_BHTK.transpose(1, 2).reshape(B, T, D))


@dataclass(frozen=True)
class LatentKVVariant(VariantSpec):
    id: str = "latent-kv"
    display_name: str = "MLA-r"
    rank_fraction: int = 4  # latent rank r = d_model / rank_fraction
    version: str = "1"
    summary: str = "K and V up-projected from a cached low-rank latent (simplified MLA)"

    @property
    def supports(self) -> Supports:  # type: ignore[override]
        return Supports(causal=True, key_padding=True, decoding=True, variable_length=True)

    def rank(self, config: AttentionConfig) -> int:
        return max(1, config.d_model // self.rank_fraction)

    def build(self, config: AttentionConfig) -> Attention:
        return LatentAttention(config, self.rank(config))

    def cache_layout(self, config: AttentionConfig) -> CacheLayout:
        return CacheLayout(tensors_per_head=1, kv_heads=1, head_dim=self.rank(config))


LATENT_KV = LatentKVVariant()
