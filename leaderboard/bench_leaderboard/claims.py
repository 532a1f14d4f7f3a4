"""The study's exact claims: cache reductions and parameter counts, which follow from shapes, not seeds.

Claim (f) reads `Cells` (task id -> variant id -> fresh ok record at the task's primary scale): each cell's
cache saving against QKV, measured where we decoded, equals the formula at its own head count; the
analytic checks measure the study's 300M shape itself. The study's empirical claims are statistical
tests over paired seeds (`tested.py`). Tasks that did not pass the learning gate (`model.learn_gate`)
are already absent from `Cells`; `evaluate` names them in the evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bench_record import CellRecord

from .model import BASELINE, Cells
from .paper import PAPER_NAMES

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
Verdict = tuple[str, str]

#: variant id -> (tensors cached per KV head, KV heads or None for all H); used when a record lacks the fields
LAYOUTS: dict[str, tuple[int, int | None]] = {
    "qkv": (2, None), "tied-qk": (2, None), "tied-qk-pos": (2, None), "tied-kv": (1, None),
    "tied-qkv": (1, None), "tied-qkv-pos": (1, None), "gqa4": (2, 4), "gqa8": (2, 8), "mqa": (2, 1),
    "tied-kv-gqa4": (1, 4), "tied-kv-gqa8": (1, 8), "tied-kv-mqa": (1, 1),
}  # fmt: skip
#: the paper's reductions at H = 16 (Section 2)
PAPER_REDUCTIONS = {"tied-kv": 0.5, "gqa4": 0.75, "tied-kv-gqa4": 0.875, "mqa": 0.9375, "tied-kv-mqa": 0.96875}


#: the paper's parameter counts of its 300M model (Table 4's models, counted by the study's code)
PAPER_PARAMS_300M = {
    "qkv": 305_534_976, "tied-qk": 284_542_976, "tied-kv": 284_542_976, "tied-qkv": 263_550_976,
    "gqa4": 274_046_976, "mqa": 266_174_976, "tied-kv-gqa4": 268_798_976, "tied-kv-mqa": 264_862_976,
}  # fmt: skip


def analytic_checks(measured: Mapping[str, Any] | None) -> dict[str, Any]:
    """The paper's cache reductions (H = 16) and 300M parameter counts against what `bench run` measured.

    Args:
        measured: `results/analytic/study_shape.json` (see `bench.measure.analytic`), or None when absent.
    """
    if not measured:
        return {
            "rows": [],
            "shape": {},
            "note": "not measured yet: `bench run` writes results/analytic/study_shape.json",
        }
    rows = []
    found = measured.get("variants", {})
    order = sorted(found, key=lambda v: (v != "qkv", found[v].get("reduction_measured") or 0.0, v))
    for vid, m in ((v, found[v]) for v in order):
        paper_red = PAPER_REDUCTIONS.get(vid, 0.0 if vid in ("qkv", "tied-qk") else None)
        paper_params = PAPER_PARAMS_300M.get(vid)
        red = m.get("reduction_measured")
        against_paper = []
        if paper_red is not None and red is not None:
            against_paper.append(abs(red - paper_red) < 1e-9)
        if paper_params is not None:
            against_paper.append(m.get("parameters_300m") == paper_params)
        held = m.get("bytes_held_per_token_per_layer")
        cache_ok = m.get("decode_matches") is not False and held == m.get("bytes_derived_per_token_per_layer")
        agrees = cache_ok and all(against_paper)
        status = (HELD if against_paper else "no paper figure") if agrees else NOT_HELD
        rows.append({"variant": vid, "display_name": m.get("display_name", vid), "held": held, "reduction": red,
                     "paper_reduction": paper_red, "parameters": m.get("parameters_300m"),
                     "paper_parameters": paper_params, "decode_diff": m.get("decode_max_abs_diff"),
                     "status": status, "note": m.get("decoding", "")})  # fmt: skip
    return {"rows": rows, "shape": dict(measured.get("shape", {})), "note": ""}


def _name(variant: str) -> str:
    return PAPER_NAMES.get(variant, variant)


def _combine(verdicts: list[str]) -> str:
    if NOT_HELD in verdicts:
        return NOT_HELD
    return HELD if verdicts and all(v == HELD for v in verdicts) else INCONCLUSIVE


def _heads(record: CellRecord) -> Any:
    """H the cache figures were computed at: `costs.attention.n_heads`, else the config's."""
    attention = record.costs.attention if record.costs else None
    if attention is not None and attention.n_heads is not None:
        return attention.n_heads
    return (record.config or {}).get("n_heads")


def _layout(record: CellRecord) -> tuple[int, int] | None:
    """(tensors cached per KV head, KV heads) at the record's H; None when H is unknown."""
    heads = _heads(record)
    if not isinstance(heads, int) or isinstance(heads, bool) or heads <= 0:
        return None
    variant = record.variant
    tensors, kv_heads = LAYOUTS.get(variant.id, (2, None))
    if variant.tie is not None:
        tensors = 1 if variant.tie in ("k=v", "q=k=v") else 2
    if variant.kv_heads is not None:
        g = variant.kv_heads
        if g != "H" and not g.isdigit():
            return None
        kv_heads = None if g == "H" else int(g)
    return tensors, heads if kv_heads is None else kv_heads


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.6g}%"


