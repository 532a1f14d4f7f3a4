"""The variant contract, checked on every registered variant (built-in or plugin) the moment it exists."""

from __future__ import annotations

import pytest
import torch

from bench_variants.base import AttentionConfig, VariantSpec
from tests.conftest import small_config_for


def _inputs(config: AttentionConfig, batch: int = 2, seq: int = 7) -> torch.Tensor:
    return torch.randn(batch, seq, config.d_model)


def test_declares_identity(spec: VariantSpec) -> None:
    assert spec.id and spec.id == spec.id.strip() and " " not in spec.id
    assert spec.display_name and spec.version
    declared = spec.cache_spec(small_config_for(spec))
    assert declared.elements_per_token >= 1 or declared.state_elements >= 1
    assert declared.bytes(10, 2) > 0 and declared.formula


def test_output_shape(spec: VariantSpec) -> None:
    config = small_config_for(spec)
    module = spec.build(config)
    for seq in (1, 5, 13):
        assert module(_inputs(config, seq=seq)).shape == (2, seq, config.d_model)


def test_causal_outputs_ignore_the_future(spec: VariantSpec) -> None:
    if not spec.supports.causal:
        pytest.skip(f"{spec.id} declares no causal support")
    config = small_config_for(spec)
    module = spec.build(config).eval()
    x = _inputs(config, seq=9)
    x_changed = x.clone()
    x_changed[:, 5:] = torch.randn_like(x_changed[:, 5:])
    y, y_changed = module(x, causal=True), module(x_changed, causal=True)
    torch.testing.assert_close(y[:, :5], y_changed[:, :5], rtol=0, atol=1e-6)
    assert not torch.allclose(y[:, 5:], y_changed[:, 5:])


@pytest.mark.parametrize("causal", [False, True])
def test_padded_keys_have_no_effect(spec: VariantSpec, causal: bool) -> None:
    if not spec.supports.key_padding or (causal and not spec.supports.causal):
        pytest.skip(f"{spec.id} declares no support for this mask")
    config = small_config_for(spec)
    module = spec.build(config).eval()
    x = _inputs(config, seq=8)
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[0, 2:4] = True  # in the middle: later queries would see these keys without the mask
    pad[1, 7:] = True
    x_changed = x.clone()
    x_changed[pad] = torch.randn_like(x_changed[pad]) * 10
    y = module(x, causal=causal, pad_mask_BT=pad)
    y_changed = module(x_changed, causal=causal, pad_mask_BT=pad)
    torch.testing.assert_close(y[~pad], y_changed[~pad], rtol=0, atol=1e-5)
    unmasked = module(x_changed, causal=causal)
    assert not torch.allclose(y[~pad], unmasked[~pad], atol=1e-4), "the mask had no effect at all"


def test_finite_gradients_reach_every_parameter(spec: VariantSpec) -> None:
    config = small_config_for(spec)
    module = spec.build(config)
    module(_inputs(config), causal=spec.supports.causal).pow(2).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{spec.id}: no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), f"{spec.id}: non-finite gradient in {name}"


def test_deterministic_under_a_seed(spec: VariantSpec) -> None:
    config = small_config_for(spec)
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        module = spec.build(config)
        x = _inputs(config)
        outputs.append(module(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def test_refuses_impossible_configs_with_a_reason(spec: VariantSpec) -> None:
    odd = AttentionConfig(d_model=36, n_heads=3)
    reason = spec.check(odd)
    if reason is None:
        assert spec.build(odd)(_inputs(odd)).shape == (2, 7, 36)
    else:
        assert isinstance(reason, str) and reason
        with pytest.raises(ValueError, match="cannot run"):
            spec.build(odd)
