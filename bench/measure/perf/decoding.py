"""Decoding speed: tokens per second through the real KV cache at long contexts, next to its bytes.

A small reference decoder (`bench.measure.decoder`) around every variant that decodes. Per variant the longest
context is prefilled once (one causal pass, one sequence, into the variant's own caches) and
copied to every sequence of the batch; then, at each context length, `new_tokens` tokens are decoded
one at a time (greedy) after it. The batch makes the cache, not the weights, the bulk of what a
step reads. Variants and contexts are interleaved round by round, and the speed-up over the
baseline (QKV) is paired by round.

The longest prefill serves every shorter context, since a causal pass's first c positions are the
prefill of c tokens. Decoding at one context overwrites the slots right after it: that changes the
values a later, longer decode reads, not how long it takes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from bench.fit.memory import PeakMemory
from bench.measure.perf.common import PerfContext, Spread, calibrated, interleave, paired_ratios
from bench_record.compare import BASELINE

if TYPE_CHECKING:
    from rich.console import RenderableType

    from bench.measure.decoder import DecoderConfig
    from bench_variants.base import LayerCache, VariantSpec

COMPARED = ("tied-kv", "gqa4", "gqa8", "mqa", "mla", "cla", "mqa-cla", "swa", "tied-kv-int8")  # verdicts printed


@dataclass(frozen=True)
class DecodingSettings:
    """Attributes:
    repeats: Rounds; each decodes every variant at every context once.
    d_model, n_layers, heads, vocab: The GPT. 16 heads, so that GQA-8 holds half of QKV's KV heads
        (at 8 heads GQA-8 would be QKV itself).
    contexts: Tokens already in the cache when decoding starts.
    batch: Sequences decoded together.
    new_tokens: Tokens decoded per measurement.
    sample_s: Least duration of one timing sample (the decode of `new_tokens` is repeated to fill it).
    baseline: The variant speed-ups are relative to.
    variants: Variant ids; None: every registered variant that decodes.
    """

    repeats: int = 3
    d_model: int = 256
    n_layers: int = 4
    heads: int = 16
    vocab: int = 256
    contexts: tuple[int, ...] = (1024, 4096, 8192)
    batch: int = 8
    new_tokens: int = 16
    sample_s: float = 0.3
    baseline: str = BASELINE
    variants: tuple[str, ...] | None = None


def settings(quick: bool, repeats: int | None = None) -> DecodingSettings:
    """Full: d=256, 4 layers, contexts 1k/4k/8k, batch 8, 16 tokens. Quick: d=64, 2 layers, 256/1k, batch 4."""
    quick_base = DecodingSettings(
        repeats=2, d_model=64, n_layers=2, contexts=(256, 1024), batch=4, new_tokens=4, sample_s=0.02
    )
    base = quick_base if quick else DecodingSettings()
    return dataclasses.replace(base, repeats=repeats or base.repeats)


@dataclass
class Decoder:
    """A variant's model with its batch of prefilled caches."""

    spec: VariantSpec
    model: Any
    caches: list[LayerCache]
    prefill_s: float
    memory: dict[str, Any]

    @property
    def cache_bytes(self) -> int:
        from bench.measure.decoder import reference_decoder

        return reference_decoder().held_bytes(self.caches)


def prefilled(spec: VariantSpec, config: DecoderConfig, options: DecodingSettings) -> Decoder:
    """Build the GPT around `spec`, prefill the longest context once, copy it to the whole batch."""
    import torch

    from bench.measure.decoder import reference_decoder

    torch.manual_seed(0)
    model = reference_decoder().build(config, spec).eval()
    longest = max(options.contexts)
    capacity = longest + options.new_tokens
    with PeakMemory() as memory, torch.inference_mode():
        start = time.perf_counter()
        one = model.new_cache(batch_size=1, capacity=capacity)
        model(torch.randint(config.vocab_size, (1, longest)), caches=one)
        caches = model.new_cache(batch_size=options.batch, capacity=capacity)
        for batch_cache, one_cache in zip(caches, one, strict=True):
            batch_cache.fill_from(one_cache)
        prefill_s = time.perf_counter() - start
    return Decoder(spec, model, caches, prefill_s, memory.as_dict())


def decode_timer(decoder: Decoder, context: int, options: DecodingSettings) -> Callable[[], float]:
    """Seconds to decode `new_tokens` tokens (greedy) for the whole batch after `context` cached tokens."""
    import torch

    start_B1 = torch.randint(options.vocab, (options.batch, 1), generator=torch.Generator().manual_seed(context))

    def decode() -> None:
        for cache in decoder.caches:
            cache.length = context  # the prefill's first `context` tokens
        idx_B1 = start_B1
        with torch.inference_mode():
            for _ in range(options.new_tokens):
                logits_B1V = decoder.model(idx_B1, caches=decoder.caches)
                idx_B1 = logits_B1V[:, -1:].argmax(-1)

    return calibrated(decode, options.sample_s)


