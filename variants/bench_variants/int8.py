"""An int8 KV cache, as an option that crosses any decoding variant (`int8_cache(TIED_KV)`).

Mechanism: every cached vector (one token, one head, one cached tensor) is stored as int8 with one
float16 scale, absmax / 127 (symmetric groups of one token and one head; KIVI quantizes values this way
and keys per channel, which a pure append cannot do); attention reads the dequantized values. The model
trains exactly as its base (same parameters, same names, so paired seeds start both alike); in
evaluation, full passes read keys and values through the same quantization (a scratch cache), so
decoding equals the full pass and the quality measured is the quality with an int8 cache.
Stated error: each element is off by at most half a step of its stored scale; that is absmax / 254 of
its group plus 2^-10 of absmax from the float16 rounding of the scale, while absmax / 127 is a normal
float16 (above 6.1e-5; below, the scale is subnormal and coarser).
Reference: Hooper et al. 2024 (KVQuant, arXiv:2401.18079); Liu et al. 2024 (KIVI, arXiv:2402.02750).
Cache per token per layer: the variant's elements x 1 byte + 2 bytes per (tensor, head) group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import Attention, AttentionConfig, CacheSpec, Supports, TokenCache, VariantSpec

SCALE_DTYPE = torch.float16


def quantize(x_BHTK: Tensor) -> tuple[Tensor, Tensor]:
    """(int8 values, float16 scales (B, H, T, 1)) of `x_BHTK`, one scale per vector of the last dimension."""
    absmax = x_BHTK.detach().abs().amax(dim=-1, keepdim=True).float()
    scale = (absmax / 127).to(SCALE_DTYPE).clamp_min(torch.finfo(SCALE_DTYPE).tiny)
    q = torch.round(x_BHTK.float() / scale.float()).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize(q: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    return q.to(dtype) * scale.to(dtype)


class Int8TokenCache(TokenCache):
    """A `TokenCache` that holds int8 values and a float16 scale per cached vector; it reads back dequantized."""

    def __init__(
        self,
        shapes: Sequence[tuple[int, int]],
        batch_size: int,
        capacity: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        window: int | None = None,
    ) -> None:
        super().__init__(shapes, batch_size, capacity, dtype, device, window)
        self.scales = [torch.ones((batch_size, heads, self.slots, 1), dtype=SCALE_DTYPE, device=device)
                       for heads, _ in self.shapes]  # fmt: skip

    def _buffer(self, batch: int, heads: int, dim: int, device: torch.device | str) -> Tensor:
        return torch.zeros((batch, heads, self.slots, dim), dtype=torch.int8, device=device)

    def _store(self, kind: int, index: slice | Tensor, new_BHTK: Tensor) -> None:
        self.tensors[kind][:, :, index], self.scales[kind][:, :, index] = quantize(new_BHTK)

    def _load(self, kind: int, index: slice | Tensor) -> Tensor:
        return dequantize(self.tensors[kind][:, :, index], self.scales[kind][:, :, index], self.dtype)

    def _roundtrip(self, new_BHTK: Tensor) -> Tensor:
        return dequantize(*quantize(new_BHTK), new_BHTK.dtype)

    def held(self) -> list[Tensor]:
        return [*self.tensors, *self.scales]


@dataclasses.dataclass(frozen=True)
class ReadThroughInt8:
    """A forward pre-hook: a full pass in evaluation reads K and V through a scratch int8 cache, as
    decoding would. A hook, not a wrapper module, so the variant's parameters keep their names and
    `share_initial_values` pairs them with the baseline's: an int8 variant trains exactly as its base."""

    spec: Int8Cached
    config: AttentionConfig

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if module.training or kwargs.get("cache") is not None:
            return None
        B, T, _ = args[0].shape
        scratch = self.spec.new_cache(self.config, B, T, args[0].dtype, args[0].device)
        return args, {**kwargs, "cache": scratch}


@dataclasses.dataclass(frozen=True)
class Int8Cached(VariantSpec):
    """`base` with its cache held in int8 (see the module docstring)."""

    base: VariantSpec
    id: str = ""
    display_name: str = ""
    version: str = "1"
    summary: str = ""
    #: a float rounding between the full pass and decoding can move a value across a quantization boundary
    #: (one step, absmax / 127 of its group), which moves logits by far more than fp32 noise
    decode_atol = 1e-2

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", self.id or f"{self.base.id}-int8")
        object.__setattr__(self, "display_name", self.display_name or f"{self.base.display_name} int8")
        object.__setattr__(self, "summary", self.summary or f"{self.base.display_name} with an int8 KV cache")

    @property
    def supports(self) -> Supports:  # type: ignore[override]
        return dataclasses.replace(self.base.supports, non_causal=False)  # a cache option: where a model decodes

    @property
    def reference(self) -> str:  # type: ignore[override]
        own = "Hooper et al. 2024 (KVQuant, arXiv:2401.18079); Liu et al. 2024 (KIVI, arXiv:2402.02750)"
        return f"{own}; {self.base.reference}" if self.base.reference else own

    def check(self, config: AttentionConfig) -> str | None:
        if not self.base.supports.decoding:
            return f"{self.base.display_name} does not decode, so it has no cache to quantize"
        reason = self.base.check(config)
        if reason is None and not isinstance(self.base.new_cache(config, 1, 1, device="meta"), TokenCache):
            return f"{self.base.display_name} keeps a state, not tokens: there are no cached vectors to quantize"
        return reason

    def mechanism(self, config: AttentionConfig) -> tuple[object, ...] | None:
        return ("int8-cache", self.base.mechanism(config) or self.base.id)

    def trains_as(self) -> str:
        return self.base.id  # the same parameters and training; only evaluation reads through int8

    def build(self, config: AttentionConfig) -> Attention:
        return self.build_layers(config, 1)[0]

    def build_layers(self, config: AttentionConfig, n_layers: int) -> list[Attention]:
        layers = self.base.build_layers(config, n_layers)
        for layer in layers:
            layer.register_forward_pre_hook(ReadThroughInt8(self, config), with_kwargs=True)
        return layers

    def _base_cache(self, config: AttentionConfig) -> TokenCache:
        cache = self.base.new_cache(config, 1, 1, device="meta")
        if not isinstance(cache, TokenCache):  # a constant state has no per-token vectors to quantize
            raise TypeError(f"{self.base.id!r} keeps a {type(cache).__name__}, not tokens: int8 quantizes a TokenCache")
        return cache

    def cache_spec(self, config: AttentionConfig) -> CacheSpec:
        spec, groups = self.base.cache_spec(config), sum(heads for heads, _ in self._base_cache(config).shapes)
        scale_bytes = groups * SCALE_DTYPE.itemsize
        formula = f"{spec.elements_per_token} x 1 B + {groups} scales x {SCALE_DTYPE.itemsize} B"
        formula += f", last {spec.window} tokens" if spec.window else ""
        formula += f" / {spec.share_layers} layers" if spec.share_layers > 1 else ""
        return dataclasses.replace(spec, element_bytes=1, scale_bytes_per_token=scale_bytes, formula=formula)

    def new_cache(
        self,
        config: AttentionConfig,
        batch_size: int,
        capacity: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> TokenCache:
        base = self._base_cache(config)
        return Int8TokenCache(base.shapes, batch_size, capacity, dtype, device, base.window)

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "base": self.base.id, "base_version": self.base.version, "cache": "int8"}


def int8_cache(base: VariantSpec) -> Int8Cached:
    """`base` with an int8 KV cache, as variant `<base id>-int8`."""
    return Int8Cached(base)
