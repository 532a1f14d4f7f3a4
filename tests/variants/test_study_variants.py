"""Exact properties of the study's grid: symmetry, equivalences, the convex hull, the "+" fold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench_variants import presets as P
from bench_variants.base import AttentionConfig, replace, sinusoid_1d, sinusoid_relative
from bench_variants.grid import SharedProjectionAttention, SharedProjectionVariant, Tie
from tests.conftest import ALL_SPECS

GRID = [s for s in ALL_SPECS if isinstance(s, SharedProjectionVariant)]
CONFIG = AttentionConfig(d_model=32, n_heads=4)


def _build(spec: SharedProjectionVariant, config: AttentionConfig = CONFIG) -> SharedProjectionAttention:
    module = spec.build(config)
    assert isinstance(module, SharedProjectionAttention)
    return module


def _copy_weights(src: nn.Module, dst: nn.Module) -> None:
    dst.load_state_dict(src.state_dict())


def test_every_study_variant_is_registered() -> None:
    names = {s.display_name for s in GRID}
    expected = {"QKV", "Q=K-V", "Q-K=V", "Q=K=V", "(Q=K-V)+", "(Q=K=V)+", "GQA-4", "MQA", "Q-GQA-4", "Q-MQA"}
    assert expected <= names


@pytest.mark.parametrize("spec", [s for s in GRID if s.tie.query_is_key], ids=lambda s: s.id)
def test_tied_query_key_scores(spec: SharedProjectionVariant) -> None:
    """Q=K makes pre-softmax scores exactly symmetric; the "+" correction's bias must break that."""
    module = _build(spec)
    if spec.positional_channels:
        with torch.no_grad():
            module.pos_weight.normal_()
    s_BHTT = module.scores(torch.randn(2, 9, 32))
    asymmetry = (s_BHTT - s_BHTT.transpose(-1, -2)).abs().max().item()
    if spec.positional_channels and spec.plus_bias:
        assert asymmetry > 1e-2
    else:
        assert asymmetry == 0.0


@pytest.mark.parametrize("spec", [s for s in GRID if not s.tie.query_is_key], ids=lambda s: s.id)
def test_separate_query_scores_are_not_symmetric(spec: SharedProjectionVariant) -> None:
    config = AttentionConfig(d_model=64, n_heads=8)
    if spec.check(config):
        pytest.skip(spec.check(config))
    s_BHTT = _build(spec, config).scores(torch.randn(2, 9, 64))
    assert (s_BHTT - s_BHTT.transpose(-1, -2)).abs().max().item() > 1e-3


def test_qkv_equals_torch_multihead_attention() -> None:
    ours = _build(P.QKV)
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(ours.in_proj.weight)
        mha.in_proj_bias.copy_(ours.in_proj.bias)
        mha.out_proj.weight.copy_(ours.out_proj.weight)
        mha.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(3, 10, 32)
    pad = torch.zeros(3, 10, dtype=torch.bool)
    pad[1, 6:] = True
    expected, _ = mha(x, x, x, key_padding_mask=pad, need_weights=False)
    torch.testing.assert_close(ours(x, pad_mask_BT=pad), expected, rtol=1e-5, atol=1e-6)
    causal_mask = nn.Transformer.generate_square_subsequent_mask(10)
    expected, _ = mha(x, x, x, attn_mask=causal_mask, need_weights=False)
    torch.testing.assert_close(ours(x, causal=True), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("grouped", "full"), [(P.GQA4, P.QKV), (P.MQA, P.QKV), (P.TIED_KV_GQA4, P.TIED_KV), (P.TIED_KV_MQA, P.TIED_KV)]
)
def test_grouped_with_all_heads_equals_ungrouped(
    grouped: SharedProjectionVariant, full: SharedProjectionVariant
) -> None:
    """GQA with g = H is QKV, and Q-GQA with g = H is Q-K=V, weight for weight."""
    as_full = replace(grouped, kv_heads=CONFIG.n_heads)
    a, b = _build(as_full), _build(full)
    _copy_weights(a, b)
    x = torch.randn(2, 11, 32)
    torch.testing.assert_close(a(x, causal=True), b(x, causal=True), rtol=0, atol=0)
    assert as_full.cache_layout(CONFIG) == full.cache_layout(CONFIG)


