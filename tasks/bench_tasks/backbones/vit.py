"""Plug any attention variant into timm's `VisionTransformer` through its `attn_layer` hook."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from bench_variants.base import AttentionConfig, VariantSpec


class TimmAttention(nn.Module):
    """Adapter with the constructor timm's ViT block calls and the forward it expects.

    timm builds the layer as `attn_layer(dim, num_heads=..., qkv_bias=..., qk_norm=..., ...)` and
    calls `attn(x, attn_mask=..., is_causal=...)`; this builds the variant's module and maps the two
    onto it. timm checks the layer with `issubclass`, so each variant gets a subclass (`timm_attention`).
    """

    variant: ClassVar[VariantSpec]

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: type[nn.Module] | None = None,
        scale_norm: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if qk_norm or scale_norm:
            raise ValueError(f"variant {self.variant.id!r} in a timm ViT: qk_norm and scale_norm are not supported")
        config = AttentionConfig(dim, num_heads, bias=qkv_bias and proj_bias, dropout=attn_drop)
        self.inner = self.variant.build(config).to(device=device, dtype=dtype)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if attn_mask is not None:
            raise ValueError("timm attention masks are not supported by the adapter; ViT classification passes none")
        return self.proj_drop(self.inner(x, causal=is_causal))


def timm_attention(variant: VariantSpec) -> type[TimmAttention]:
    """A `TimmAttention` subclass bound to `variant`, to pass as `VisionTransformer(attn_layer=...)`."""
    name = "TimmAttention_" + "".join(c if c.isalnum() else "_" for c in variant.id)
    return type(name, (TimmAttention,), {"variant": variant})


def vit(
    variant: VariantSpec,
    *,
    img_size: int,
    patch_size: int,
    in_chans: int,
    num_classes: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
    drop_rate: float = 0.0,
    global_pool: str = "token",
    mlp_ratio: int = 4,
) -> nn.Module:
    """A timm `VisionTransformer` trained from scratch whose every block uses `variant`.

    `global_pool` is timm's: "token" classifies from the class token, "avg" from the mean of the
    patch tokens (which trains faster from few images). `mlp_ratio` is each block's MLP width over
    `embed_dim`.
    """
    from timm.models.vision_transformer import VisionTransformer

    if global_pool not in ("token", "avg"):
        raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")

    return VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        drop_rate=drop_rate,
        global_pool=cast(Any, global_pool),  # checked above; timm types it as a Literal
        attn_layer=timm_attention(variant),
    )
