"""The reference decoder: what the core needs of a backbone to measure KV caches by decoding.

A decoder-only model built around any variant, run once over a whole sequence and once token by token
through the variant's cache, so that the bytes the cache holds and the logits can be compared with
what the variant declares. The core reaches it through this contract only; the implementation is a
plugin's, found through the `bench.decoder` entry point (the built-in one is the tasks package's GPT
backbone, `bench_tasks.backbones.gpt:REFERENCE_DECODER`).
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from torch import Tensor

    from bench_variants.base import AttentionConfig, LayerCache, VariantSpec

GROUP = "bench.decoder"


class DecoderConfig(Protocol):
    """A decoder's shape: what the cache arithmetic reads."""

    @property
    def vocab_size(self) -> int: ...
    @property
    def context(self) -> int: ...
    @property
    def n_layers(self) -> int: ...
    @property
    def d_model(self) -> int: ...
    @property
    def n_heads(self) -> int: ...
    @property
    def attention(self) -> AttentionConfig: ...


class ReferenceDecoder(Protocol):
    """Builds decoders around variants and reads what their caches hold."""

    def config(self, *, vocab_size: int, context: int, n_layers: int, d_model: int, n_heads: int) -> DecoderConfig:
        """A decoder of this shape (no dropout, biases on)."""
        ...

    def study_300m(self) -> DecoderConfig:
        """The study's 300M model: 20 layers, width 1024, 16 heads of 64, context 2,048."""
        ...

    def build(self, config: DecoderConfig, variant: VariantSpec) -> Any:
        """A `torch.nn.Module`: `model(idx_BT)` gives logits; `model(idx_BT, caches=caches)` decodes through
        `caches = model.new_cache(batch_size=, capacity=)`, one `LayerCache` per layer."""
        ...

    def held_bytes(self, caches: list[LayerCache]) -> int:
        """Bytes the caches hold, a cache shared between layers counted once."""
        ...

    def lm_loss(self, logits_BTV: Tensor, targets_BT: Tensor) -> Tensor:
        """Mean next-token cross-entropy."""
        ...


@functools.cache
def reference_decoder() -> ReferenceDecoder:
    """The installed reference decoder; a clear error where none is installed."""
    found = list(entry_points(group=GROUP))
    if not found:
        raise RuntimeError(
            f"no reference decoder is installed (entry point group {GROUP!r}); the tasks package provides one: "
            "reinstall bench with `pip install -e .` (or `make setup`)"
        )
    decoder: ReferenceDecoder = sorted(found, key=lambda ep: ep.name)[0].load()
    return decoder
