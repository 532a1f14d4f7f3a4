"""`bench check-variant`: the variant contract as a gate a plugin author runs before publishing.

Each check is a small function of (spec, config) that returns what it saw, raises `NotApplicable`
when the variant declares it does not do that thing, and raises anything else on failure.
`run_checks` runs every one in its own try/except, so one failure never hides the others.
The same properties are asserted over the registry by tests/variants/test_variant_contract.py and
tests/variants/test_kv_cache.py; this module lets a single variant be checked, even before it is packaged.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from bench.measure.costs import DecodeCheck
    from bench.measure.decoder import DecoderConfig
    from bench_variants.base import AttentionConfig, VariantSpec

PASS, FAIL, SKIP, INFO = "pass", "fail", "skipped", "info"
FIT_STEPS = 30  # optimizer steps of the no-NaN check: a second or two at the tiny size
DECODE_ATOL = 1e-5


class NotApplicable(Exception):
    """The variant declares it does not support what a check exercises."""


@dataclass(frozen=True)
class CheckResult:
    """One row of the report: the check, its status (pass, fail, skipped, info) and why."""

    check: str
    status: str
    detail: str


def load_target(target: str) -> VariantSpec:
    """The variant named by a registry id or display name, or by a `module:object` path.

    Raises:
        ImportError: the module cannot be imported, or has no such object.
        ValueError: the object is not a `VariantSpec`.
        KeyError: an unknown registry name (with did-you-mean suggestions).
    """
    from bench.registry import variants
    from bench_variants.base import VariantSpec

    if ":" not in target:
        spec: VariantSpec = variants().get(target)
        return spec
    module_name, _, attr = target.partition(":")
    fix = "give an importable module and a VariantSpec in it, e.g. my_pkg.variant:MY_VARIANT (check PYTHONPATH)"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure to import is the user's to fix, not a traceback
        raise ImportError(f"cannot import {module_name!r} of {target!r} ({type(exc).__name__}: {exc}); {fix}") from None
    if not attr or not hasattr(module, attr):
        raise ImportError(f"module {module_name!r} has no object {attr!r} ({target!r}); {fix}")
    obj: Any = getattr(module, attr)
    if isinstance(obj, type) and issubclass(obj, VariantSpec):
        obj = obj()
    if not isinstance(obj, VariantSpec):
        raise ValueError(f"{target!r} is a {type(obj).__name__}, not a VariantSpec; {fix}")
    return obj


def small_config(spec: VariantSpec) -> AttentionConfig:
    """The smallest of a few configs the variant accepts (head size 8; 4, 8 or 16 heads)."""
    from bench_variants.base import AttentionConfig

    reasons = []
    for heads in (4, 8, 16):
        config = AttentionConfig(d_model=8 * heads, n_heads=heads)
        reason = spec.check(config)
        if reason is None:
            return config
        reasons.append(f"H={heads}: {reason}")
    raise ValueError(f"accepts none of the small configs ({'; '.join(reasons)})")


def _gpt(config: AttentionConfig, layers: int = 2) -> DecoderConfig:
    from bench.measure.decoder import reference_decoder

    return reference_decoder().config(
        vocab_size=37, context=24, n_layers=layers, d_model=config.d_model, n_heads=config.n_heads
    )


def _x(config: AttentionConfig, seq: int, batch: int = 2) -> Tensor:
    import torch

    return torch.randn(batch, seq, config.d_model)


def check_construction(spec: VariantSpec, config: AttentionConfig) -> str:
    from torch import nn

    module = spec.build(config)
    if not isinstance(module, nn.Module):
        raise TypeError(f"build returned a {type(module).__name__}, not a torch module")
    return f"builds at d_model={config.d_model}, H={config.n_heads}"


def check_shapes(spec: VariantSpec, config: AttentionConfig) -> str:
    module = spec.build(config)
    for seq in (1, 5, 13):
        shape = tuple(module(_x(config, seq)).shape)
        if shape != (2, seq, config.d_model):
            raise ValueError(f"input (2, {seq}, {config.d_model}) gave output {shape}")
    return "output shape = input shape at T = 1, 5, 13"


def check_masks(spec: VariantSpec, config: AttentionConfig) -> str:
    import torch

    if not spec.supports.key_padding:
        raise NotApplicable("declares no key-padding support")
    module = spec.build(config).eval()
    x = _x(config, 8)
    pad_BT = torch.zeros(2, 8, dtype=torch.bool)
    pad_BT[0, 2:4] = True  # in the middle: later queries would see these keys without the mask
    pad_BT[1, 7:] = True
    x_changed = x.clone()
    x_changed[pad_BT] = torch.randn_like(x_changed[pad_BT]) * 10
    with torch.no_grad():
        y, y_changed = module(x, pad_mask_BT=pad_BT), module(x_changed, pad_mask_BT=pad_BT)
        unmasked = module(x_changed)
    diff = (y[~pad_BT] - y_changed[~pad_BT]).abs().max().item()
    if not diff <= 1e-5:  # NaN fails too
        raise ValueError(f"changing masked-out keys moved the other outputs by {diff:.2e}")
    if torch.allclose(y[~pad_BT], unmasked[~pad_BT], atol=1e-4):
        raise ValueError("the key padding mask had no effect at all (outputs equal those without it)")
    return f"masked keys move other outputs by {diff:.1e}"


def check_causality(spec: VariantSpec, config: AttentionConfig) -> str:
    import torch

    if not spec.supports.causal:
        raise NotApplicable("declares no causal support")
    module = spec.build(config).eval()
    x = _x(config, 9)
    x_changed = x.clone()
    x_changed[:, 5:] = torch.randn_like(x_changed[:, 5:])
    with torch.no_grad():
        y, y_changed = module(x, causal=True), module(x_changed, causal=True)
    diff = (y[:, :5] - y_changed[:, :5]).abs().max().item()
    if not diff <= 1e-6:  # NaN fails too
        raise ValueError(f"changing tokens 5.. moved outputs 0..4 by {diff:.2e}")
    return f"future tokens move earlier outputs by {diff:.1e}"


def _decoded(spec: VariantSpec, config: AttentionConfig, without: str) -> DecodeCheck:
    """20 tokens decoded one at a time through a real cache, against the full pass (`bench.measure.costs`)."""
    from bench.measure.costs import measure_decoding

    if not spec.supports.decoding:
        raise NotApplicable(without)
    return measure_decoding(spec, _gpt(config), n_tokens=20)


def check_decoding(spec: VariantSpec, config: AttentionConfig) -> str:
    result = _decoded(spec, config, "declares no incremental decoding")
    if not result.max_abs_diff <= max(DECODE_ATOL, spec.decode_atol):  # NaN fails too
        raise ValueError(f"token-by-token logits differ from the full pass by {result.max_abs_diff:.2e}")
    return f"20 tokens one at a time = full pass (max |diff| {result.max_abs_diff:.1e})"


def check_cache_bytes(spec: VariantSpec, config: AttentionConfig) -> str:
    result = _decoded(spec, config, "declares no incremental decoding, so holds no cache")
    if not result.bytes_match:
        raise ValueError(
            f"declares {result.bytes_derived:,} B (kv_cache_bytes, from cache_spec) but its cache holds "
            f"{result.bytes_held:,} B (2 layers, 20 tokens, fp32)"
        )
    return f"declared = held = {result.bytes_held:,} B (2 layers, 20 tokens, fp32)"


def check_no_nan(spec: VariantSpec, config: AttentionConfig) -> str:
    import torch

    from bench.measure.decoder import reference_decoder

    torch.manual_seed(0)
    decoder = reference_decoder()
    model = decoder.build(_gpt(config), spec).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    idx_BT = torch.randint(37, (8, 17))
    for step in range(FIT_STEPS):
        loss = decoder.lm_loss(model(idx_BT[:, :-1]), idx_BT[:, 1:])
        if not torch.isfinite(loss):
            raise ValueError(f"loss is {loss.item()} at step {step} of {FIT_STEPS}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise ValueError(f"non-finite parameters after {FIT_STEPS} steps: {', '.join(bad[:3])}")
    return f"{FIT_STEPS} AdamW steps on random tokens, final loss {loss.item():.3f}"


def speed_vs_sdpa(spec: VariantSpec, config: AttentionConfig) -> str:
    """Forward+backward time over plain multi-head SDPA's at (4, 64, d_model): printed, never a failure."""
    from bench.measure.perf.attention import plain_mha
    from bench.measure.perf.common import best_ratio, calibrated, interleave

    x_BTD = _x(config, 64, batch=4)
    modules = {"variant": spec.build(config), "sdpa": plain_mha(config)}

    def timer(module: Any) -> Callable[[], float]:
        def step() -> None:
            module.zero_grad(set_to_none=True)
            module(x_BTD).sum().backward()

        return calibrated(step, 0.02)

    times = interleave({name: timer(m) for name, m in modules.items()}, rounds=3)
    ratio = best_ratio(times["variant"], times["sdpa"])
    return f"{ratio:.2f}x plain multi-head SDPA's fwd+bwd time (B=4, T=64; not a pass/fail check)"


