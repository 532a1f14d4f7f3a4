"""A config's precision: validated, in the cell id only away from its default, and what a fit trains under.

At "bf16-mixed" the fit runs each forward pass and loss under bf16 autocast and keeps fp32 weights (and an
untouched optimizer); "32-true" runs as fits always did (`tests/run/test_verify.py` refits committed seeds bit
for bit).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.fit.loop import autocast
from bench.fit.train import fit
from bench.plan.matrix import cell_id
from bench.registry import tasks, variants
from bench_tasks.base import PRECISIONS, OptimConfig, TaskConfig


def test_an_unknown_precision_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="'bf16' is not one of '32-true', 'bf16-mixed'"):
        TaskConfig(d_model=8, n_layers=1, n_heads=2, batch_size=4, precision="bf16")
    task = tasks().get("reverse")
    with pytest.raises(ValueError, match=r"SyntheticConfig\.precision"):
        dataclasses.replace(task.config("smoke"), precision="fp16")
    with pytest.raises(ValueError, match="is not one of"):
        autocast(torch.device("cpu"), "16-mixed")


def test_the_default_precision_leaves_cell_ids_as_they_were_and_bf16_changes_them() -> None:
    task, variant = tasks().get("reverse"), variants().get("qkv")
    config = task.config("default")
    assert config.precision == "32-true" and config.as_dict()["precision"] == "32-true"  # recorded per cell
    assert "precision" not in config.identity()  # so the ids of cells that ran before the field stay
    bf16 = dataclasses.replace(config, precision="bf16-mixed")
    assert bf16.identity()["precision"] == "bf16-mixed"
    assert cell_id(task, variant, bf16) != cell_id(task, variant, config)


def _smoke_fit(tmp_path: Path, precision: str) -> tuple[Any, dict[int, dict[str, Any]]]:
    task, variant = tasks().get("reverse"), variants().get("qkv")
    config = dataclasses.replace(task.config("smoke"), precision=precision)
    states: dict[int, dict[str, Any]] = {}
    result = fit(task, variant, config, OptimConfig(lr=3e-3), seed=0, data_dir=tmp_path, keep_states=states, threads=1)
    return result, states


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_smoke_fit_trains_and_scores_at_each_precision_with_fp32_weights(tmp_path: Path, precision: str) -> None:
    result, states = _smoke_fit(tmp_path, precision)
    assert result.test and all(math.isfinite(v) for v in result.test.values())
    floats = [t for state in states.values() for t in state.values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float32 for t in floats)  # the weights stay fp32 (autocast casts copies)


def test_bf16_autocast_changes_the_arithmetic_and_fp32_does_not(tmp_path: Path) -> None:
    (fp32, states_fp32), (again, states_again) = _smoke_fit(tmp_path, "32-true"), _smoke_fit(tmp_path, "32-true")
    _, states_bf16 = _smoke_fit(tmp_path, "bf16-mixed")
    last = max(states_fp32)
    same = [torch.equal(a, b) for a, b in zip(states_fp32[last].values(), states_again[last].values(), strict=True)]
    assert all(same) and fp32.test == again.test  # fp32 is deterministic: the comparison below means something
    moved = [torch.equal(a, b) for a, b in zip(states_fp32[last].values(), states_bf16[last].values(), strict=True)]
    assert not all(moved)  # the forward passes ran in bf16: the weights they trained differ
