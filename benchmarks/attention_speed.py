"""Forward+backward time of every registered variant as a ratio to plain multi-head SDPA attention.

All variants and the reference run in one process, interleaved round by round, so the ratios share
the machine's state; the median over rounds is reported. Target: no variant above 1.10x.

    python benchmarks/attention_speed.py [--batch 8 --seq 256 --d-model 256 --heads 8 --rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from bench.registry import variants
from bench_variants.base import AttentionConfig


class PlainMHA(nn.Module):
    """The reference: fused QKV projection, SDPA, output projection; nothing else."""

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)

    def forward(self, x_BTD: Tensor, *, causal: bool = False) -> Tensor:
        B, T, D = x_BTD.shape
        q, k, v = self.qkv(x_BTD).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y_BHTK = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out(y_BHTK.transpose(1, 2).reshape(B, T, D))


def step_fn(module: nn.Module, x_BTD: Tensor, causal: bool) -> Callable[[], None]:
    def step() -> None:
        module.zero_grad(set_to_none=True)
        module(x_BTD, causal=causal).sum().backward()

    return step


def time_once(step: Callable[[], None], iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = AttentionConfig(args.d_model, args.heads)
    x_BTD = torch.randn(args.batch, args.seq, args.d_model, device=args.device)
    specs = [s for s in variants() if s.check(config) is None]
    steps: dict[str, Callable[[], None]] = {"plain SDPA": step_fn(PlainMHA(config).to(args.device), x_BTD, False)}
    for spec in specs:
        steps[spec.id] = step_fn(spec.build(config).to(args.device), x_BTD, False)
    for step in steps.values():  # warm-up
        time_once(step, 2)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(time_once(step, args.iters))
    ref = statistics.median(times["plain SDPA"])

    table = Table(title=f"fwd+bwd, B={args.batch} T={args.seq} D={args.d_model} H={args.heads}, {args.device}")
    for col in ("variant", "display", "ms", "ratio vs plain SDPA"):
        table.add_column(col, justify="right" if col != "variant" else "left")
    table.add_row("plain SDPA", "-", f"{ref * 1e3:.2f}", "1.00")
    worst = 0.0
    for spec in specs:
        t = statistics.median(times[spec.id])
        worst = max(worst, t / ref)
        table.add_row(spec.id, spec.display_name, f"{t * 1e3:.2f}", f"{t / ref:.2f}")
    console = Console()
    console.print(table)
    console.print(f"worst ratio {worst:.2f} (target <= 1.10): {'met' if worst <= 1.10 else 'NOT met'}")


if __name__ == "__main__":
    main()
