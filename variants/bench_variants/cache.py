"""The inference-cache contract: what a variant declares its cache holds, and the caches that hold it.

A variant declares its cache as a `CacheSpec`: bytes as a function of tokens, layers, batch and dtype,
whatever the cache's shape:

    bytes = batch x ceil(layers / share_layers) x (min(tokens, window) x token_bytes + state_elements x b)
    token_bytes = elements_per_token x (element_bytes or b) + scale_bytes_per_token

with b the bytes of one element of the compute dtype. That one formula covers a per-head K/V cache
(elements = tensors x kv_heads x head_dim), a latent cache (MLA: d_c + d_r), a bounded cache (sliding
window: `window` tokens at most), a cache shared across layers (CLA: `share_layers`), a quantized cache
(int8: 1 byte an element, plus its per-group scales) and a constant-size state (linear attention:
`state_elements`, no per-token part).

The cache objects (`TokenCache`, its `KVCache` form, `Int8TokenCache`) expose `nbytes`, the bytes they
actually hold, which the harness checks against the declaration for every variant.

This module depends on torch only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def dtype_bytes(dtype: torch.dtype) -> int:
    """Bytes per element of `dtype`."""
    return torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True)
class CacheSpec:
    """What one variant's inference cache holds; see the module docstring for the formula.

    Attributes:
        elements_per_token: Elements cached per token by one cached layer (0 for a constant state).
        window: At most this many tokens held (a bounded cache); None: every token.
        share_layers: Layers that read one layer's cache (cross-layer sharing); 1: a cache per layer.
        element_bytes: Bytes per cached element when fixed by the cache (int8: 1); None: the compute dtype's.
        scale_bytes_per_token: Extra bytes per token and cached layer (a quantized cache's scales).
        state_elements: Elements per cached layer held whatever the context (a recurrent state).
        formula: The cache per token per layer in symbols, for `bench list`.
    """

    elements_per_token: int
    window: int | None = None
    share_layers: int = 1
    element_bytes: int | None = None
    scale_bytes_per_token: int = 0
    state_elements: int = 0
    formula: str = ""

    def __post_init__(self) -> None:
        if self.elements_per_token < 0 or self.state_elements < 0 or self.scale_bytes_per_token < 0:
            raise ValueError(f"cache sizes must not be negative: {self}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"a bounded cache needs a window of at least 1 token, got {self.window}")
        if self.share_layers < 1:
            raise ValueError(f"share_layers must be at least 1, got {self.share_layers}")

    def cached_layers(self, n_layers: int) -> int:
        """How many of `n_layers` layers hold a cache of their own."""
        return math.ceil(n_layers / self.share_layers)

    def held_tokens(self, n_tokens: int) -> int:
        return n_tokens if self.window is None else min(n_tokens, self.window)

    def token_bytes(self, dtype: torch.dtype = torch.float16) -> int:
        """Bytes one cached layer holds per token."""
        per_element = self.element_bytes or dtype_bytes(dtype)
        return self.elements_per_token * per_element + self.scale_bytes_per_token

    def bytes(self, n_tokens: int, n_layers: int, dtype: torch.dtype = torch.float16, batch_size: int = 1) -> int:
        """Bytes held by the caches of `n_layers` layers after `n_tokens` tokens of `batch_size` sequences."""
        per_layer = self.held_tokens(n_tokens) * self.token_bytes(dtype) + self.state_elements * dtype_bytes(dtype)
        return batch_size * self.cached_layers(n_layers) * per_layer

    def bytes_per_token_per_layer(self, dtype: torch.dtype = torch.float16) -> int | float:
        """The cache's growth per token, per model layer (a shared cache's spread over the layers reading it)."""
        whole, rest = divmod(self.token_bytes(dtype), self.share_layers)
        return whole if not rest else self.token_bytes(dtype) / self.share_layers


@dataclass(frozen=True)
class CacheLayout:
    """A per-head K/V cache: `tensors_per_head` tensors (2: K and V; 1: the value is the key) of
    `kv_heads` heads of `head_dim` per token per layer.

    bytes/token/layer = tensors_per_head x kv_heads x head_dim x bytes per element.
    """

    tensors_per_head: int
    kv_heads: int
    head_dim: int

    def spec(self) -> CacheSpec:
        tensors = "K, V" if self.tensors_per_head == 2 else "K"
        return CacheSpec(
            self.tensors_per_head * self.kv_heads * self.head_dim,
            formula=f"{self.tensors_per_head} x {self.kv_heads} head{'s' * (self.kv_heads != 1)} x {self.head_dim} x b "
            f"({tensors})",
        )

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """(heads, dim) of each cached tensor."""
        return [(self.kv_heads, self.head_dim)] * self.tensors_per_head

    def bytes_per_token_per_layer(self, dtype: torch.dtype = torch.float16) -> int:
        return self.tensors_per_head * self.kv_heads * self.head_dim * dtype_bytes(dtype)

    def kv_cache_bytes(
        self, n_layers: int, n_tokens: int, dtype: torch.dtype = torch.float16, batch_size: int = 1
    ) -> int:
        """Bytes held by the cache of `n_layers` layers for `n_tokens` tokens of `batch_size` sequences."""
        return self.bytes_per_token_per_layer(dtype) * n_layers * n_tokens * batch_size


class LayerCache:
    """What one layer keeps between decoding steps: `length` tokens seen so far and the tensors it
    holds (`held`), whose bytes (`nbytes`) the harness checks against the variant's `CacheSpec`.
    `TokenCache` keeps tokens; a recurrent design keeps a constant state in a subclass of its own."""

    length: int = 0
    dtype: torch.dtype = torch.float32

    def held(self) -> list[Tensor]:
        """Every tensor the cache keeps between steps."""
        raise NotImplementedError(f"{type(self).__name__} must say which tensors it holds (held)")

    def append(self, *new_BHTK: Tensor) -> list[Tensor]:
        """Store new tokens and return what they attend over (`TokenCache`); a state cache has its own update."""
        raise TypeError(f"{type(self).__name__} keeps no tokens: this attention needs a TokenCache")

    def key_positions(self) -> Tensor:
        """The position of each key the last `append` returned."""
        raise TypeError(f"{type(self).__name__} keeps no tokens: this attention needs a TokenCache")

    @property
    def nbytes(self) -> int:
        """Bytes actually held by the cache's tensors."""
        return sum(t.numel() * t.element_size() for t in self.held())

    def fill_from(self, other: LayerCache) -> None:
        """Hold what `other` holds, its batch of one copied to every sequence of this cache's batch."""
        for dst_BX, src_1X in zip(self.held(), other.held(), strict=True):
            dst_BX.copy_(src_1X.expand_as(dst_BX))
        self.length = other.length


