"""One cache contract for every kind of cache: bounded, shared across layers, latent, quantized, constant.

The registry-wide tests (test_kv_cache.py) check declared = held bytes and decoding = full pass for
every variant; these check what only some caches do: a ring that wraps, layers that share a cache,
int8's error bound, and the declared formula for each kind of cache against hand-computed figures.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import Tensor

from bench.measure.costs import measure_decoding
from bench_tasks.backbones.gpt import GPT, GPTConfig, held_bytes
from bench_variants.base import Attention, AttentionConfig, CacheSpec, LayerCache, Supports, TokenCache, VariantSpec
from bench_variants.int8 import Int8TokenCache, dequantize, int8_cache, quantize
from bench_variants.presets import CLA, MLA, MQA_CLA, QKV, SWA, TIED_KV, TIED_KV_CLA, TIED_KV_INT8

F16 = torch.float16


@pytest.mark.parametrize(
    ("spec", "tokens", "layers", "expected"),
    [
        (CacheSpec(64), 10, 3, 3 * 10 * 64 * 2),  # a per-token cache
        (CacheSpec(64, window=4), 10, 3, 3 * 4 * 64 * 2),  # bounded: 4 tokens whatever the context
        (CacheSpec(64, window=4), 3, 3, 3 * 3 * 64 * 2),  # fewer tokens than the window
        (CacheSpec(64, share_layers=2), 10, 3, 2 * 10 * 64 * 2),  # 3 layers, 2 caches
        (CacheSpec(64, element_bytes=1, scale_bytes_per_token=8), 10, 2, 2 * 10 * (64 + 8)),  # int8 + scales
        (CacheSpec(0, state_elements=100), 1_000, 2, 2 * 100 * 2),  # a constant state
    ],
    ids=["per-token", "bounded", "bounded-short", "shared", "quantized", "state"],
)
def test_declared_bytes_follow_the_formula(spec: CacheSpec, tokens: int, layers: int, expected: int) -> None:
    assert spec.bytes(tokens, layers, F16) == expected
    assert spec.bytes(tokens, layers, F16, batch_size=3) == 3 * expected


def test_the_study_variants_keep_their_exact_figures() -> None:
    config = GPTConfig.study_300m().block.attention  # H = 16, d_head = 64
    assert QKV.bytes_per_token_per_layer(config) == 2 * 16 * 64 * 2
    assert TIED_KV.kv_cache_bytes(config, 20, 2_048) == 16 * 64 * 2 * 20 * 2_048


def test_the_new_designs_declare_their_savings() -> None:
    config = GPTConfig.study_300m().block.attention
    qkv = QKV.bytes_per_token_per_layer(config)
    assert MLA.bytes_per_token_per_layer(config) == (256 + 32) * 2  # d_c = 4 d_head, d_r = d_head / 2
    assert CLA.bytes_per_token_per_layer(config) == qkv / 2
    assert TIED_KV_CLA.bytes_per_token_per_layer(config) == qkv / 4
    assert MQA_CLA.bytes_per_token_per_layer(config) == 2 * 64 * 2 / 2
    assert TIED_KV_INT8.bytes_per_token_per_layer(config) == 16 * 64 + 16 * 2  # 1 B an element, a scale a head
    assert SWA.kv_cache_bytes(config, 20, 32_768) == SWA.kv_cache_bytes(config, 20, SWA.window)  # bounded
    assert QKV.kv_cache_bytes(config, 20, 32_768) == 2_048 * QKV.kv_cache_bytes(config, 20, 16)


def _model(spec: object, layers: int = 4, context: int = 40) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=31, context=context, n_layers=layers, d_model=32, n_heads=4), spec).eval()  # type: ignore[arg-type]


@pytest.mark.parametrize("window", [1, 3, 7])
def test_a_sliding_window_ring_wraps_and_still_decodes_as_the_full_pass(window: int) -> None:
    spec = dataclasses.replace(SWA, window=window)
    result = measure_decoding(spec, GPTConfig(31, 40, 3, 32, 4), n_tokens=40)
    assert result.max_abs_diff < 1e-5 and result.bytes_held == result.bytes_derived
    assert result.bytes_held == 3 * window * 2 * 32 * 4  # 3 layers x window tokens x K, V of width 32 x fp32


def test_a_sliding_window_prefill_longer_than_the_window_then_decoding() -> None:
    model, idx = _model(dataclasses.replace(SWA, window=5)), torch.randint(31, (2, 30))
    with torch.no_grad():
        full = model(idx)
        caches = model.new_cache(batch_size=2, capacity=30)
        parts = [model(idx[:, :12], caches=caches), model(idx[:, 12:20], caches=caches)]
        parts += [model(idx[:, t : t + 1], caches=caches) for t in range(20, 30)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-5)


def test_cross_layer_attention_shares_one_cache_and_one_kv_projection_per_group() -> None:
    model = _model(CLA, layers=5)
    caches = model.new_cache(batch_size=1, capacity=8)
    assert [id(c) for c in caches] == [id(caches[i]) for i in (0, 0, 2, 2, 4)]
    assert len({id(c) for c in caches}) == 3  # ceil(5 / 2)
    widths = [block.attn.in_proj.out_features for block in model.blocks]
    assert widths == [96, 32, 96, 32, 96]  # leaders project Q, K, V; followers Q only
    qkv = _model(QKV, layers=5)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in qkv.parameters())


def test_a_cross_layer_follower_reads_its_leaders_keys() -> None:
    """Change the leader's key projection: the follower's output moves too (its own has none)."""
    model, idx = _model(CLA, layers=2), torch.randint(31, (1, 6))
    with torch.no_grad():
        before = model(idx)
        model.blocks[0].attn.in_proj.weight[32:64].mul_(3)  # the leader's K rows
        after = model(idx)
    assert not torch.allclose(before, after)


def test_int8_error_is_within_its_stated_bound() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 50, 16) * torch.logspace(-6, 2, 50)[None, None, :, None]
    q, scale = quantize(x)
    absmax, step = x.abs().amax(-1, keepdim=True), scale.float()
    error = (dequantize(q, scale, torch.float32) - x).abs()
    assert q.dtype == torch.int8 and scale.dtype == F16
    assert (error <= torch.maximum(step / 2, absmax - 127 * step) * (1 + 1e-6)).all()  # any magnitude
    normal = absmax / 127 >= torch.finfo(F16).tiny  # a scale that is a normal float16
    assert (error <= absmax / 254 + absmax * 2**-10)[normal.expand_as(error)].all()


def test_int8_cache_holds_int8_values_and_float16_scales() -> None:
    cache = Int8TokenCache([(2, 8), (2, 8)], batch_size=1, capacity=4)
    k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8)
    k_read, _ = cache.append(k, v)
    assert cache.nbytes == 2 * (2 * 4 * 8 * 1 + 2 * 4 * 2)  # two tensors: int8 values and a scale per head
    torch.testing.assert_close(k_read, k, rtol=0, atol=float(k.abs().max()) / 127)


def test_int8_decoding_is_close_to_the_unquantized_model() -> None:
    """Q-K=V with an int8 cache decodes within the quantization's error of Q-K=V in full precision."""
    idx = torch.randint(31, (1, 24))
    with torch.no_grad():
        exact = _model(TIED_KV, layers=2)(idx)
        model = _model(TIED_KV_INT8, layers=2)
        caches = model.new_cache(batch_size=1, capacity=24)
        decoded = torch.cat([model(idx[:, t : t + 1], caches=caches) for t in range(24)], dim=1)
    diff = (decoded - exact).abs().max().item()
    assert 0 < diff < 5e-2  # the same weights; only the cache's rounding differs


