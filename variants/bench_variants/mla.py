"""Multi-head latent attention (MLA): the cache holds a compressed latent and one small positional key.

Mechanism (DeepSeek-V2): keys and values come from a latent c = W_dkv x of width d_c, up-projected per
head (k_C = W_uk c, v = W_uv c), so only c is cached. Rotary position cannot pass through that
up-projection, so a decoupled key k_R = RoPE(W_kr x) of width d_r, shared by all heads, carries
position, matched by per-head rotary queries q_R; scores are (q_C . k_C + q_R . k_R) / sqrt(d_head + d_r).
The query is not compressed here (that saves activations, not cache).
Reference: DeepSeek-AI, "DeepSeek-V2", 2024 (arXiv:2405.04434), with its d_c = 4 d_head, d_r = d_head / 2.
Cache per token per layer: (d_c + d_r) x b.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attention, AttentionConfig, CacheSpec, LayerCache, Supports, TokenCache, VariantSpec
from .grid import sdpa_mask


def rope(x_BHTR: Tensor, start: int) -> Tensor:
    """Rotary position embedding of positions start.. over the last dimension (split in halves)."""
    half = x_BHTR.shape[-1] // 2
    inv_freq = 10000.0 ** (-torch.arange(half, device=x_BHTR.device, dtype=torch.float32) / half)
    pos_T = torch.arange(start, start + x_BHTR.shape[2], device=x_BHTR.device, dtype=torch.float32)
    angle_TR = pos_T[:, None] * inv_freq[None, :]
    cos, sin = angle_TR.cos().to(x_BHTR.dtype), angle_TR.sin().to(x_BHTR.dtype)
    x1, x2 = x_BHTR[..., :half], x_BHTR[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class LatentAttention(Attention):
    """MLA over a latent of `latent` channels and a shared rotary key of `rope_dim` channels."""

    def __init__(self, config: AttentionConfig, latent: int, rope_dim: int) -> None:
        super().__init__()
        d, self.n_heads, self.head_dim, self.rope_dim = config.d_model, config.n_heads, config.head_dim, rope_dim
        self.dropout = config.dropout
        self.down_kv = nn.Linear(d, latent + rope_dim, bias=config.bias)  # [c, k_R before rotation]
        self.up_kv = nn.Linear(latent, 2 * d, bias=config.bias)  # [k_C, v] per head
        self.q_proj = nn.Linear(d, config.n_heads * (config.head_dim + rope_dim), bias=config.bias)  # [q_C, q_R]
        self.out_proj = nn.Linear(d, d, bias=config.bias)
        self.latent = latent

    def forward(
        self,
        x_BTD: Tensor,
        *,
        causal: bool = False,
        pad_mask_BT: Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        B, T, D = x_BTD.shape
        start = cache.length if cache is not None else 0
        c_B1TC, k_rope_B1TR = self.down_kv(x_BTD)[:, None].split([self.latent, self.rope_dim], dim=-1)
        k_rope_B1TR = rope(k_rope_B1TR, start)
        q_BHTE = self.q_proj(x_BTD).view(B, T, self.n_heads, -1).transpose(1, 2)
        q_C_BHTK, q_R_BHTR = q_BHTE[..., : self.head_dim], rope(q_BHTE[..., self.head_dim :], start)
        if cache is not None:  # what is cached: the latent and the rotated positional key
            c_B1TC, k_rope_B1TR = cache.append(c_B1TC, k_rope_B1TR)
            y_BHTK = self._attend_latent(q_C_BHTK, q_R_BHTR, c_B1TC, k_rope_B1TR, causal, pad_mask_BT)
        else:
            y_BHTK = self._attend_heads(q_C_BHTK, q_R_BHTR, c_B1TC, k_rope_B1TR, causal, pad_mask_BT)
        return self.out_proj(y_BHTK.transpose(1, 2).reshape(B, T, D))

    def _attend_heads(
        self, q_C: Tensor, q_R: Tensor, c_B1TC: Tensor, k_rope_B1TR: Tensor, causal: bool, pad_mask_BT: Tensor | None
    ) -> Tensor:
        """Training and full passes: K and V up-projected per head, then SDPA over d_head + d_r channels."""
        B, H, T, _ = q_C.shape
        t_k = c_B1TC.shape[2]
        kv_BNTK = self.up_kv(c_B1TC[:, 0]).view(B, t_k, 2 * H, self.head_dim).transpose(1, 2)
        k_BHTK, v_BHTK = kv_BNTK.chunk(2, dim=1)
        k_BHTE = torch.cat([k_BHTK, k_rope_B1TR.expand(B, H, t_k, self.rope_dim)], dim=-1)
        mask, is_causal = sdpa_mask(T, t_k, causal, pad_mask_BT, q_C.device)
        dropout = self.dropout if self.training else 0.0
        q_BHTE = torch.cat([q_C, q_R], dim=-1)
        return F.scaled_dot_product_attention(
            q_BHTE, k_BHTE, v_BHTK, attn_mask=mask, dropout_p=dropout, is_causal=is_causal
        )

    def _attend_latent(
        self, q_C: Tensor, q_R: Tensor, c_B1TC: Tensor, k_rope_B1TR: Tensor, causal: bool, pad_mask_BT: Tensor | None
    ) -> Tensor:
        """Decoding: W_uk folded into the queries and W_uv applied after, so attention reads the cached latent
        itself (d_c + d_r channels a key) and the cache is never up-projected; the same scores and outputs.
        The key bias adds q . b_uk to every score of a query, which softmax cancels; the value bias passes
        through the convex combination unchanged."""
        B, H, T, K = q_C.shape
        w_uk_HKC, w_uv_HKC = self.up_kv.weight.view(2, H, K, self.latent).unbind(0)
        q_lat_BHTC = torch.einsum("bhtk,hkc->bhtc", q_C, w_uk_HKC)
        q_BHTE = torch.cat([q_lat_BHTC, q_R], dim=-1)
        k_B1TE = torch.cat([c_B1TC, k_rope_B1TR], dim=-1)
        mask, is_causal = sdpa_mask(T, c_B1TC.shape[2], causal, pad_mask_BT, q_C.device)
        scale = 1.0 / math.sqrt(K + self.rope_dim)
        if T == 1:  # a decoding step: the H queries are rows against one latent "head", read once, never copied
            o_lat_B1HC = F.scaled_dot_product_attention(
                q_BHTE.transpose(1, 2), k_B1TE, c_B1TC, attn_mask=mask, is_causal=is_causal, scale=scale
            )  # a mask here is the padding's (B, 1, 1, t_k): the same for every row
            o_lat_BHTC = o_lat_B1HC.transpose(1, 2)
        else:  # several new queries: their causal mask differs by row, so the latent is broadcast per head
            o_lat_BHTC = F.scaled_dot_product_attention(
                q_BHTE, k_B1TE.expand(B, H, -1, -1), c_B1TC.expand(B, H, -1, -1), attn_mask=mask,
                is_causal=is_causal, scale=scale,
            )  # fmt: skip
        y_BHTK = torch.einsum("bhtc,hkc->bhtk", o_lat_BHTC, w_uv_HKC)
        if self.up_kv.bias is not None:
            y_BHTK = y_BHTK + self.up_kv.bias.view(2, H, 1, K)[1]
        return y_BHTK


@dataclass(frozen=True)
class LatentVariant(VariantSpec):
    """MLA with d_c = `latent_per_head` x d_head and d_r = d_head / 2 (DeepSeek-V2's proportions)."""

    id: str = "mla"
    display_name: str = "MLA"
    version: str = "1"
    summary: str = "K and V from a cached latent of 4 d_head, plus a shared rotary key of d_head/2"
    latent_per_head: int = 4

    supports = Supports(non_causal=False)  # a decoder cache design: it runs where a causal model decodes
    reference = "DeepSeek-AI 2024 (DeepSeek-V2, arXiv:2405.04434)"

    def _dims(self, config: AttentionConfig) -> tuple[int, int]:
        return self.latent_per_head * config.head_dim, max(2, config.head_dim // 2 // 2 * 2)

    def mechanism(self, config: AttentionConfig) -> tuple[object, ...] | None:
        return ("latent", *self._dims(config))

    def check(self, config: AttentionConfig) -> str | None:
        return None if self.latent_per_head >= 1 else f"latent_per_head must be at least 1, got {self.latent_per_head}"

    def build(self, config: AttentionConfig) -> Attention:
        return LatentAttention(config, *self._dims(config))

    def cache_spec(self, config: AttentionConfig) -> CacheSpec:
        latent, rope_dim = self._dims(config)
        return CacheSpec(latent + rope_dim, formula=f"(d_c {latent} + d_r {rope_dim}) x b")

    def new_cache(
        self,
        config: AttentionConfig,
        batch_size: int,
        capacity: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> TokenCache:
        latent, rope_dim = self._dims(config)
        return TokenCache([(1, latent), (1, rope_dim)], batch_size, capacity, dtype, device)

    def describe(self) -> dict[str, str]:
        latent, rope_dim = (f"{self.latent_per_head} d_head", "d_head/2")
        return {**super().describe(), "latent": latent, "rope_dim": rope_dim}
