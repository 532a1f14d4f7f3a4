"""Incremental decoding through the real cache, and the cache's bytes against the declared formula."""

from __future__ import annotations

import pytest
import torch

from bench.measure.costs import measure_decoding
from bench_tasks.backbones.gpt import GPT, GPTConfig, held_bytes
from bench_variants.base import VariantSpec
from tests.conftest import small_config_for

# (heads, head dim, layers): several shapes so a layout that is only right by accident fails
SHAPES = [(4, 8, 2), (8, 4, 3), (16, 2, 1)]


def _gpt_config(spec: VariantSpec, heads: int, head_dim: int, layers: int) -> GPTConfig | None:
    config = GPTConfig(vocab_size=37, context=24, n_layers=layers, d_model=heads * head_dim, n_heads=heads)
    return None if spec.check(config.block.attention) else config


def test_decoding_matches_the_full_causal_pass(spec: VariantSpec) -> None:
    if not spec.supports.decoding:
        pytest.skip(f"{spec.id} declares no incremental decoding")
    checked = 0
    for heads, head_dim, layers in SHAPES:
        config = _gpt_config(spec, heads, head_dim, layers)
        if config is None:
            continue
        result = measure_decoding(spec, config, n_tokens=20)
        diff = result.max_abs_diff
        assert diff <= spec.decode_atol, f"{spec.id} at H={heads}: decode differs by {diff}"
        assert result.bytes_held == result.bytes_derived
        checked += 1
    assert checked >= 1


def test_prefill_then_decode_matches(spec: VariantSpec) -> None:
    """A multi-token prefill into the cache, then single steps: the offset causal mask must be right."""
    if not spec.supports.decoding:
        pytest.skip(f"{spec.id} declares no incremental decoding")
    attn = small_config_for(spec)
    config = GPTConfig(vocab_size=29, context=16, n_layers=2, d_model=attn.d_model, n_heads=attn.n_heads)
    model = GPT(config, spec).eval()
    idx = torch.randint(29, (2, 12))
    with torch.no_grad():
        full = model(idx)
        caches = model.new_cache(batch_size=2, capacity=12)
        parts = [model(idx[:, :5], caches=caches), model(idx[:, 5:9], caches=caches)]
        parts += [model(idx[:, t : t + 1], caches=caches) for t in range(9, 12)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=spec.decode_atol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_bytes_held_equal_declared_bytes(spec: VariantSpec, dtype: torch.dtype) -> None:
    if not spec.supports.decoding:
        pytest.skip(f"{spec.id} declares no incremental decoding")
    for heads, head_dim, layers in SHAPES:
        config = _gpt_config(spec, heads, head_dim, layers)
        if config is None:
            continue
        model = GPT(config, spec).eval().to(dtype)
        caches = model.new_cache(batch_size=3, capacity=10)
        with torch.no_grad():
            for _ in range(10):
                model(torch.randint(37, (3, 1)), caches=caches)
        held = held_bytes(caches)
        declared = spec.kv_cache_bytes(config.block.attention, layers, 10, dtype, batch_size=3)
        assert held == declared
        assert all(c.length == 10 for c in caches)


def test_cache_overflow_is_a_clear_error() -> None:
    from bench_variants.presets import QKV

    model = GPT(GPTConfig(vocab_size=11, context=8, n_layers=1, d_model=16, n_heads=2), QKV).eval()
    caches = model.new_cache(batch_size=1, capacity=2)
    with torch.no_grad(), pytest.raises(ValueError, match="capacity of 2"):
        model(torch.zeros(1, 3, dtype=torch.long), caches=caches)
