"""Backbones that take any variant: the LM's masked loss, the encoder, and timm's ViT."""

from __future__ import annotations

import pytest
import torch

from bench_tasks.backbones import Encoder, EncoderConfig
from bench_tasks.backbones.gpt import GPT, GPTConfig, lm_loss
from bench_tasks.backbones.vit import vit
from bench_variants.base import VariantSpec
from bench_variants.presets import QKV
from tests.conftest import small_config_for


def test_padding_is_masked_out_of_the_lm_loss() -> None:
    model = GPT(GPTConfig(vocab_size=13, context=10, n_layers=1, d_model=16, n_heads=2), QKV)
    idx = torch.randint(13, (2, 10))
    pad = torch.zeros(2, 10, dtype=torch.bool)
    pad[0, 6:] = True
    logits = model(idx, pad_mask_BT=pad)
    changed = idx.clone()
    changed[0, 6:] = (changed[0, 6:] + 1) % 13  # different padding targets
    assert lm_loss(logits, idx, pad) == lm_loss(logits, changed, pad)
    assert lm_loss(logits, idx) != lm_loss(logits, changed)


def test_lm_rejects_sequences_past_its_context() -> None:
    model = GPT(GPTConfig(vocab_size=13, context=4, n_layers=1, d_model=16, n_heads=2), QKV)
    with pytest.raises(ValueError, match="exceeds the context of 4"):
        model(torch.zeros(1, 5, dtype=torch.long))


def test_encoder_takes_any_variant(spec: VariantSpec) -> None:
    attn = small_config_for(spec)
    encoder = Encoder(EncoderConfig(n_layers=2, d_model=attn.d_model, n_heads=attn.n_heads, max_len=16), spec)
    x = torch.randn(3, 10, attn.d_model)
    assert encoder(x).shape == (3, 10, attn.d_model)


def test_set_encoder_without_positions_is_permutation_equivariant() -> None:
    encoder = Encoder(EncoderConfig(n_layers=2, d_model=16, n_heads=2), QKV).eval()
    x = torch.randn(2, 10, 16)
    perm = torch.randperm(10)
    torch.testing.assert_close(encoder(x)[:, perm], encoder(x[:, perm]), rtol=1e-5, atol=1e-6)


def test_timm_vit_takes_any_variant(spec: VariantSpec) -> None:
    attn = small_config_for(spec)
    model = vit(
        spec, img_size=16, patch_size=4, in_chans=3, num_classes=5, embed_dim=attn.d_model, depth=2,
        num_heads=attn.n_heads,
    )  # fmt: skip
    logits = model(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 5)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_timm_vit_with_qkv_has_timms_own_parameter_count() -> None:
    from timm.models.vision_transformer import VisionTransformer

    kwargs = dict(img_size=16, patch_size=4, in_chans=3, num_classes=5, embed_dim=32, depth=2, num_heads=4)
    ours = vit(QKV, **kwargs)  # type: ignore[arg-type]
    reference = VisionTransformer(**kwargs)  # type: ignore[arg-type]
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())


def mlp_widths(net: torch.nn.Module) -> set[int]:
    """The hidden width of every block's MLP."""
    return {m.out_features for name, m in net.named_modules() if name.endswith("mlp.fc1")}


@pytest.mark.parametrize("ratio", [1, 4])
def test_timm_vit_mlp_width_follows_the_config(ratio: int) -> None:
    """The default vision configs narrow the MLP to the model's width; the hidden layer is ratio x d."""
    from timm.models.vision_transformer import VisionTransformer

    kwargs = dict(img_size=16, patch_size=4, in_chans=3, num_classes=5, embed_dim=32, depth=2, num_heads=4)
    ours = vit(QKV, mlp_ratio=ratio, **kwargs)  # type: ignore[arg-type]
    reference = VisionTransformer(mlp_ratio=ratio, **kwargs)  # type: ignore[arg-type]
    assert mlp_widths(ours) == {ratio * 32}
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())


def test_default_vision_configs_build_their_narrow_mlp() -> None:
    from bench.registry import tasks
    from bench_tasks.base import OptimConfig

    for task_id in ("mnist", "fashion-mnist", "cifar10", "cifar100", "tinyimagenet"):
        task = tasks().get(task_id)
        config = task.config("default")
        net = task.build_model(QKV, config, OptimConfig()).net
        assert mlp_widths(net) == {config.mlp_ratio * config.d_model}
        assert task.config("paper").mlp_ratio == 4  # the study's sizes keep timm's width