def test_int8_crosses_any_decoding_variant_but_refuses_one_without_a_cache() -> None:
    from bench_variants.presets import TIED_QK_POS

    config = GPTConfig(31, 24, 2, 32, 4).block.attention
    assert int8_cache(MLA).check(config) is None
    assert "no cache to quantize" in (int8_cache(TIED_QK_POS).check(config) or "")
    result = measure_decoding(int8_cache(dataclasses.replace(SWA, window=4)), GPTConfig(31, 24, 2, 32, 4), 24)
    assert result.bytes_held == result.bytes_derived and result.max_abs_diff < 1e-2


def test_a_shared_cache_counts_once() -> None:
    caches = _model(MQA_CLA, layers=4).new_cache(batch_size=1, capacity=5)
    assert held_bytes(caches) == 2 * caches[0].nbytes
    assert isinstance(caches[0], TokenCache)


def test_decoder_designs_are_n_a_on_tasks_that_are_not_causal() -> None:
    from bench.registry import tasks

    registry = tasks()
    reverse, lm = registry.get("reverse"), registry.get("lm")
    reason = reverse.check(MLA, reverse.config("smoke"))
    assert reason is not None and "causal tasks only" in reason
    assert lm.check(MLA, lm.config("smoke")) is None


def test_an_int8_variant_trains_as_its_base_and_evaluates_through_int8() -> None:
    """Same parameter names (so paired seeds start it from its base's values), the same training pass;
    only evaluation reads K and V through the int8 cache."""
    from bench_variants.presets import QKV_INT8

    base, int8 = _model(QKV, layers=2), _model(QKV_INT8, layers=2)
    assert list(base.state_dict()) == list(int8.state_dict())
    int8.load_state_dict(base.state_dict())
    idx = torch.randint(31, (2, 12))
    base.train(), int8.train()
    torch.testing.assert_close(int8(idx), base(idx), rtol=0, atol=0)
    base.eval(), int8.eval()
    with torch.no_grad():
        diff = (int8(idx) - base(idx)).abs().max().item()
    assert 0 < diff < 5e-2


