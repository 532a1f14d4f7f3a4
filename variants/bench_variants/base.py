"""The attention-variant contract that every variant, built-in or plugin, implements.

A variant is registered as a `VariantSpec` under the entry-point group `bench.variants`. The spec
is cheap to load: it declares what the variant is (id, display name, version, capabilities, cache
layout) without building anything, so the harness can list variants, derive cache sizes and skip
impossible cells before any tensor exists. `VariantSpec.build` returns an `Attention` module.

This module depends on torch only (never on `bench`), so plugins can depend on it alone.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .cache import CacheLayout, CacheSpec, KVCache, LayerCache, TokenCache, dtype_bytes

__all__ = [
    "Attention", "AttentionConfig", "CacheLayout", "CacheSpec", "KVCache", "LayerCache", "Supports", "TokenCache",
    "VariantSpec",
    "dtype_bytes", "replace", "row_channels", "sinusoid_1d", "sinusoid_2d",
]  # fmt: skip


@dataclass(frozen=True)
class AttentionConfig:
    """Shape of one attention block; everything outside attention is the backbone's business.

    Attributes:
        d_model: Width of the residual stream (input and output of the block).
        n_heads: Number of query heads; `d_model` must be divisible by it.
        bias: Whether projections carry a bias (the study's GPT-2 models do).
        dropout: Attention-probability dropout, active in training mode only.
    """

    d_model: int
    n_heads: int
    bias: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.d_model <= 0 or self.n_heads <= 0:
            raise ValueError(f"d_model and n_heads must be positive, got {self.d_model}, {self.n_heads}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "pick a width that is a multiple of the head count"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class Supports:
    """What a variant can do, so a harness skips impossible cells instead of crashing in them.

    Attributes:
        causal: Works under a causal mask (decoder language models).
        key_padding: Honours a key-padding mask.
        decoding: Supports incremental decoding with a `KVCache`.
        variable_length: Works for any sequence length (False: only the length it was built for).
        non_causal: Runs without a causal mask too (False: a decoder design, whose cells on tasks
            that are not causal are n/a).
    """

    causal: bool = True
    key_padding: bool = True
    decoding: bool = True
    variable_length: bool = True
    non_causal: bool = True


class Attention(nn.Module, abc.ABC):
    """An attention block mapping x (B, T, D) to y (B, T, D); it owns all its projections."""

    @abc.abstractmethod
    def forward(
        self,
        x_BTD: Tensor,
        *,
        causal: bool = False,
        pad_mask_BT: Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        """Attend.

        Args:
            x_BTD: Input; with a cache, only the new tokens (their positions follow the cached ones).
            causal: Apply a causal mask (token t sees tokens <= t).
            pad_mask_BT: Bool, True where a key is padding and must be ignored.
            cache: Incremental-decoding cache of this layer; appended to in place.

        Returns:
            y (B, T, D).
        """


class VariantSpec(abc.ABC):
    """A registered attention variant: declares what it is and builds `Attention` modules.

    Subclasses set the class or instance attributes below and implement `build` and either
    `cache_layout` (a per-head K/V cache) or `cache_spec` with `new_cache` (any other cache: latent,
    bounded, shared across layers, quantized, a constant state). The registry checks that `id` equals
    the entry-point name.
    """

    id: str  # shell-friendly, e.g. "qkv-tied-kv"
    display_name: str  # the study's notation, e.g. "Q-K=V"
    version: str  # bump when results of this variant would change
    supports: Supports
    summary: str = ""  # one line: the mechanism
    reference: str = ""  # where the design comes from: authors, year, venue or arXiv id
    decode_atol: float = 1e-5  # max |logit diff| of decoding against the full pass, fp32 (larger for a lossy cache)

    @abc.abstractmethod
    def build(self, config: AttentionConfig) -> Attention:
        """A fresh module for `config`; call `check` first for a readable refusal."""

    def cache_layout(self, config: AttentionConfig) -> CacheLayout:
        """A per-head K/V cache: what one layer of this variant caches per token under `config`."""
        raise NotImplementedError(
            f"variant {self.id!r} declares no cache: implement cache_layout (a per-head K/V cache) or "
            "cache_spec and new_cache (any other)"
        )

    def cache_spec(self, config: AttentionConfig) -> CacheSpec:
        """The bytes this variant's cache holds, as a function of tokens, layers, batch and dtype."""
        return self.cache_layout(config).spec()

    def new_cache(
        self,
        config: AttentionConfig,
        batch_size: int,
        capacity: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> LayerCache:
        """An empty cache for one cached layer, for up to `capacity` tokens."""
        return KVCache(self.cache_layout(config), batch_size, capacity, dtype, device)

    def build_layers(self, config: AttentionConfig, n_layers: int) -> list[Attention]:
        """The attention modules of a stack of `n_layers` blocks (a cross-layer design links them).

        A stack hands layer i the cache of layer `share_layers * (i // share_layers)` (see `CacheSpec`).
        """
        return [self.build(config) for _ in range(n_layers)]

    def check(self, config: AttentionConfig) -> str | None:
        """Why this variant cannot run `config`, or None when it can."""
        return None

    def mechanism(self, config: AttentionConfig) -> tuple[object, ...] | None:
        """What this variant computes at `config`, as a hashable key; None when it is its own.

        Two variants with equal keys at a config are the same computation (e.g. GQA with as many KV
        heads as query heads is QKV), so the harness runs only the first and marks the other n/a.
        """
        return None

    def ablates(self) -> str | None:
        """The id of the variant this one ablates (a diagnostic, not a design), or None.

        Ablations run in their own suite, show beside the variant they ablate, and take no part in
        ranks, aggregates, Pareto fronts or claims; `builtin` in a suite leaves them out.
        """
        return None

    def trains_as(self) -> str | None:
        """The id of the variant this one trains exactly as (an evaluation-only variant), or None.

        Such a variant has the other's parameters under the same names and differs only in evaluation
        (an int8 cache reads K and V through a quantization), so a seed's fit of the other is its fit too:
        the harness evaluates it on that fit's weights instead of training it again.
        """
        return None

    def coincidence(self, config: AttentionConfig) -> str:
        """Why the variant is the same computation as another at `config`, for the n/a reason."""
        return f"at H={config.n_heads}"

    def bytes_per_token_per_layer(self, config: AttentionConfig, dtype: torch.dtype = torch.float16) -> int | float:
        return self.cache_spec(config).bytes_per_token_per_layer(dtype)

    def kv_cache_bytes(
        self,
        config: AttentionConfig,
        n_layers: int,
        n_tokens: int,
        dtype: torch.dtype = torch.float16,
        batch_size: int = 1,
    ) -> int:
        """Declared cache bytes for a model of `n_layers` such blocks after `n_tokens` tokens."""
        return self.cache_spec(config).bytes(n_tokens, n_layers, dtype, batch_size)

    def describe(self) -> dict[str, str]:
        """Plain fields for tables and result files."""
        return {"id": self.id, "display_name": self.display_name, "version": self.version}


def sinusoid_1d(n: int, channels: int, *, device: torch.device | None = None) -> Tensor:
    """(n, channels): position p as alternating sin/cos at geometrically spaced frequencies."""
    return _sinusoid(torch.arange(n, dtype=torch.float32, device=device), channels)


def _sinusoid(pos: Tensor, channels: int) -> Tensor:
    """(len(pos), channels): each value of the float vector `pos` encoded as in `sinusoid_1d`."""
    idx = torch.arange(channels, dtype=torch.float32, device=pos.device)
    freq = torch.pow(10000.0, -2 * torch.div(idx, 2, rounding_mode="floor") / max(channels, 1))
    angle = pos[:, None] * freq[None, :]
    return torch.where(idx.long() % 2 == 0, torch.sin(angle), torch.cos(angle))


def row_channels(channels: int) -> int:
    """How many of the m channels of the 2D tensor encode the row (query) index."""
    return math.ceil(channels / 2)


def sinusoid_2d(n: int, channels: int, *, device: torch.device | None = None) -> Tensor:
    """The fixed 2D positional tensor P (n, n, m) of the study's "+" correction.

    The first ceil(m/2) channels encode the row index i and the rest the column index j, each with
    `sinusoid_1d`, as the paper describes it; the paper gives no exact formula (UNCONFIRMED), so this
    row/column reading is our documented default and `sinusoid_relative` the second reading. What
    matters for the mechanism is that P[i, j] != P[j, i], which makes scores asymmetric.
    """
    n_row = row_channels(channels)
    rows_NC = sinusoid_1d(n, n_row, device=device)
    cols_NC = sinusoid_1d(n, channels - n_row, device=device)
    return torch.cat(
        [rows_NC[:, None, :].expand(n, n, n_row), cols_NC[None, :, :].expand(n, n, channels - n_row)], dim=-1
    )


def sinusoid_offsets(n: int, channels: int, *, device: torch.device | None = None) -> Tensor:
    """(2n - 1, channels): every offset i - j of two of n positions, -(n - 1) to n - 1, as `sinusoid_1d`.

    Row `offset_index(n)[i, j]` holds the offset i - j; sin channels are odd in it, cos channels even.
    """
    return _sinusoid(torch.arange(1 - n, n, dtype=torch.float32, device=device), channels)


def offset_index(n: int, *, device: torch.device | None = None) -> Tensor:
    """(n, n) long: the row of `sinusoid_offsets(n, ...)` that holds the offset i - j."""
    pos = torch.arange(n, device=device)
    return pos[:, None] - pos[None, :] + (n - 1)


def sinusoid_relative(n: int, channels: int, *, device: torch.device | None = None) -> Tensor:
    """The relative reading of the study's P (n, n, m): all m channels encode the offset i - j.

    The second natural reading of the paper's "2D sinusoidal tensor" (the exact P is UNCONFIRMED):
    P w is then a learned Toeplitz bias that softmax does not cancel, and P[i, j] != P[j, i] through
    its sin channels. `sinusoid_2d` is the first reading.
    """
    return sinusoid_offsets(n, channels, device=device)[offset_index(n, device=device)]


def replace(spec: VariantSpec, **changes: object) -> VariantSpec:
    """A copy of a dataclass spec with fields changed (e.g. `replace(GQA4, kv_heads=8)`)."""
    if not dataclasses.is_dataclass(spec):
        raise TypeError(f"{type(spec).__name__} is not a dataclass spec; it cannot be varied by field")
    return dataclasses.replace(spec, **changes)  # type: ignore[type-var]
