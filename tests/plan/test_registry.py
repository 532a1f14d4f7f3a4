"""The entry-point registry: lookups, did-you-mean, broken plugins, and a real third-party plugin."""

from __future__ import annotations

from importlib.metadata import EntryPoint, distributions

import pytest
import torch

from bench.registry import VARIANTS_GROUP, UnknownNameError, variants
from bench_tasks.backbones.gpt import GPTConfig
from bench_variants.base import AttentionConfig
from tests.conftest import PLUGIN_SITE, REGISTRY


def _entries(*extra: tuple[str, str]) -> list[EntryPoint]:
    real = [ep for ep in REGISTRY._entries.values()]
    return real + [EntryPoint(name, value, VARIANTS_GROUP) for name, value in extra]


def test_builtins_come_through_the_entry_point_group() -> None:
    assert {"qkv", "tied-kv", "tied-kv-mqa", "gqa4"} <= set(REGISTRY.names())
    assert REGISTRY.origin("qkv") == "bench"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("qkv", "qkv"),
        ("Q-K=V", "tied-kv"),
        ("q-k=v", "tied-kv"),
        (" Q-MQA ", "tied-kv-mqa"),
        ("(Q=K=V)+", "tied-qkv-pos"),
    ],
)
def test_lookup_by_id_or_study_notation(name: str, expected: str) -> None:
    assert REGISTRY.get(name).id == expected


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError) as info:
        REGISTRY.get("qkv2")
    message = str(info.value)
    assert "Unknown variant 'qkv2'; did you mean 'qkv'" in message
    assert "Available: " in message and "tied-kv-mqa" in message


def test_resolve_keeps_order_and_drops_duplicates() -> None:
    assert [s.id for s in REGISTRY.resolve(["Q-K=V", "qkv", "tied-kv"])] == ["tied-kv", "qkv"]


def test_broken_plugins_are_reported_and_skipped() -> None:
    n_good = len(REGISTRY.names())
    registry = variants(
        _entries(
            ("missing", "no_such_module_xyz:VARIANT"),
            ("not-a-spec", "bench_variants.presets:PLUS_CHANNELS"),
            ("wrong-id", "bench_variants.presets:QKV"),
        )
    )
    loaded = registry.all()
    assert "qkv" in loaded and len(loaded) == n_good
    assert set(registry.failures) == {"missing", "not-a-spec", "wrong-id"}
    assert "ModuleNotFoundError" in registry.failures["missing"].error
    assert "not a VariantSpec" in registry.failures["not-a-spec"].error
    assert "differs from the entry-point name" in registry.failures["wrong-id"].error
    with pytest.raises(ImportError, match="no_such_module_xyz"):
        registry.get("missing")


def test_example_plugin_is_found_through_its_distribution() -> None:
    """conftest pip-installed examples/latent-attention; the registry must see it as a third party."""
    assert any(d.metadata["Name"] == "bench-latent-attention" for d in distributions(path=[str(PLUGIN_SITE)]))
    assert "latent-kv" in REGISTRY.names()
    assert REGISTRY.origin("latent-kv") == "bench-latent-attention"
    spec = REGISTRY.get("latent-kv")
    assert spec.build(AttentionConfig(64, 8))(torch.randn(2, 5, 64)).shape == (2, 5, 64)
    from bench.measure.costs import measure_decoding

    result = measure_decoding(spec, GPTConfig(vocab_size=17, context=12, n_layers=2, d_model=64, n_heads=8), 12)
    assert result.bytes_match and result.bytes_held == 2 * 12 * 16 * 4  # layers x tokens x rank x fp32
    assert result.max_abs_diff <= 1e-5