# --- a constant-size state (linear attention) on the same contract: a variant the tests define -------


class StateCache(LayerCache):
    """Causal linear attention's running sums: S = sum phi(k) v^T (B, H, d, d) and z = sum phi(k) (B, H, d)."""

    def __init__(self, batch: int, heads: int, head_dim: int, dtype: torch.dtype) -> None:
        self.dtype, self.length = dtype, 0
        self.s_BHKK = torch.zeros(batch, heads, head_dim, head_dim, dtype=dtype)
        self.z_BHK = torch.zeros(batch, heads, head_dim, dtype=dtype)

    def held(self) -> list[torch.Tensor]:
        return [self.s_BHKK, self.z_BHK]


class LinearAttention(Attention):
    """softmax replaced by phi(q) . phi(k), phi = elu + 1 (Katharopoulos et al. 2020): causal only."""

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = config.n_heads, config.head_dim
        self.qkv = torch.nn.Linear(config.d_model, 3 * config.d_model)
        self.out = torch.nn.Linear(config.d_model, config.d_model)

    def forward(
        self, x_BTD: Tensor, *, causal: bool = False, pad_mask_BT: Tensor | None = None, cache: LayerCache | None = None
    ) -> Tensor:
        B, T, D = x_BTD.shape
        q, k, v = (t.view(B, T, self.heads, self.head_dim).transpose(1, 2) for t in self.qkv(x_BTD).chunk(3, -1))
        q, k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
        s_BHTKK = torch.cumsum(k[..., :, None] * v[..., None, :], dim=2)  # sums up to each token
        z_BHTK = torch.cumsum(k, dim=2)
        if isinstance(cache, StateCache):  # carry the sums of the tokens before these
            s_BHTKK, z_BHTK = s_BHTKK + cache.s_BHKK[:, :, None], z_BHTK + cache.z_BHK[:, :, None]
            cache.s_BHKK.copy_(s_BHTKK[:, :, -1]), cache.z_BHK.copy_(z_BHTK[:, :, -1])
            cache.length += T
        y = (q[..., None, :] @ s_BHTKK).squeeze(-2) / (q * z_BHTK).sum(-1, keepdim=True)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class LinearSpec(VariantSpec):
    id, display_name, version = "linear", "Linear", "1"
    supports = Supports(key_padding=False, non_causal=False)

    def build(self, config: AttentionConfig) -> Attention:
        return LinearAttention(config)

    def cache_spec(self, config: AttentionConfig) -> CacheSpec:
        h, d = config.n_heads, config.head_dim
        return CacheSpec(0, state_elements=h * d * d + h * d, formula="H (d^2 + d) x b, whatever the context")

    def new_cache(
        self, config: AttentionConfig, batch_size: int, capacity: int, dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> LayerCache:  # fmt: skip
        return StateCache(batch_size, config.n_heads, config.head_dim, dtype)


def test_a_constant_state_is_declared_held_and_decoded_on_the_same_contract() -> None:
    spec = LinearSpec()
    for tokens in (5, 30):
        result = measure_decoding(spec, GPTConfig(31, 30, 2, 32, 4), n_tokens=tokens)
        assert result.max_abs_diff < 1e-5
        assert result.bytes_held == result.bytes_derived == 2 * (4 * 8 * 8 + 4 * 8) * 4  # 2 layers, fp32
    assert "no cached vectors" in (int8_cache(spec).check(GPTConfig(31, 30, 2, 32, 4).block.attention) or "")