@pytest.mark.parametrize("spec", [s for s in GRID if s.tie == Tie.KV], ids=lambda s: s.id)
def test_tied_key_value_output_is_in_the_convex_hull_of_keys(spec: SharedProjectionVariant) -> None:
    config = AttentionConfig(d_model=64, n_heads=8)
    module = _build(spec, config)
    with torch.no_grad():  # identity output projection exposes the per-head attention output
        module.out_proj.weight.copy_(torch.eye(64))
        module.out_proj.bias.zero_()
    x = torch.randn(2, 12, 64)
    y_BHTK = module(x).view(2, 12, 8, 8).transpose(1, 2)
    _, k_BGTK, _ = module._project(x)
    k_BHTK = k_BGTK.repeat_interleave(8 // k_BGTK.shape[1], dim=1)
    directions_KN = torch.nn.functional.normalize(torch.randn(8, 64), dim=0)
    # y is in the hull iff along every direction it lies between the keys' extremes
    proj_y = y_BHTK @ directions_KN  # (B, H, T, N)
    proj_k = k_BHTK @ directions_KN
    lo, hi = proj_k.min(dim=2, keepdim=True).values, proj_k.max(dim=2, keepdim=True).values
    assert (proj_y >= lo - 1e-5).all() and (proj_y <= hi + 1e-5).all()
    # and the check has teeth: a point outside the keys' range is caught
    assert ((2 * hi - lo) > hi + 1e-5).any()


def _random_plus(spec: SharedProjectionVariant) -> SharedProjectionAttention:
    """`spec` in double precision with random "+" weights w (and b = 0.7 where it has a bias)."""
    module = _build(spec).double()
    with torch.no_grad():
        module.pos_weight.normal_()
        if spec.plus_bias:
            module.pos_bias.fill_(0.7)
    return module


def _by_formula(
    module: SharedProjectionAttention, x_BTD: torch.Tensor, allowed_B1TT: torch.Tensor | None = None
) -> torch.Tensor:
    """out_proj(softmax(S') V) with S' from `scores` (the paper's formula), -inf where not `allowed`."""
    s_BHTT = module.scores(x_BTD)
    if allowed_B1TT is not None:
        s_BHTT = s_BHTT.masked_fill(~allowed_B1TT, -torch.inf)
    _, _, v_BGTK = module._project(x_BTD)
    return module.out_proj((torch.softmax(s_BHTT, dim=-1) @ v_BGTK).transpose(1, 2).reshape(x_BTD.shape))


@pytest.mark.parametrize("spec", [s for s in GRID if s.positional_channels], ids=lambda s: s.id)
def test_plus_fold_into_sdpa_is_exact(spec: SharedProjectionVariant) -> None:
    """The SDPA path equals softmax(S') V with S' = S sum(w) + P w + b computed by the paper's formula."""
    module = _random_plus(spec)
    x = torch.randn(2, 9, 32, dtype=torch.double)
    torch.testing.assert_close(module(x), _by_formula(module, x), rtol=1e-10, atol=1e-10)


def test_plus_forms_add_m_weights_and_a_bias_per_layer() -> None:
    for plus, base in ((P.TIED_QK_POS, P.TIED_QK), (P.TIED_QKV_POS, P.TIED_QKV)):
        n_plus = sum(p.numel() for p in _build(plus).parameters())
        n_base = sum(p.numel() for p in _build(base).parameters())
        assert n_plus - n_base == plus.positional_channels + 1


@pytest.mark.parametrize(
    ("kv_heads", "n_heads", "tie", "ok"),
    [(4, 16, Tie.NONE, True), (3, 16, Tie.NONE, False), (32, 16, Tie.NONE, False), (4, 16, Tie.QK, False)],
)
def test_check_explains_impossible_grid_points(kv_heads: int, n_heads: int, tie: Tie, ok: bool) -> None:
    spec = SharedProjectionVariant("x", "X", tie, kv_heads=kv_heads)
    reason = spec.check(AttentionConfig(16 * n_heads, n_heads))
    assert (reason is None) == ok


@pytest.mark.parametrize("plus", [P.TIED_QK_POS, P.TIED_QKV_POS], ids=lambda s: s.id)
def test_plus_ablations_take_away_one_part_each(plus: SharedProjectionVariant) -> None:
    """fixed scale: S' = S + P w + b; no bias: S' = S sum(w); both otherwise the same module as `plus`."""
    specs = (plus, P._plus_ablation(plus, "scale"), P._plus_ablation(plus, "bias"))
    full, fixed, no_bias = (_build(s).double() for s in specs)
    with torch.no_grad():
        full.pos_weight.normal_()
        full.pos_bias.fill_(0.3)
    _copy_weights(full, fixed)
    no_bias.load_state_dict({k: v for k, v in full.state_dict().items() if k != "pos_bias"})  # it has no bias
    x = torch.randn(2, 7, 32, dtype=torch.double)
    plain = P.TIED_QK if plus.tie is Tie.QK else P.TIED_QKV
    base = _build(plain).double()
    base.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("pos_")})
    s, scale = base.scores(x), full.pos_weight.sum()
    bias = full.scores(x) - s * scale  # P w + b
    torch.testing.assert_close(fixed.scores(x), s + bias)
    torch.testing.assert_close(no_bias.scores(x), s * scale)
    assert plus.ablates() is None and P._plus_ablation(plus, "scale").ablates() == plus.id


