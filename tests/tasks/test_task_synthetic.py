"""Synthetic tasks: exact targets, MQAR structure, determinism, and a fit of each with two variants."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.fit.train import fit
from bench.registry import tasks, variants
from bench_tasks.base import SCALES, OptimConfig
from bench_tasks.synthetic import IGNORE, SyntheticConfig, digit_examples, mqar_examples, packed_mqar_examples

DIGIT_TASKS = ["reverse", "sort", "sub", "swap", "copy"]


def test_digit_targets_are_exact() -> None:
    g = torch.Generator().manual_seed(0)
    x, _ = digit_examples("copy", 3, 6, g)
    expected = {
        "reverse": x.flip(-1),
        "sort": x.sort(-1).values,
        "sub": 9 - x,
        "swap": torch.cat([x[:, 3:], x[:, :3]], dim=-1),
        "copy": x,
    }
    for name, target in expected.items():
        x_again, y = digit_examples(name, 3, 6, torch.Generator().manual_seed(0))
        assert torch.equal(x_again, x) and torch.equal(y, target), name


def test_mqar_targets_are_the_values_paired_with_the_queried_keys() -> None:
    x, y = mqar_examples(50, 16, 64, torch.Generator().manual_seed(1))
    n_pairs = 4
    for row_x, row_y in zip(x, y, strict=True):
        pairs = dict(zip(row_x[: 2 * n_pairs : 2].tolist(), row_x[1 : 2 * n_pairs : 2].tolist(), strict=True))
        assert len(pairs) == n_pairs  # keys are distinct
        assert (row_y[: 2 * n_pairs] == IGNORE).all()
        for query, target in zip(row_x[2 * n_pairs :].tolist(), row_y[2 * n_pairs :].tolist(), strict=True):
            assert pairs[query] == target and target >= 32  # values never collide with keys
    with pytest.raises(ValueError, match="MQAR needs"):
        mqar_examples(2, 2, 64, torch.Generator())


def test_packed_mqar_holds_each_pair_at_one_position() -> None:
    x, y = packed_mqar_examples(40, 16, 32, torch.Generator().manual_seed(2))
    assert x.shape == (40, 12, 2) and y.shape == (40, 12)
    for row_x, row_y in zip(x, y, strict=True):
        pairs = dict(row_x[:4].tolist())
        assert len(pairs) == 4 and (row_y[:4] == IGNORE).all()
        assert (row_x[4:, 1] == 32).all()  # queries carry the extra "no value" symbol
        for query, target in zip(row_x[4:, 0].tolist(), row_y[4:].tolist(), strict=True):
            assert pairs[query] == target >= 16


@pytest.mark.parametrize("name", [*DIGIT_TASKS, "mqar"])
def test_splits_are_deterministic_and_val_test_do_not_follow_the_seed(name: str, tmp_path: Path) -> None:
    task = tasks().get(name)
    config = task.config("smoke")
    modules = [task.datamodule(tmp_path, config, seed) for seed in (0, 0, 1)]
    for m in modules:
        m.setup()
    a, b, c = (m.datasets for m in modules)
    assert torch.equal(a["train"].tensors[0], b["train"].tensors[0])
    assert not torch.equal(a["train"].tensors[0], c["train"].tensors[0])
    assert torch.equal(a["test"].tensors[0], c["test"].tensors[0])
    assert not torch.equal(a["val"].tensors[0], a["test"].tensors[0])


@pytest.mark.parametrize("name", [*DIGIT_TASKS, "mqar"])
@pytest.mark.parametrize("variant", ["qkv", "tied-kv"])
def test_fast_dev_run_fit(name: str, variant: str, tmp_path: Path) -> None:
    task = tasks().get(name)
    result = fit(task, variants().get(variant), task.config("smoke"), OptimConfig(), seed=0, data_dir=tmp_path,
                 test=False, fast_dev_run=True)  # fmt: skip
    assert 0.0 <= result.val["accuracy"] <= 1.0
    assert result.data_source["kind"] == "synthetic"


def test_every_task_declares_what_the_harness_needs() -> None:
    registry = tasks()
    assert not registry.failures, registry.failures
    for task in registry:
        info = task.describe()
        assert info["metric"] and info["version"] and task.family in ("synthetic", "vision", "anomaly", "lm")
        for scale in SCALES:
            config = task.config(scale)
            assert config.d_model % config.n_heads == 0
            assert task.context_length(config) > 0
        assert task.check(variants().get("qkv"), task.config("smoke")) is None


def test_plus_variants_are_na_on_causal_tasks_only() -> None:
    plus = variants().get("(Q=K-V)+")
    lm, reverse = tasks().get("lm"), tasks().get("reverse")
    assert "causal" in (lm.check(plus, lm.config("default")) or "")
    assert reverse.check(plus, reverse.config("default")) is None
    assert isinstance(reverse.config("default"), SyntheticConfig)
