"""Cost figures of a variant: parameters, training FLOPs, KV-cache bytes declared by its `CacheSpec` and measured in
decoding."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from bench.measure.decoder import DecoderConfig
    from bench_variants.base import AttentionConfig, VariantSpec

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "float32": "float32", "float16": "float16"}


def parse_dtype(name: str) -> torch.dtype:
    """'fp16', 'bf16', 'fp32' (or torch names) to a torch dtype."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"Unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    dtype: torch.dtype = getattr(torch, DTYPES[name])
    return dtype


def reduction_vs(spec: VariantSpec, baseline: VariantSpec, config: AttentionConfig) -> float:
    """Fraction of the baseline's cache this variant saves (0.5 = half), dtype-independent."""
    own = spec.bytes_per_token_per_layer(config)
    base = baseline.bytes_per_token_per_layer(config)
    return 1.0 - own / base


def parameter_count(spec: VariantSpec, config: DecoderConfig) -> int:
    """Exact parameter count of the reference decoder built around `spec`, on the meta device (no memory)."""
    import torch

    from bench.measure.decoder import reference_decoder

    with torch.device("meta"):
        model = reference_decoder().build(config, spec)
    return sum(p.numel() for p in model.parameters())


def non_embedding_parameters(net: torch.nn.Module) -> int:
    """The model's parameters less its embedding tables (`nn.Embedding`), each shared tensor counted once."""
    import torch

    tables = {id(m.weight) for m in net.modules() if isinstance(m, torch.nn.Embedding)}
    return sum(p.numel() for p in net.parameters() if id(p) not in tables)


def training_flops_per_token(non_embedding: int, n_layers: int, n_heads: int, head_dim: int, context: int) -> int:
    """Training FLOPs per token by the standard count (as torchtitan computes it): 6N for the forward and
    backward matrix products of N non-embedding parameters, plus 12 x layers x heads x head_dim x context for
    the attention scores and their weighted sum over a full window."""
    return 6 * non_embedding + 12 * n_layers * n_heads * head_dim * context


@dataclass(frozen=True)
class DecodeCheck:
    """One measured decode: bytes held by the caches against the declared figure, and logits agreement."""

    variant: str
    bytes_held: int
    bytes_derived: int
    max_abs_diff: float
    n_tokens: int = 0
    seconds: float = 0.0  # decoding the n_tokens one at a time, batch 1

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def bytes_match(self) -> bool:
        return self.bytes_held == self.bytes_derived


def measure_decoding(spec: VariantSpec, config: DecoderConfig, n_tokens: int, seed: int = 0) -> DecodeCheck:
    """Decode `n_tokens` one at a time through a real cache and compare with the full causal pass (fp32)."""
    import torch

    from bench.measure.decoder import reference_decoder

    decoder = reference_decoder()
    torch.manual_seed(seed)
    model = decoder.build(config, spec).eval()
    idx_1T = torch.randint(config.vocab_size, (1, n_tokens))
    with torch.no_grad():
        full_1TV = model(idx_1T)
        caches = model.new_cache(batch_size=1, capacity=n_tokens)
        start = time.perf_counter()
        steps = [model(idx_1T[:, t : t + 1], caches=caches) for t in range(n_tokens)]
        seconds = time.perf_counter() - start
    step_1TV = torch.cat(steps, dim=1)
    held = decoder.held_bytes(caches)
    derived = spec.kv_cache_bytes(config.attention, config.n_layers, n_tokens, torch.float32)
    diff = (full_1TV - step_1TV).abs().max().item()
    return DecodeCheck(spec.id, held, derived, diff, n_tokens, seconds)
