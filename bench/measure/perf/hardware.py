"""Hardware utilisation: this machine's own peaks, and how much of them the default fits reach.

Peaks, measured here: an n x n matrix product in fp32 and in bf16 (GFLOP/s) and a large tensor copy
(GB/s, bytes read + written). Per task of the `default` suite: the FLOPs of one training step,
forward + backward, counted by `torch.utils.flop_counter.FlopCounterMode` (matrix products and
attention, its CPU kernel added; elementwise work counts nothing), and the achieved FLOP/s of the bare training step
(`bench.measure.perf.bare`; AdamW is in its time, not in its FLOPs) as a fraction of each peak. Peaks and
steps are interleaved round by round, so each round's fraction has its own peak.

A `torch.profiler` profile of a step then says where its time goes: the top operators by self CPU
time, and the time by kind of work (matrix products, SDPA, optimizer, elementwise and the rest, and
time in no operator at all: Python and framework).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from bench.measure.perf import bare
from bench.measure.perf.common import PerfContext, Spread, calibrated, interleave, paired_ratios

if TYPE_CHECKING:
    from rich.console import RenderableType

MATMUL_OPS = frozenset(
    {"mm", "addmm", "bmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "matmul", "linear",
     "convolution", "_convolution", "convolution_backward", "mkldnn_convolution", "conv2d"}
)  # fmt: skip
KINDS = ("matrix products", "attention (SDPA)", "optimizer", "elementwise & other", "no operator (Python, framework)")


@dataclass(frozen=True)
class HardwareSettings:
    """Attributes:
    repeats: Rounds of peaks and timed steps.
    matmul_n: Size of the square matrix product of the peak.
    copy_mib: Size of the copied tensor of the bandwidth peak.
    sample_s: Least duration of one timing sample (peaks and training steps are repeated to fill it).
    profile_steps: Steps profiled per task (the profile is their mean).
    top_ops: Operators listed per task.
    scale: Which of each task's configs to use.
    tasks: Task ids; None: the `default` suite's tasks.
    """

    repeats: int = 5
    matmul_n: int = 2048
    copy_mib: int = 512
    sample_s: float = 0.5
    profile_steps: int = 3
    top_ops: int = 10
    scale: str = "default"
    tasks: tuple[str, ...] | None = None
    seed: int = 0


def settings(quick: bool, repeats: int | None = None) -> HardwareSettings:
    """Full: 5 rounds, default configs. Quick: 2 rounds, smoke configs, a smaller copy."""
    quick_base = HardwareSettings(repeats=2, copy_mib=128, sample_s=0.03, profile_steps=1, scale="smoke")
    base = quick_base if quick else HardwareSettings()
    return dataclasses.replace(base, repeats=repeats or base.repeats)


def _op_name(op: str) -> str:
    """'aten::addmm' or 'aten.addmm.default' -> 'addmm'."""
    return op.replace("::", ".").split(".")[1] if "." in op.replace("::", ".") else op


def kind_of(op: str) -> str:
    """Which kind of work a profiled operator is (one of `KINDS`)."""
    low = op.lower()
    if "scaled_dot_product" in low or "flash_attention" in low or "efficient_attention" in low:
        return "attention (SDPA)"
    if low.startswith("aten") and _op_name(low) in MATMUL_OPS:
        return "matrix products"
    if "adam" in low or "_foreach_" in low or low.startswith("optimizer."):
        return "optimizer"
    return "elementwise & other"


def _cpu_attention_formulas() -> dict[Any, Callable[..., int]]:
    """FLOPs of PyTorch's CPU flash attention, which FlopCounterMode's registry leaves out (torch 2.14).

    The formulas FlopCounterMode uses for the CUDA kernels: Q K^T and P V, with GQA, dense (a causal
    mask is not discounted, as for every other kernel).
    """
    import torch
    from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

    def forward(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return int(sdpa_flop_count(query, key, value))

    def backward(grad: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kw: Any) -> int:
        return int(sdpa_backward_flop_count(grad, query, key, value))

    name = "_scaled_dot_product_flash_attention_for_cpu"
    aten = torch.ops.aten
    ops: dict[Any, Callable[..., int]] = {
        getattr(aten, name, None): forward,
        getattr(aten, f"{name}_backward", None): backward,
    }
    return {op: formula for op, formula in ops.items() if op is not None and op not in flop_registry}


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """FLOPs of everything `fn` runs (FlopCounterMode), in total and by operator ('aten.mm', ...)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas()) as counter:
        fn()
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