# --- the second reading of "+": P of the offsets i - j, a learned relative-position bias

RELATIVE = [P.TIED_QK_REL, P.TIED_QKV_REL]
#: the readings with the ablation fields too, so frozen scale and no bias work in the relative path
RELATIVE_FORMS = [
    *RELATIVE,
    *(replace(s, id=f"{s.id}-fixed-scale", plus_scale=False) for s in RELATIVE),
    *(replace(s, id=f"{s.id}-no-bias", plus_bias=False) for s in RELATIVE),
]


@pytest.mark.parametrize("causal", [False, True], ids=["encoder", "causal"])
@pytest.mark.parametrize("spec", RELATIVE_FORMS, ids=lambda s: s.id)
def test_relative_plus_as_a_float_mask_is_exact(spec: SharedProjectionVariant, causal: bool) -> None:
    """SDPA with the relative bias in its float mask equals softmax(S') V, S' by the paper's formula with
    the full (T, T, m) P of offsets, padded keys (and a causal mask, which no "+" task asks for) included."""
    module = _random_plus(spec)
    x = torch.randn(2, 9, 32, dtype=torch.double)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[0, 3:5] = True
    pad[1, 8:] = True
    allowed_B1TT = ~pad[:, None, None, :] & (torch.ones(9, 9, dtype=torch.bool).tril() if causal else True)
    expected = _by_formula(module, x, allowed_B1TT)
    torch.testing.assert_close(module(x, causal=causal, pad_mask_BT=pad), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("spec", RELATIVE, ids=lambda s: s.id)
def test_relative_plus_bias_is_a_function_of_the_offset(spec: SharedProjectionVariant) -> None:
    """S' - S sum(w) is Toeplitz, P[i, j] the sinusoid of i - j, and its sin channels make it asymmetric."""
    module = _build(spec)
    with torch.no_grad():
        module.pos_weight.normal_()
    x = torch.randn(1, 8, 32)
    plain = _build(P.TIED_QK if spec.tie is Tie.QK else P.TIED_QKV)
    plain.load_state_dict({k: v for k, v in module.state_dict().items() if not k.startswith("pos_")})
    bias_TT = (module.scores(x) - plain.scores(x) * module.pos_weight.sum())[0, 0]
    torch.testing.assert_close(bias_TT[1:, 1:], bias_TT[:-1, :-1])  # constant along every diagonal
    assert (bias_TT - bias_TT.T).abs().max() > 1e-2
    table_TTM = sinusoid_relative(8, P.PLUS_CHANNELS)
    i, j = torch.tril_indices(8, 8)
    torch.testing.assert_close(table_TTM[i, j], sinusoid_1d(8, P.PLUS_CHANNELS)[i - j], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("rel", "plus"), [(P.TIED_QK_REL, P.TIED_QK_POS), (P.TIED_QKV_REL, P.TIED_QKV_POS)])
def test_relative_readings_are_diagnostics_of_the_plus_forms(
    rel: SharedProjectionVariant, plus: SharedProjectionVariant
) -> None:
    plain = P.TIED_QK if plus.tie is Tie.QK else P.TIED_QKV
    assert rel.ablates() == plus.id and rel.supports == plus.supports
    assert rel.cache_layout(CONFIG) == plain.cache_layout(CONFIG)
    assert rel.mechanism(CONFIG) != plus.mechanism(CONFIG) and rel.positional_channels == P.PLUS_CHANNELS
    assert {k: v.shape for k, v in _build(rel).state_dict().items()} == {
        k: v.shape for k, v in _build(plus).state_dict().items()
    }  # the same m weights and bias b
    assert rel.describe()["positional_2d"] != plus.describe()["positional_2d"]
