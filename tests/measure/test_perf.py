"""`bench perf`: its pieces, and a regression guard on the harness's speed that cannot flake.

The guards run the quick measurements in-process and fail only far outside the goals (harness above
2x the bare loop, a variant above 3x plain SDPA), never on absolute times. They run on one torch
thread: on a shared 2-core machine, two OpenMP threads that lose their core to another job turn a
1 ms step into 100 ms, whereas one thread only waits its turn. A guard fails only when both the
median of round-by-round ratios and the fastest-over-fastest ratio are past the limit: a real
regression slows every round, while other jobs inflate some rounds or some contenders.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.cli import main
from bench.fit.memory import PeakMemory
from bench.measure.perf import KINDS, attention, bare, decoding, hardware, harness, precision
from bench.measure.perf.common import PerfContext, Spread, interleave, write_result
from bench.run.data import default_data_dir

HARNESS_LIMIT = 2.0  # harness training time / bare loop's (goal 1.05)
ATTENTION_LIMIT = 3.0  # a variant's fwd+bwd / plain SDPA's (goal 1.05)
MiB = 2**20


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    before = torch.get_num_threads()
    monkeypatch.setenv("BENCH_THREADS", "1")  # what `bench.fit.train.fit` applies
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def robust_ratio(paired: dict[str, float], best: float) -> float:
    return min(paired["median"], best)


# --- the pieces -------------------------------------------------------------------------------------


def test_spread_and_interleave_alternate_the_order() -> None:
    calls: list[str] = []
    out = interleave({"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}, rounds=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert out == {"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]}
    s = Spread.of([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.low, s.high, s.n) == (2.5, 1.0, 10.0, 4)
    assert s.q1 <= s.median <= s.q3
    assert Spread.from_dict(s.as_dict()) == s


def test_flop_count_of_a_known_matmul_and_a_training_step() -> None:
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    total, by_op = hardware.count_flops(lambda: a @ b)
    assert total == 2 * 64 * 32 * 16
    assert by_op == {"aten.mm": 2 * 64 * 32 * 16}
    layer, x = nn.Linear(32, 16), torch.randn(64, 32, requires_grad=True)
    total, _ = hardware.count_flops(lambda: layer(x).sum().backward())
    assert total == 3 * 2 * 64 * 32 * 16  # forward, then the gradients of the input and of the weight


def test_flop_count_includes_attention_on_the_cpu() -> None:
    q_BHTK, kv_BGTK = torch.randn(2, 4, 64, 16, requires_grad=True), torch.randn(2, 2, 64, 16, requires_grad=True)
    forward = 2 * (2 * 2 * 4 * 64 * 64 * 16)  # Q K^T and P V, per (batch, query head)
    total, by_op = hardware.count_flops(
        lambda: F.scaled_dot_product_attention(q_BHTK, kv_BGTK, kv_BGTK, enable_gqa=True).sum().backward()
    )
    assert sum(n for op, n in by_op.items() if "scaled_dot_product" in op) == total == forward * 3.5
    # (backward: dV, dP, dQ, dK and the recomputed scores: 2.5 times the forward's products)


def test_profile_sorts_operators_into_kinds() -> None:
    assert hardware.kind_of("aten::addmm") == "matrix products"
    assert hardware.kind_of("aten::mkldnn_convolution") == "matrix products"
    assert hardware.kind_of("aten::_scaled_dot_product_flash_attention_for_cpu_backward") == "attention (SDPA)"
    assert hardware.kind_of("Optimizer.step#AdamW.step") == "optimizer"
    assert hardware.kind_of("aten::gelu") == "elementwise & other"
    layer, x = nn.Linear(64, 64), torch.randn(128, 64)
    profile = hardware.profile_step(lambda: layer(x).relu().sum().backward(), steps=2, top=5)
    assert len(profile["top_ops"]) <= 5
    assert any(op["kind"] == "matrix products" for op in profile["top_ops"])
    assert set(profile["by_kind_ms"]) == set(hardware.KINDS)


def test_peak_memory_sees_an_allocation_inside_the_block_and_not_an_earlier_one() -> None:
    size = 192 * MiB
    with PeakMemory(device="cpu") as first:
        big = torch.ones(size // 4)  # written, so every page is resident
        del big
    assert first.method == "statm"
    assert first.growth_bytes > 0.8 * size
    with PeakMemory(device="cpu") as second:
        time.sleep(0.02)
    assert second.growth_bytes < 0.25 * size  # the first block's peak is not this block's
    assert second.peak_bytes < first.peak_bytes
    assert second.samples > 0


def test_peak_memory_catches_a_brief_peak_between_samples() -> None:
    size = 96 * MiB
    with PeakMemory(device="cpu", interval_s=0.001) as mem:
        for _ in range(3):
            torch.ones(size // 4).sum()  # allocated, touched and freed at once
    assert mem.growth_bytes > 0.5 * size


def test_result_file_is_written_atomically_with_provenance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = attention.settings(quick=True)
    path = write_result(tmp_path, "attention", settings, {"worst": 1.0})
    data = json.loads(path.read_text())
    assert path == tmp_path / "attention.json"
    assert {"schema_version", "kind", "created_at", "provenance", "settings", "results"} <= set(data)
    assert {"git_sha", "packages", "device"} <= set(data["provenance"])
    assert data["settings"]["repeats"] == settings.repeats

    def torn(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", torn)
    with pytest.raises(OSError):
        write_result(tmp_path, "attention", settings, {"worst": 2.0})
    assert json.loads(path.read_text())["results"] == {"worst": 1.0}  # the old file, whole
    assert os.listdir(tmp_path) == ["attention.json"]  # no temp file left behind


def test_unknown_measurement_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["perf", "--only", "atention"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "did you mean 'attention'" in err and ", ".join(KINDS) in err


# --- the guards -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("one_thread")
def test_harness_is_not_far_slower_than_a_bare_loop() -> None:
    options = harness.HarnessSettings(repeats=3, scale="default", max_steps=6, tasks=("reverse",))
    result = harness.measure(options, PerfContext(default_data_dir()))
    reverse = result["tasks"]["reverse"]
    assert reverse["harness"]["steps"] == reverse["bare"]["steps"] == 6
    assert robust_ratio(reverse["ratio"], reverse["ratio_of_best"]) < HARNESS_LIMIT
    assert reverse["harness"]["train_s"]["median"] > 0 and reverse["bare"]["train_s"]["median"] > 0
    assert reverse["harness"]["fixed_s"]["median"] > 0 and reverse["bare"]["fixed_s"]["median"] > 0


@pytest.mark.usefixtures("one_thread")
def test_the_bare_loop_steps_in_lockstep_and_its_time_is_not_charged_to_the_harness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slow_step, steps = 0.5, 6  # a sleep far above the fixed cost (0.03-0.2 s), so one charged to it shows
    step = bare.step

    def slow(setup: bare.BareSetup, batch: object) -> None:
        step(setup, batch)
        time.sleep(slow_step)

    monkeypatch.setattr(bare, "step", slow)
    options = harness.HarnessSettings(repeats=1, scale="default", max_steps=steps, tasks=("reverse",))
    reverse = harness.measure(options, PerfContext(default_data_dir()))["tasks"]["reverse"]
    harness_s, bare_s = reverse["harness"]["train_s"]["median"], reverse["bare"]["train_s"]["median"]
    assert reverse["bare"]["steps"] == steps and bare_s >= steps * slow_step
    assert harness_s < bare_s - (steps - 1) * slow_step  # the sleeps inside the harness's span were taken out
    assert reverse["harness"]["fixed_s"]["median"] < slow_step  # and none of them counted as its fixed cost


@pytest.mark.usefixtures("one_thread")
def test_cli_quick_attention_writes_its_result_and_no_variant_is_far_slower(tmp_path: Path) -> None:
    assert main(["perf", "--quick", "--only", "attention", "--out", str(tmp_path), "--threads", "1"]) == 0
    data = json.loads((tmp_path / "attention.json").read_text())
    assert data["kind"] == "attention" and data["results"]["threads"] == 1
    rows = data["results"]["variants"]
    assert "qkv" in rows and "tied-kv" in rows
    slow = {
        v: r["ratio"]["median"]
        for v, r in rows.items()
        if robust_ratio(r["ratio"], r["ratio_of_best"]) > ATTENTION_LIMIT
    }
    assert not slow, f"variants above {ATTENTION_LIMIT}x plain SDPA: {slow}"


@pytest.mark.usefixtures("one_thread")
def test_cli_quick_precision_times_both_precisions_per_task_beside_its_config(tmp_path: Path) -> None:
    """Nothing timed is asserted: the ratios only have to be ratios, and the flag has to follow the verdict."""
    assert main(["perf", "--quick", "--only", "precision", "--out", str(tmp_path), "--threads", "1"]) == 0
    data = json.loads((tmp_path / "precision.json").read_text())
    assert data["kind"] == "precision" and data["results"]["threads"] == 1
    rows = data["results"]["tasks"]
    assert {"reverse", "lm"} <= set(rows)
    for task_id, row in rows.items():
        assert row["ratio"]["median"] > 0 and row["ratio_of_best"] > 0, task_id
        assert set(row["step_ms"]) == set(row["loss"]) == {"32-true", "bf16-mixed"}
        assert row["config_precision"] == "32-true"  # every default config today
        assert row["measured"] == precision.verdict(row["ratio"]["median"], *row["loss"].values())
        assert (row["flag"] is None) == (row["measured"] == row["config_precision"])
    assert precision.verdict(1.5, 2.0, 2.01) == "bf16-mixed"
    assert precision.verdict(1.5, 2.0, 2.5) == precision.verdict(1.1, 2.0, 2.0) == "32-true"


@pytest.mark.usefixtures("one_thread")
def test_decoding_measures_tokens_per_second_and_the_bytes_each_cache_holds() -> None:
    options = decoding.DecodingSettings(
        repeats=1, d_model=32, n_layers=2, heads=4, contexts=(16, 48), batch=2, new_tokens=2, sample_s=0.0,
        variants=("qkv", "tied-kv", "mqa", "tied-qk-pos"),
    )  # fmt: skip
    result = decoding.measure(options, PerfContext(Path(".")))
    rows = result["variants"]
    assert list(rows) == ["qkv", "tied-kv", "mqa"]
    assert "tied-qk-pos" in result["skipped"]  # the "+" forms declare no decoding
    qkv, tied = rows["qkv"]["contexts"]["48"], rows["tied-kv"]["contexts"]["48"]
    assert qkv["cache_bytes"] == 2 * 4 * 8 * 4 * 2 * 48 * 2  # K and V x heads x hd x fp32 x layers x tokens x batch
    assert tied["cache_bytes"] * 2 == qkv["cache_bytes"]
    assert rows["mqa"]["contexts"]["48"]["cache_bytes"] * 4 == qkv["cache_bytes"]
    assert rows["qkv"]["cache_bytes_allocated"] == qkv["cache_bytes"] // 48 * (48 + 2)
    assert qkv["tokens_per_s"]["median"] > 0 and qkv["speedup_vs_baseline"]["median"] == 1.0
    assert set(result["verdicts"]) == {"tied-kv", "mqa"}


@pytest.mark.usefixtures("one_thread")
def test_hardware_fractions_of_the_peaks_are_fractions() -> None:
    options = hardware.HardwareSettings(
        repeats=1, matmul_n=256, copy_mib=8, sample_s=0.0, profile_steps=1, scale="smoke", tasks=("reverse",)
    )
    result = hardware.measure(options, PerfContext(default_data_dir()))
    assert set(result["peaks"]) == {"matmul_fp32_gflops", "matmul_bf16_gflops", "copy_gbps"}
    reverse = result["tasks"]["reverse"]
    assert reverse["flops_per_step"] > 0 and any("scaled_dot_product" in op for op in reverse["flops_by_op"])
    assert 0 < reverse["fraction_of_fp32_peak"]["median"] < 10  # a fraction, give or take the machine's noise
    assert reverse["profile"]["top_ops"]


def test_budget_reads_a_runs_savings_per_task(tmp_path: Path) -> None:
    """Per task: fits against the seed cap, steps against the caps, reused fits, tuning cost per trial."""
    from bench.measure.perf import budget
    from bench.measure.perf.common import PerfContext
    from bench.record.store import write_json_atomic

    def record(task_id: str, seeds: list[int], steps: list[int], **extra: Any) -> dict[str, Any]:
        return {"status": "ok", "task": {"id": task_id, **extra.pop("task", {})}, "timing": {"final_seconds": 10.0},
                "seed_design": {"seeds": list(range(10))},
                "per_seed": [{"seed": s, "steps": n} for s, n in zip(seeds, steps, strict=True)], **extra}  # fmt: skip

    speed = {"speed_target": {"cap": 100}}
    cells = [record("reverse", [0, 1, 2], [30, 40, 50], task=speed),
             record("reverse", [0, 1, 2], [100, 80, 60], task=speed),
             record("lm", [0, 1, 2, 3, 4, 5], [8, 8, 8, 8, 8, 8], fits_saved=6,
                    tuning={"trials_finished": 6, "cost_full_fits": 2.4})]  # fmt: skip
    for i, payload in enumerate(cells):
        write_json_atomic(tmp_path / "cells" / f"c{i}.json", payload)
    write_json_atomic(tmp_path / "cells" / "na.json", {"status": "n/a", "task": {"id": "lm"}})
    found = budget.measure(budget.BudgetSettings(results=str(tmp_path)), PerfContext(tmp_path))
    rows = {r["task"]: r for r in found["tasks"]}
    assert rows["reverse"]["fits"] == 6 and rows["reverse"]["adaptive_seeds_saved"] == pytest.approx(1 - 6 / 20)
    assert rows["reverse"]["stop_at_target_saved"] == pytest.approx(1 - 360 / 600)
    assert rows["lm"]["reused_fits"] == 6 and rows["lm"]["tuning_fits_per_trial"] == pytest.approx(0.4)
    assert rows["lm"]["stop_at_target_saved"] is None and found["total"]["fits"] == 12
    assert found["total"]["adaptive_seeds_saved"] == pytest.approx(1 - 12 / 30)
    with pytest.raises(ValueError, match="no results in"):
        budget.measure(budget.BudgetSettings(results=str(tmp_path / "absent")), PerfContext(tmp_path))
