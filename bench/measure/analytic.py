"""The study's analytic numbers, measured at its shapes: KV-cache bytes by decoding, parameter counts.

Cache reductions and parameter counts follow from shapes, not from seeds, so they are checked apart
from the empirical claims. Each decoding variant decodes a few tokens through the real KV cache of
one block at the study's 300M attention shape (width 1024, H = 16 heads of 64); the bytes its cache
holds give the reduction against QKV (per layer, so the same for any depth), and the same cache's
decoding is checked against the full causal pass. Parameter counts are the built model's, on the meta
device, at the full 300M shape. `bench run` writes `results/analytic/study_shape.json`; the
leaderboard puts it beside the paper's figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench_record.compare import BASELINE

VERSION = "1"
FILE = Path("analytic") / "study_shape.json"
TOKENS = 4  # decoded per variant: the bytes per token are exact from the first token on
DECODE_TOLERANCE = 1e-4  # max |logit difference| between decoding and the full pass (fp32)


def measure(variant_ids: list[str] | None = None) -> dict[str, Any]:
    """Every built-in decoding variant (not ablations) measured at the study's 300M shape, QKV first."""
    from bench.measure.costs import measure_decoding, parameter_count
    from bench.measure.decoder import reference_decoder
    from bench.registry import BUILTIN_DISTRIBUTION, variants

    registry = variants()
    decoder = reference_decoder()
    study = decoder.study_300m()
    one_block = decoder.config(vocab_size=256, context=64, n_layers=1, d_model=study.d_model, n_heads=study.n_heads)
    ids = variant_ids or [n for n in registry.names() if registry.origin(n) == BUILTIN_DISTRIBUTION]
    rows: dict[str, Any] = {}
    for vid in sorted(ids, key=lambda v: (v != BASELINE, v)):
        spec = registry.get(vid)
        if spec.ablates():
            continue
        row: dict[str, Any] = {"display_name": spec.display_name, "parameters_300m": parameter_count(spec, study)}
        if spec.supports.decoding and spec.supports.causal:
            check = measure_decoding(spec, one_block, TOKENS)
            row.update(
                bytes_held_per_token_per_layer=check.bytes_held // TOKENS,
                bytes_derived_per_token_per_layer=check.bytes_derived // TOKENS,
                decode_max_abs_diff=check.max_abs_diff,
                decode_matches=check.max_abs_diff < max(DECODE_TOLERANCE, spec.decode_atol),
            )
        else:
            row["decoding"] = "not a decoding variant (the paper uses it on non-causal tasks only)"
        rows[vid] = row
    base = rows.get(BASELINE, {}).get("bytes_held_per_token_per_layer")
    for row in rows.values():
        held = row.get("bytes_held_per_token_per_layer")
        row["reduction_measured"] = 1 - held / base if held is not None and base else None
    shape = {"n_heads": study.n_heads, "head_dim": study.d_model // study.n_heads, "d_model": study.d_model,
             "n_layers": study.n_layers, "cache_dtype": "float32", "tokens_decoded": TOKENS}  # fmt: skip
    return {"version": VERSION, "shape": shape, "variants": rows}


def write(results: Path) -> Path:
    """Measure and write `results/analytic/study_shape.json` (no timestamps: same code, same bytes)."""
    from bench.record.store import write_json_atomic

    path = results / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, measure())
    return path