def expected_reduction(tensors: int, kv_heads: int, heads: int) -> float:
    """The cache saving against QKV: 1 - tensors * kv_heads / (2 * H)."""
    return 1 - tensors * kv_heads / (2 * heads)


def _observed_reduction(record: CellRecord, base: CellRecord) -> tuple[float, str] | None:
    """(1 - bytes / QKV's bytes, how it was obtained): measured bytes held when both have them."""
    if record.costs is None or base.costs is None:  # an ok record has its costs
        return None
    mine, theirs = record.costs.kv_measured, base.costs.kv_measured
    if mine and theirs and mine.bytes_held and theirs.bytes_held and mine.tokens == theirs.tokens:
        return 1 - mine.bytes_held / theirs.bytes_held, "measured"
    per_token, base_per_token = record.costs.kv_bytes_per_token, base.costs.kv_bytes_per_token
    if per_token is None or not base_per_token:
        return None
    return 1 - per_token / base_per_token, "derived, not measured"


def _reduction_checks(cells: Cells, variant: str) -> tuple[list[str], list[bool]]:
    lines, matches = [], []
    for task in sorted(t for t, g in cells.items() if variant in g and BASELINE in g):
        record = cells[task][variant]
        layout, observed = _layout(record), _observed_reduction(record, cells[task][BASELINE])
        if layout is None or observed is None:
            lines.append(f"  {task}: no head count or cache figures")
            continue
        heads = int(_heads(record))
        expected = expected_reduction(*layout, heads)
        match = abs(observed[0] - expected) < 1e-9
        matches.append(match)
        verdict = "matches" if match else "DIFFERS from"
        lines.append(f"  {task}: {_pct(observed[0])} ({observed[1]}) {verdict} expected {_pct(expected)} at H={heads}")
    return lines, matches


def cache_reductions(cells: Cells) -> Verdict:
    """(f) Cache savings vs QKV equal 1 - tensors*kv_heads/(2H), measured where we decoded.

    The paper's figures at H = 16 (50%, 75%, 87.5%, 93.75%, 96.875%) are checked against the same
    formula; at our configs H differs, so each cell is checked against the formula at its own H.
    """
    lines, verdicts = [], []
    for variant, paper in PAPER_REDUCTIONS.items():
        tensors, kv_heads = LAYOUTS[variant]
        formula = expected_reduction(tensors, 16 if kv_heads is None else kv_heads, 16)
        ok_paper = abs(formula - paper) < 1e-12
        found, matches = _reduction_checks(cells, variant)
        status = INCONCLUSIVE if not matches else HELD if all(matches) and ok_paper else NOT_HELD
        verdicts.append(status)
        lines.append(f"{_name(variant)}: paper {_pct(paper)} at H=16, formula {_pct(formula)} -> {status}")
        lines.extend(found or ["  no cell with both this variant and QKV"])
    lines.append("note: the paper prints 96.9% for Q-MQA at 1.2B, where H=32 gives 98.4375%")
    return _combine(verdicts), "\n".join(lines)


Claim = tuple[str, str, Callable[[Cells], Verdict]]
#: the exact check; the study's empirical claims are tested in `tested.py`
CLAIMS: tuple[Claim, ...] = (
    (
        "f",
        "KV-cache reductions: Q-K=V 50%, GQA-4 75%, Q-GQA-4 87.5%, MQA 93.75%, Q-MQA 96.875% (H=16)",
        cache_reductions,
    ),
)


#: claim id -> the tasks it reads (the tested claims' too); a claim not listed reads every task
CLAIM_TASKS = {
    "a": ("lm",), "b": ("lm",), "c": ("reverse", "swap"), "e": ("mnist", "fashion-mnist"),
    "s": ("reverse", "sort", "sub", "swap", "copy"),
}  # fmt: skip


def left_out_note(claim_id: str, excluded: Mapping[str, str]) -> str:
    """The tasks a claim would read that the learning gate left out, with why; "" when none."""
    scope = CLAIM_TASKS.get(claim_id)
    tasks = [t for t in excluded if scope is None or t in scope]
    if not tasks:
        return ""
    lines = [f"  {t}: {excluded[t]}" for t in tasks]
    return "\n".join(["left out (the task did not pass the learning gate, so its results are not evidence):", *lines])


def evaluate(cells: Cells, excluded: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """Every claim in `CLAIMS` evaluated on `cells`, in order: id, claim, status, evidence.

    Args:
        cells: task id -> variant id -> fresh ok record, without the tasks that did not pass the gate.
        excluded: task id -> why it was left out (see `model.left_out`), named in the evidence.
    """
    out = []
    for claim_id, text, check in CLAIMS:
        status, evidence = check(cells)
        note = left_out_note(claim_id, excluded or {})
        evidence = f"{evidence}\n{note}" if note else evidence
        out.append({"id": claim_id, "claim": text, "status": status, "evidence": evidence})
    return out