class TokenCache(LayerCache):
    """One layer's preallocated inference cache: tensors of (B, heads, slots, dim), one per `shapes` entry.

    Preallocation makes the memory held exactly the declared bytes, and appending a token a copy rather
    than a reallocation. With a `window`, the slots form a ring of `window` tokens: the oldest token is
    overwritten, and `key_positions` says which token each returned key is. `length` counts every token
    appended (the position of the next one), held or not.
    """

    def __init__(
        self,
        shapes: Sequence[tuple[int, int]],
        batch_size: int,
        capacity: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        window: int | None = None,
    ) -> None:
        self.shapes, self.capacity, self.window, self.dtype = list(shapes), capacity, window, dtype
        self.slots = capacity if window is None else min(capacity, window)
        self.length = 0
        self.tensors = [self._buffer(batch_size, heads, dim, device) for heads, dim in self.shapes]
        self._positions = torch.full((self.slots,), -1, dtype=torch.long, device=device)
        self._returned_positions = self._positions[:0]

    def _buffer(self, batch: int, heads: int, dim: int, device: torch.device | str) -> Tensor:
        return torch.zeros((batch, heads, self.slots, dim), dtype=self.dtype, device=device)

    def append(self, *new_BHTK: Tensor) -> list[Tensor]:
        """Store the new tokens' tensors; return what every new token may attend over.

        Args:
            *new_BHTK: One tensor per cached kind, each (B, heads, T_new, dim).

        Returns:
            (B, heads, t_k, dim) per kind: the tokens held before, then the new ones (`key_positions` gives
            each one's position; in order 0..length-1 unless the cache is a ring).
        """
        if len(new_BHTK) != len(self.tensors):
            raise ValueError(f"cache holds {len(self.tensors)} tensors per token, got {len(new_BHTK)}")
        t_new = new_BHTK[0].shape[2]
        start, end = self.length, self.length + t_new
        if end > self.capacity:
            raise ValueError(
                f"KV cache full: {start} + {t_new} tokens exceed its capacity of {self.capacity}; "
                "allocate the cache with a larger capacity"
            )
        self.length = end
        if self.window is None:
            for kind, new in enumerate(new_BHTK):
                self._store(kind, slice(start, end), new)
            self._returned_positions = torch.arange(end, device=self._positions.device)
            return [self._load(kind, slice(0, end)) for kind in range(len(self.tensors))]
        held = torch.nonzero(self._positions >= 0).flatten()
        out = [torch.cat([self._load(k, held), self._roundtrip(new)], dim=2) for k, new in enumerate(new_BHTK)]
        new_positions = torch.arange(start, end, device=self._positions.device)
        self._returned_positions = torch.cat([self._positions[held], new_positions])
        keep = new_positions[-self.slots :]  # only the last `slots` new tokens can be attended to later
        for kind, new in enumerate(new_BHTK):
            self._store(kind, keep % self.slots, new[:, :, t_new - len(keep) :])
        self._positions[keep % self.slots] = keep
        return out

    def fill_from(self, other: LayerCache) -> None:
        super().fill_from(other)
        if isinstance(other, TokenCache):
            self._positions.copy_(other._positions)

    def key_positions(self) -> Tensor:
        """(t_k,) the position of each key the last `append` returned."""
        return self._returned_positions

    def _store(self, kind: int, index: slice | Tensor, new_BHTK: Tensor) -> None:
        self.tensors[kind][:, :, index] = new_BHTK

    def _load(self, kind: int, index: slice | Tensor) -> Tensor:
        return self.tensors[kind][:, :, index]

    def _roundtrip(self, new_BHTK: Tensor) -> Tensor:
        """What reading `new_BHTK` back from the cache gives (a quantized cache loses precision)."""
        return new_BHTK

    def held(self) -> list[Tensor]:
        """The cached tensors (a ring's positions are bookkeeping, not cache)."""
        return self.tensors


class KVCache(TokenCache):
    """One layer's K/V cache, laid out by a `CacheLayout`: `tensors_per_head` tensors of (B, kv_heads, capacity, hd)."""

    def __init__(
        self,
        layout: CacheLayout,
        batch_size: int,
        capacity: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(layout.shapes, batch_size, capacity, dtype, device)
        self.layout = layout

    @classmethod
    def for_model(
        cls,
        layout: CacheLayout,
        n_layers: int,
        batch_size: int,
        capacity: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> list[KVCache]:
        """One cache per layer."""
        return [cls(layout, batch_size, capacity, dtype, device) for _ in range(n_layers)]