def _peak_contenders(options: HardwareSettings) -> dict[str, Callable[[], float]]:
    """Seconds per call of each peak measurement."""
    import torch

    n = options.matmul_n
    a, b = torch.randn(n, n), torch.randn(n, n)
    a16, b16 = a.bfloat16(), b.bfloat16()
    src = torch.ones(options.copy_mib * 2**20 // 4)
    dst = torch.empty_like(src)
    return {
        "matmul fp32": calibrated(lambda: torch.mm(a, b), options.sample_s),
        "matmul bf16": calibrated(lambda: torch.mm(a16, b16), options.sample_s),
        "copy": calibrated(lambda: dst.copy_(src), options.sample_s),
    }


@dataclass
class _TaskStep:
    step: Callable[[], Any]
    flops: int
    flops_by_op: dict[str, int]


def _task_step(task: Any, variant: Any, options: HardwareSettings, ctx: PerfContext) -> _TaskStep:
    from bench_tasks.base import OptimConfig

    task.prepare(ctx.data_dir)
    setup = bare.build(task, variant, task.config(options.scale), OptimConfig(), ctx.data_dir, options.seed)
    batch = bare.first_batch(setup)

    def forward_backward() -> None:
        loss, _ = setup.module.evaluate(batch)
        loss.backward()

    flops, by_op = count_flops(forward_backward)
    setup.optimizer.zero_grad(set_to_none=True)
    return _TaskStep(partial(bare.step, setup, batch), flops, by_op)


def profile_step(step: Callable[[], None], steps: int = 1, top: int = 10) -> dict[str, Any]:
    """Where one step's time goes: top operators by self CPU time and the time by kind (ms per step)."""
    from torch.profiler import ProfilerActivity, profile

    step()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall_ms = (time.perf_counter() - start) / steps * 1e3
    ops = [
        {"op": e.key, "kind": kind_of(e.key), "self_cpu_ms": e.self_cpu_time_total / 1e3 / steps,
         "calls": e.count / steps}
        for e in prof.key_averages()
        if e.self_cpu_time_total > 0
    ]  # fmt: skip
    ops.sort(key=lambda o: o["self_cpu_ms"], reverse=True)
    by_kind = dict.fromkeys(KINDS, 0.0)
    for op in ops:
        by_kind[op["kind"]] += op["self_cpu_ms"]
    by_kind["no operator (Python, framework)"] = max(0.0, wall_ms - sum(o["self_cpu_ms"] for o in ops))
    return {"wall_ms": wall_ms, "by_kind_ms": by_kind, "top_ops": ops[:top]}


def _kind_rates(flops_by_op: dict[str, int], by_kind_ms: dict[str, float]) -> dict[str, float | None]:
    """GFLOP/s of the matrix products and of SDPA, from counted FLOPs over their profiled time."""
    matmul = sum(n for op, n in flops_by_op.items() if _op_name(op) in MATMUL_OPS)
    sdpa = sum(n for op, n in flops_by_op.items() if "scaled_dot_product" in op)
    rates: dict[str, float | None] = {}
    for kind, flops in (("matrix products", matmul), ("attention (SDPA)", sdpa)):
        ms = by_kind_ms[kind]
        rates[kind] = flops / ms / 1e6 if ms > 0 and flops else None
    return rates


def measure(options: HardwareSettings, ctx: PerfContext) -> dict[str, Any]:
    """Peaks and per-task achieved FLOP/s, interleaved; then one profile per task."""
    from bench.plan.suites import default
    from bench.registry import tasks, variants

    suite = default()
    variant = variants().get(suite.baseline)
    chosen = tasks().resolve(list(options.tasks or suite.tasks))
    ctx.note("building each task's model and counting its FLOPs")
    steps = {task.id: _task_step(task, variant, options, ctx) for task in chosen}
    contenders = _peak_contenders(options)
    for task_id, s in steps.items():
        contenders[f"{task_id} step"] = calibrated(s.step, options.sample_s)
    seconds = interleave(contenders, options.repeats, ctx.note)
    n, copy_bytes = options.matmul_n, options.copy_mib * 2**20
    peak = {
        "matmul_fp32_gflops": [2 * n**3 / t / 1e9 for t in seconds["matmul fp32"]],
        "matmul_bf16_gflops": [2 * n**3 / t / 1e9 for t in seconds["matmul bf16"]],
        "copy_gbps": [2 * copy_bytes / t / 1e9 for t in seconds["copy"]],
    }
    per_task = {}
    for task_id, s in steps.items():
        ctx.note(f"profiling a step of {task_id}")
        achieved = [s.flops / t / 1e9 for t in seconds[f"{task_id} step"]]
        profile = profile_step(s.step, options.profile_steps, options.top_ops)
        per_task[task_id] = {
            "flops_per_step": s.flops,
            "flops_by_op": s.flops_by_op,
            "step_ms": Spread.of([t * 1e3 for t in seconds[f"{task_id} step"]]).as_dict(),
            "achieved_gflops": Spread.of(achieved).as_dict(),
            "fraction_of_fp32_peak": Spread.of(paired_ratios(achieved, peak["matmul_fp32_gflops"])).as_dict(),
            "fraction_of_bf16_peak": Spread.of(paired_ratios(achieved, peak["matmul_bf16_gflops"])).as_dict(),
            "profile": profile,
            "kind_gflops": _kind_rates(s.flops_by_op, profile["by_kind_ms"]),
        }
    return {
        "variant": variant.id,
        "peaks": {name: Spread.of(values).as_dict() for name, values in peak.items()},
        "tasks": per_task,
    }


def render(result: dict[str, Any]) -> list[RenderableType]:
    from rich.table import Table

    peaks = Table(title="This machine's peaks", caption="median \\[min-max] over rounds")
    for col in ("measurement", "rate"):
        peaks.add_column(col, justify="left" if col == "measurement" else "right")
    labels = {"matmul_fp32_gflops": ("matmul fp32", "GFLOP/s"), "matmul_bf16_gflops": ("matmul bf16", "GFLOP/s"),
              "copy_gbps": ("tensor copy (read + write)", "GB/s")}  # fmt: skip
    for key, (label, unit) in labels.items():
        peaks.add_row(label, Spread.from_dict(result["peaks"][key]).show(digits=0, unit=f" {unit}"))
    tasks = Table(
        title=f"Achieved training FLOP/s per task ({result['variant']}; FLOPs: forward + backward)",
        caption="share: of the profiled step's wall time; GFLOP/s of a kind: its counted FLOPs over its profiled time",
    )
    columns = ("task", "GFLOP/step", "step ms", "GFLOP/s", "of fp32 peak", "of bf16 peak",
               "matmul share", "matmul GFLOP/s", "SDPA share", "elementwise", "optimizer", "no op")  # fmt: skip
    for col in columns:
        tasks.add_column(col, justify="left" if col == "task" else "right")
    for task_id, t in result["tasks"].items():
        kinds, wall = t["profile"]["by_kind_ms"], t["profile"]["wall_ms"]
        rate = t["kind_gflops"]["matrix products"]
        tasks.add_row(
            task_id, f"{t['flops_per_step'] / 1e9:.2f}", Spread.from_dict(t["step_ms"]).show(1, ""),
            Spread.from_dict(t["achieved_gflops"]).show(1, ""),
            f"{t['fraction_of_fp32_peak']['median']:.1%}", f"{t['fraction_of_bf16_peak']['median']:.1%}",
            f"{kinds['matrix products'] / wall:.0%}", "-" if rate is None else f"{rate:.0f}",
            f"{kinds['attention (SDPA)'] / wall:.0%}", f"{kinds['elementwise & other'] / wall:.0%}",
            f"{kinds['optimizer'] / wall:.0%}", f"{kinds['no operator (Python, framework)'] / wall:.0%}",
        )  # fmt: skip
    return [peaks, tasks, *(_ops_table(task_id, t["profile"]) for task_id, t in result["tasks"].items())]


def _ops_table(task_id: str, profile: dict[str, Any]) -> RenderableType:
    from rich.table import Table

    table = Table(title=f"{task_id}: top operators by self CPU time (one step: {profile['wall_ms']:.1f} ms)")
    for col in ("operator", "kind", "self ms", "share", "calls"):
        table.add_column(col, justify="left" if col in ("operator", "kind") else "right")
    for op in profile["top_ops"]:
        share = op["self_cpu_ms"] / profile["wall_ms"]
        table.add_row(op["op"], op["kind"], f"{op['self_cpu_ms']:.2f}", f"{share:.1%}", f"{op['calls']:g}")
    return table