CHECKS: tuple[tuple[str, Callable[[VariantSpec, AttentionConfig], str]], ...] = (
    ("construction", check_construction),
    ("shapes", check_shapes),
    ("masks", check_masks),
    ("causality", check_causality),
    ("decoding = full pass", check_decoding),
    ("declared bytes = held bytes", check_cache_bytes),
    ("no NaN over a short fit", check_no_nan),
    ("speed vs SDPA", speed_vs_sdpa),
)
INFORMATIVE = {"speed vs SDPA"}


def _run_one(name: str, check: Callable[[VariantSpec, AttentionConfig], str], spec: VariantSpec,
             config: AttentionConfig) -> CheckResult:  # fmt: skip
    try:
        detail = check(spec, config)
    except NotApplicable as exc:
        return CheckResult(name, SKIP, str(exc))
    except Exception as exc:  # a failing check is reported with its message, and the next one runs
        return CheckResult(name, FAIL, f"{type(exc).__name__}: {exc}")
    return CheckResult(name, INFO if name in INFORMATIVE else PASS, detail)


def run_checks(spec: VariantSpec) -> list[CheckResult]:
    """Every check against `spec` at its smallest accepted config; a config none accepts fails all."""
    import torch

    try:
        config = small_config(spec)
    except Exception as exc:  # the variant cannot even say which config it accepts
        return [CheckResult(name, FAIL, f"no config to check at: {type(exc).__name__}: {exc}") for name, _ in CHECKS]
    results = []
    for name, check in CHECKS:
        torch.manual_seed(0)
        results.append(_run_one(name, check, spec, config))
    return results
