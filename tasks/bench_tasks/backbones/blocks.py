"""The pre-LN transformer block shared by every backbone; attention is the only controlled variable."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bench_variants.base import Attention, AttentionConfig, LayerCache, VariantSpec


@dataclass(frozen=True)
class BlockConfig:
    """One block: GELU MLP of `mlp_ratio` x width, biases on, as in GPT-2."""

    d_model: int
    n_heads: int
    mlp_ratio: int = 4
    bias: bool = True
    dropout: float = 0.0

    @property
    def attention(self) -> AttentionConfig:
        return AttentionConfig(self.d_model, self.n_heads, bias=self.bias, dropout=self.dropout)


class Block(nn.Module):
    """x + attn(ln(x)), then x + mlp(ln(x)); `attn` given when a stack builds its layers together."""

    def __init__(self, config: BlockConfig, variant: VariantSpec, attn: Attention | None = None) -> None:
        super().__init__()
        d = config.d_model
        self.ln_1 = nn.LayerNorm(d, bias=config.bias)
        self.attn = attn if attn is not None else variant.build(config.attention)
        self.ln_2 = nn.LayerNorm(d, bias=config.bias)
        self.mlp = nn.Sequential(
            nn.Linear(d, config.mlp_ratio * d, bias=config.bias),
            nn.GELU(),
            nn.Linear(config.mlp_ratio * d, d, bias=config.bias),
            nn.Dropout(config.dropout),
        )

    def forward(
        self,
        x_BTD: Tensor,
        *,
        causal: bool = False,
        pad_mask_BT: Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        x_BTD = x_BTD + self.attn(self.ln_1(x_BTD), causal=causal, pad_mask_BT=pad_mask_BT, cache=cache)
        return x_BTD + self.mlp(self.ln_2(x_BTD))