def measure(options: DecodingSettings, ctx: PerfContext) -> dict[str, Any]:
    """Tokens/s of every decoding variant at every context, interleaved; bytes held; speed-ups."""
    from bench.measure.decoder import reference_decoder
    from bench.registry import variants

    context = max(options.contexts) + options.new_tokens
    config = reference_decoder().config(vocab_size=options.vocab, context=context, n_layers=options.n_layers,
                                        d_model=options.d_model, n_heads=options.heads)  # fmt: skip
    registry = variants()
    specs = registry.resolve(list(options.variants)) if options.variants else list(registry)
    baseline = registry.get(options.baseline)
    specs = [baseline, *(s for s in specs if s is not baseline)]
    attention = config.attention
    runnable = [s for s in specs if s.supports.decoding and s.check(attention) is None]
    decoders = {}
    for spec in runnable:
        ctx.note(f"prefilling {max(options.contexts)} tokens: {spec.id}")
        decoders[spec.id] = prefilled(spec, config, options)
    contenders = {}
    for context in options.contexts:
        for spec in runnable:
            contenders[f"{spec.id} @ {context}"] = decode_timer(decoders[spec.id], context, options)
    seconds = interleave(contenders, options.repeats, ctx.note)
    rows = {s.id: _row(decoders[s.id], seconds, options, baseline.id) for s in runnable}
    weights = sum(p.numel() * p.element_size() for p in decoders[baseline.id].model.parameters())
    longest = str(max(options.contexts))
    return {
        "model": dataclasses.asdict(cast(Any, config)),  # the reference decoder's config is a dataclass
        "weights_bytes": weights,
        "baseline": baseline.id,
        "variants": rows,
        "skipped": {s.id: s.check(attention) or "declares no decoding support" for s in specs if s not in runnable},
        "verdicts": {v: _verdict(rows[v]["contexts"][longest]["speedup_vs_baseline"]) for v in COMPARED if v in rows},
    }


def _row(decoder: Decoder, seconds: dict[str, list[float]], options: DecodingSettings, baseline: str) -> dict[str, Any]:
    spec, tokens = decoder.spec, options.batch * options.new_tokens
    declared = spec.cache_spec(decoder.model.config.block.attention)
    dtype = decoder.caches[0].dtype
    per_context = {}
    for context in options.contexts:
        mine, base = seconds[f"{spec.id} @ {context}"], seconds[f"{baseline} @ {context}"]
        held = declared.bytes(context, options.n_layers, dtype, options.batch)
        per_context[str(context)] = {
            "tokens_per_s": Spread.of([tokens / t for t in mine]).as_dict(),
            "cache_bytes": held,  # what the cache holds for `context` tokens of every sequence
            "cache_gb_per_s": Spread.of([held * options.new_tokens / t / 1e9 for t in mine]).as_dict(),
            "speedup_vs_baseline": Spread.of(paired_ratios(base, mine)).as_dict(),
        }
    return {
        "display_name": spec.display_name,
        "cache_dtype": str(dtype).removeprefix("torch."),
        "cache_bytes_per_token": declared.bytes(1, options.n_layers, dtype),
        "cache_bytes_allocated": decoder.cache_bytes,
        "prefill_s": decoder.prefill_s,
        "prefill_memory": decoder.memory,
        "contexts": per_context,
    }


def _verdict(speedup: dict[str, float]) -> dict[str, Any]:
    s = Spread.from_dict(speedup)
    outcome = "beats" if s.low > 1 else "slower than" if s.high < 1 else "no clear difference from"
    return {"speedup": s.median, "low": s.low, "high": s.high, "outcome": outcome}


def render(result: dict[str, Any]) -> list[RenderableType]:
    from rich.table import Table

    m, base = result["model"], result["baseline"]
    contexts = list(next(iter(result["variants"].values()))["contexts"]) if result["variants"] else []
    longest = contexts[-1] if contexts else ""
    table = Table(
        title=f"Decoding through the KV cache: GPT d={m['d_model']}, {m['n_layers']} layers, {m['n_heads']} heads",
        caption=f"tokens/s of the whole batch, median \\[min-max] over rounds; cache: bytes held at {longest} tokens "
        f"(all sequences); weights {result['weights_bytes'] / 2**20:.1f} MiB; speed-up paired by round",
    )
    columns = ["variant", "study name", f"cache MiB @ {longest}", *(f"tok/s @ {c}" for c in contexts),
               f"cache GB/s @ {longest}", f"vs {base} @ {longest}"]  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col in ("variant", "study name") else "right")
    for variant_id, row in result["variants"].items():
        last = row["contexts"][longest]
        table.add_row(
            variant_id, row["display_name"], f"{last['cache_bytes'] / 2**20:,.1f}",
            *(Spread.from_dict(row["contexts"][c]["tokens_per_s"]).show(0, "") for c in contexts),
            f"{last['cache_gb_per_s']['median']:.1f}", Spread.from_dict(last["speedup_vs_baseline"]).show(),
        )  # fmt: skip
    lines = [
        f"{v} ({result['variants'][v]['display_name']}) {d['outcome']} {base} at {longest} tokens: "
        f"{d['speedup']:.2f}x its tokens/s [{d['low']:.2f}-{d['high']:.2f}]"
        for v, d in result["verdicts"].items()
    ]
    return [table, *lines]
