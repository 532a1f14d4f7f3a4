"""Attention speed: forward+backward of every registered variant against plain multi-head SDPA.

The reference is the least an attention block can do: one fused QKV projection, SDPA, the output
projection. Every variant that accepts the shape runs in the same process, interleaved round by
round with the reference, and each round's time is divided by the reference's of that round.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.measure.perf.common import PerfContext, Spread, best_ratio, calibrated, goal_text, interleave, paired_ratios

if TYPE_CHECKING:
    from rich.console import RenderableType
    from torch import Tensor, nn

    from bench_variants.base import AttentionConfig

RATIO_GOAL = 1.05  # a variant's fwd+bwd time / plain SDPA's
REFERENCE = "plain SDPA"


@dataclass(frozen=True)
class AttentionSettings:
    """Attributes:
    repeats: Rounds; each times every variant and the reference once.
    batch, seq, d_model, heads: The shape (B, T, D) and query heads H.
    sample_s: Least duration of one timing sample (passes are repeated to fill it).
    causal: Under a causal mask.
    variants: Variant ids; None: every registered variant that accepts the shape.
    """

    repeats: int = 15
    batch: int = 8
    seq: int = 256
    d_model: int = 256
    heads: int = 8
    sample_s: float = 0.1
    causal: bool = False
    variants: tuple[str, ...] | None = None


def settings(quick: bool, repeats: int | None = None) -> AttentionSettings:
    """Full: B=8, T=256, D=256, H=8, 15 rounds. Quick: B=4, T=64, D=128, H=8, 3 rounds."""
    base = AttentionSettings(repeats=3, batch=4, seq=64, d_model=128, sample_s=0.02) if quick else AttentionSettings()
    return dataclasses.replace(base, repeats=repeats or base.repeats)


def plain_mha(config: AttentionConfig) -> nn.Module:
    """The reference: fused QKV projection, SDPA, output projection; nothing else."""
    import torch.nn.functional as F
    from torch import nn

    class PlainMHA(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n_heads = config.n_heads
            self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
            self.out = nn.Linear(config.d_model, config.d_model)

        def forward(self, x_BTD: Tensor, *, causal: bool = False) -> Tensor:
            B, T, D = x_BTD.shape
            q, k, v = self.qkv(x_BTD).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
            y_BHTK = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, T, hd)
            return self.out(y_BHTK.transpose(1, 2).reshape(B, T, D))

    return PlainMHA()


def _timer(module: nn.Module, x_BTD: Tensor, causal: bool, sample_s: float) -> Callable[[], float]:
    def step() -> None:
        module.zero_grad(set_to_none=True)
        module(x_BTD, causal=causal).sum().backward()

    return calibrated(step, sample_s)


def measure(options: AttentionSettings, ctx: PerfContext) -> dict[str, Any]:
    """Seconds per fwd+bwd of each variant and the reference; ratios paired by round."""
    import torch

    from bench.registry import variants
    from bench_variants.base import AttentionConfig

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = AttentionConfig(options.d_model, options.heads)
    registry = variants()
    specs = registry.resolve(list(options.variants)) if options.variants else list(registry)
    runnable = [s for s in specs if s.check(config) is None and (s.supports.causal or not options.causal)]
    x_BTD = torch.randn(options.batch, options.seq, options.d_model, device=device)
    contenders = {REFERENCE: _timer(plain_mha(config).to(device), x_BTD, options.causal, options.sample_s)}
    for spec in runnable:
        contenders[spec.id] = _timer(spec.build(config).to(device), x_BTD, options.causal, options.sample_s)
    seconds = interleave(contenders, options.repeats, ctx.note)
    rows = {
        spec.id: {
            "display_name": spec.display_name,
            "ms": Spread.of([t * 1e3 for t in seconds[spec.id]]).as_dict(),
            "ratio": Spread.of(paired_ratios(seconds[spec.id], seconds[REFERENCE])).as_dict(),
            "ratio_of_best": best_ratio(seconds[spec.id], seconds[REFERENCE]),
        }
        for spec in runnable
    }
    return {
        "device": device,
        "shape": f"B={options.batch} T={options.seq} D={options.d_model} H={options.heads}"
        + (" causal" if options.causal else ""),
        "reference": {"name": REFERENCE, "ms": Spread.of([t * 1e3 for t in seconds[REFERENCE]]).as_dict()},
        "variants": rows,
        "skipped": {s.id: s.check(config) or "no causal support" for s in specs if s not in runnable},
        "goal_ratio_max": RATIO_GOAL,
        "worst": max((r["ratio"]["median"] for r in rows.values()), default=None),
    }


def render(result: dict[str, Any]) -> list[RenderableType]:
    from rich.table import Table

    table = Table(
        title=f"Attention fwd+bwd vs plain multi-head SDPA ({result['shape']}, {result['device']})",
        caption="median \\[min-max] over rounds; each round's time over the reference's of the same round; "
        "best/best: fastest round over fastest round",
    )
    for col in ("variant", "study name", "ms", "ratio vs plain SDPA", "best/best", f"goal <= {RATIO_GOAL}x"):
        table.add_column(col, justify="left" if col in ("variant", "study name") else "right")
    table.add_row(REFERENCE, "-", Spread.from_dict(result["reference"]["ms"]).show(2, ""), "1.00x", "1.00x", "")
    for variant_id, row in result["variants"].items():
        ratio = Spread.from_dict(row["ratio"])
        table.add_row(variant_id, row["display_name"], Spread.from_dict(row["ms"]).show(2, ""), ratio.show(),
                      f"{row['ratio_of_best']:.2f}x", goal_text(ratio.median, RATIO_GOAL))  # fmt: skip
    for variant_id, reason in result["skipped"].items():
        table.add_row(variant_id, "", "", f"n/a: {reason}", "", "")
    return [table]
