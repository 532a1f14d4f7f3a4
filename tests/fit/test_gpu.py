"""The paper suite's LM cell on a GPU: the study's 300M model trains for 300 steps; its throughput and memory.

Skipped without CUDA. It reads the offline default corpus (the installed King James Bible, GPT-2 tokens).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from bench.fit.train import fit
from bench.registry import tasks, variants
from bench_tasks.base import OptimConfig

STEPS = 300


@pytest.mark.gpu
def test_paper_lm_cell_trains_on_a_gpu(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device; torch.cuda.is_available() is False here")
    task = tasks().get("lm")
    # the corpus' train split is 27 batches of 16 x 2048 tokens: max_steps ends the fit, not the epochs
    config = dataclasses.replace(task.config("paper"), max_steps=STEPS, max_epochs=1000)
    # GPT-2 medium's learning rate; the task's own 5e-3 is tuned for its tiny CPU models
    result = fit(task, variants().get("qkv"), config, OptimConfig(lr=6e-4), seed=0, data_dir=tmp_path)
    tokens_per_second = result.examples_per_second * task.context_length(config)
    print(f"\npaper lm x qkv, {result.steps} steps: {tokens_per_second:,.0f} tokens/s, "
          f"peak memory {result.peak_memory_bytes / 2**30:.1f} GiB")  # fmt: skip
    assert result.steps == STEPS  # every training loss was finite: a non-finite one stops the fit (Diverged)
    assert math.isfinite(result.test["loss"])
    assert result.test["loss"] < math.log(50_257) - 2  # well below a uniform guess over GPT-2's vocabulary
