"""The study's named variants, each a preset of the grid in `grid.py`.

Registered under the entry-point group `bench.variants` by this project's pyproject.toml, the same
path a third-party plugin takes. Cache per token per layer, with H query heads of size d_head and
b bytes per element: QKV and Q=K-V 2*H*d_head*b; Q-K=V and Q=K=V H*d_head*b; GQA-g 2*g*d_head*b;
Q-GQA-g g*d_head*b; MQA 2*d_head*b; Q-MQA d_head*b.

The "+" forms read the correction's fixed 2D tensor P as the paper describes it, channels of the row
i and of the column j; softmax cancels the row part, leaving a learned temperature sum(w) and a
per-key bias. The paper's exact P is UNCONFIRMED, so the second natural reading is registered too:
`tied-qk-rel` and `tied-qkv-rel`, "(Q=K-V)+rel" and "(Q=K=V)+rel", with P the m sinusoid channels
of the offset i - j, which makes P w a learned relative-position bias that softmax keeps. They are
readings of the "+" variants, not designs: diagnostics (`ablates()` names the "+" variant), run by
the suite `plus-ablation` only. Their caches are their plain forms'.
"""

from __future__ import annotations

import dataclasses

from .cla import CrossLayerVariant
from .grid import Positional, SharedProjectionVariant, Tie
from .int8 import int8_cache
from .mla import LatentVariant
from .window import SlidingWindowVariant

#: m of the "+" correction: the paper's value for synthetic and anomaly tasks (50 for vision, UNCONFIRMED)
PLUS_CHANNELS = 10

QKV = SharedProjectionVariant("qkv", "QKV", Tie.NONE, summary="baseline: separate W_Q, W_K, W_V; softmax(a Q K^T) V")
TIED_QK = SharedProjectionVariant(
    "tied-qk", "Q=K-V", Tie.QK, summary="W_QK serves as query and key: exactly symmetric scores"
)
TIED_KV = SharedProjectionVariant(
    "tied-kv", "Q-K=V", Tie.KV, summary="W_KV serves as key and value: output is a convex combination of keys"
)
TIED_QKV = SharedProjectionVariant("tied-qkv", "Q=K=V", Tie.QKV, summary="one projection: softmax(a K K^T) K")
TIED_QK_POS = SharedProjectionVariant(
    "tied-qk-pos",
    "(Q=K-V)+",
    Tie.QK,
    positional_channels=PLUS_CHANNELS,
    summary="Q=K-V with a learned 2D positional term that makes scores asymmetric",
)
TIED_QKV_POS = SharedProjectionVariant(
    "tied-qkv-pos",
    "(Q=K=V)+",
    Tie.QKV,
    positional_channels=PLUS_CHANNELS,
    summary="Q=K=V with a learned 2D positional term that makes scores asymmetric",
)
GQA4 = SharedProjectionVariant("gqa4", "GQA-4", Tie.NONE, kv_heads=4, summary="4 KV heads shared by all query heads")
GQA8 = SharedProjectionVariant("gqa8", "GQA-8", Tie.NONE, kv_heads=8, summary="8 KV heads shared by all query heads")
MQA = SharedProjectionVariant("mqa", "MQA", Tie.NONE, kv_heads=1, summary="one K and one V head for all query heads")
TIED_KV_GQA4 = SharedProjectionVariant(
    "tied-kv-gqa4", "Q-GQA-4", Tie.KV, kv_heads=4, summary="Q-K=V with 4 shared KV heads"
)
TIED_KV_GQA8 = SharedProjectionVariant(
    "tied-kv-gqa8", "Q-GQA-8", Tie.KV, kv_heads=8, summary="Q-K=V with 8 shared KV heads"
)
TIED_KV_MQA = SharedProjectionVariant(
    "tied-kv-mqa", "Q-MQA", Tie.KV, kv_heads=1, summary="Q-K=V with one KV head: the smallest cache"
)


def _plus_ablation(of: SharedProjectionVariant, part: str) -> SharedProjectionVariant:
    """`of` with one part of its "+" correction taken away: "scale" (sum(w) frozen at 1) or "bias"."""
    scale = part != "scale"
    what = "the score scale sum(w) frozen at 1" if part == "scale" else "the per-key bias left out"
    return dataclasses.replace(
        of,
        id=f"{of.id}-{'fixed-scale' if part == 'scale' else 'no-bias'}",
        display_name=f"{of.display_name} {'fixed scale' if part == 'scale' else 'no bias'}",
        plus_scale=scale,
        plus_bias=not scale,
        ablation_of=of.id,
        summary=f"ablation of {of.display_name}: {what}",
    )


#: the "+" correction's two parts taken away one at a time (suite `plus-ablation`)
TIED_QK_POS_FIXED_SCALE = _plus_ablation(TIED_QK_POS, "scale")
TIED_QK_POS_NO_BIAS = _plus_ablation(TIED_QK_POS, "bias")
TIED_QKV_POS_FIXED_SCALE = _plus_ablation(TIED_QKV_POS, "scale")
TIED_QKV_POS_NO_BIAS = _plus_ablation(TIED_QKV_POS, "bias")


def _relative_reading(of: SharedProjectionVariant) -> SharedProjectionVariant:
    """`of` with P read as m sinusoid channels of the offset i - j: the same m weights and bias b."""
    return dataclasses.replace(
        of,
        id=of.id.removesuffix("-pos") + "-rel",
        display_name=f"{of.display_name}rel",
        positional=Positional.RELATIVE,
        ablation_of=of.id,
        summary=f"second reading of {of.display_name}: P of the offsets i - j, a learned relative-position bias",
    )


#: the "+" correction with P read as offsets i - j (suite `plus-ablation`)
TIED_QK_REL = _relative_reading(TIED_QK_POS)
TIED_QKV_REL = _relative_reading(TIED_QKV_POS)


# --- the field's other cache-saving designs, each its own module on the same cache contract -----------

#: MLA (DeepSeek-V2): a cached latent of 4 d_head plus a shared rotary key of d_head / 2
MLA = LatentVariant()
#: CLA: K and V shared by 2 adjacent layers, on QKV and crossed with the study's Q-K=V and with MQA
CLA = CrossLayerVariant("cla", "CLA-2", Tie.NONE, summary="K and V computed once per 2 layers")
TIED_KV_CLA = CrossLayerVariant("tied-kv-cla", "Q-K=V CLA-2", Tie.KV, summary="Q-K=V with K=V shared by 2 layers")
MQA_CLA = CrossLayerVariant("mqa-cla", "MQA CLA-2", Tie.NONE, kv_heads=1, summary="MQA with K, V shared by 2 layers")
#: sliding-window attention over the last 16 tokens (half the default LM context): a bounded cache
SWA = SlidingWindowVariant("swa", "SWA-16", Tie.NONE, window=16, summary="QKV over the last 16 tokens only")
#: an int8 KV cache crossed with QKV and with the study's Q-K=V
QKV_INT8 = int8_cache(QKV)
TIED_KV_INT8 = int8_cache(TIED_KV)
