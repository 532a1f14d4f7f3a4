"""The study's exact numbers: parameter counts of its models and KV-cache reductions."""

from __future__ import annotations

import pytest
import torch

from bench.measure.costs import parameter_count, reduction_vs
from bench_tasks.backbones.gpt import GPTConfig
from bench_variants import presets as P
from bench_variants.base import AttentionConfig, replace

PARAMS_300M = {
    P.QKV: 305_534_976,
    P.TIED_QK: 284_542_976,
    P.TIED_KV: 284_542_976,
    P.TIED_QKV: 263_550_976,
    P.GQA4: 274_046_976,
    P.MQA: 266_174_976,
    P.TIED_KV_GQA4: 268_798_976,
    P.TIED_KV_MQA: 264_862_976,
}
PARAMS_1B2_MILLIONS = {P.QKV: 1215.10, P.TIED_KV: 1122.78, P.GQA8: 1076.62, P.MQA: 1036.23, P.TIED_KV_MQA: 1033.35}


@pytest.mark.parametrize(("spec", "expected"), PARAMS_300M.items(), ids=lambda v: getattr(v, "id", str(v)))
def test_300m_parameter_counts(spec: P.SharedProjectionVariant, expected: int) -> None:
    assert parameter_count(spec, GPTConfig.study_300m()) == expected


@pytest.mark.parametrize(("spec", "millions"), PARAMS_1B2_MILLIONS.items(), ids=lambda v: getattr(v, "id", str(v)))
def test_1b2_parameter_counts(spec: P.SharedProjectionVariant, millions: float) -> None:
    assert round(parameter_count(spec, GPTConfig.study_1b2()) / 1e6, 2) == millions


def test_plus_forms_cost_m_plus_one_parameters_per_layer() -> None:
    config = GPTConfig.study_300m()
    extra = parameter_count(P.TIED_QK_POS, config) - parameter_count(P.TIED_QK, config)
    assert extra == config.n_layers * (P.PLUS_CHANNELS + 1)


REDUCTIONS_H16 = {
    P.QKV: 0.0,
    P.TIED_QK: 0.0,
    P.TIED_KV: 0.5,
    P.TIED_QKV: 0.5,
    P.GQA4: 0.75,
    P.TIED_KV_GQA4: 0.875,
    P.MQA: 0.9375,
    P.TIED_KV_MQA: 0.96875,
}


@pytest.mark.parametrize(("spec", "expected"), REDUCTIONS_H16.items(), ids=lambda v: getattr(v, "id", str(v)))
def test_cache_reductions_at_16_heads(spec: P.SharedProjectionVariant, expected: float) -> None:
    assert reduction_vs(spec, P.QKV, AttentionConfig(1024, 16)) == expected


def test_q_mqa_at_32_heads_is_98_4_not_96_9_percent() -> None:
    """The paper prints 96.9% for Q-MQA at 1.2B, where H = 32 makes it 1 - 1/64."""
    assert reduction_vs(P.TIED_KV_MQA, P.QKV, AttentionConfig(2048, 32)) == 0.984375


def test_300m_cache_bytes_per_token() -> None:
    config = AttentionConfig(1024, 16)
    kib = {s.display_name: s.kv_cache_bytes(config, 20, 1, torch.float16) / 1024 for s in PARAMS_300M}
    assert kib == {
        "QKV": 80,
        "Q=K-V": 80,
        "Q-K=V": 40,
        "Q=K=V": 40,
        "GQA-4": 20,
        "MQA": 5,
        "Q-GQA-4": 10,
        "Q-MQA": 2.5,
    }


def test_g_is_a_hyperparameter() -> None:
    gqa2 = replace(P.GQA4, id="gqa2", display_name="GQA-2", kv_heads=2)
    assert reduction_vs(gqa2, P.QKV, AttentionConfig(1024, 16)) == 1 - 2 / 16


def test_analytic_checks_measure_the_papers_numbers_by_decoding() -> None:
    import copy

    from bench.measure import analytic
    from bench_leaderboard.claims import HELD, NOT_HELD, analytic_checks

    measured = analytic.measure(["qkv", "tied-kv", "tied-kv-mqa", "tied-qk-pos"])
    rows = measured["variants"]
    assert list(rows) == ["qkv", "tied-kv", "tied-kv-mqa", "tied-qk-pos"]
    assert rows["qkv"]["bytes_held_per_token_per_layer"] == 2 * 16 * 64 * 4  # K and V, 16 heads of 64, fp32
    assert [rows[v]["reduction_measured"] for v in ("qkv", "tied-kv", "tied-kv-mqa")] == [0.0, 0.5, 0.96875]
    assert rows["tied-kv"]["decode_matches"] and rows["tied-kv"]["parameters_300m"] == PARAMS_300M[P.TIED_KV]
    assert "reduction_measured" in rows["tied-qk-pos"] and rows["tied-qk-pos"]["reduction_measured"] is None
    board = {r["variant"]: r["status"] for r in analytic_checks(measured)["rows"]}
    assert board == {"qkv": HELD, "tied-kv": HELD, "tied-kv-mqa": HELD, "tied-qk-pos": "no paper figure"}
    wrong = copy.deepcopy(measured)
    wrong["variants"]["tied-kv-mqa"]["bytes_held_per_token_per_layer"] += 4  # the cache holds more than it says
    assert {r["variant"]: r["status"] for r in analytic_checks(wrong)["rows"]}["tied-kv-mqa"] == NOT_HELD
    assert analytic_checks(None)["rows"] == [] and "bench run" in analytic_checks(None)["note"]
