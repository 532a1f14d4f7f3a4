"""The study's claims, each a small pure function over our current results: (status, evidence).

A claim is "held" when our confidence intervals support it, "not held" when they contradict it, and
"inconclusive" when intervals overlap, a cell has fewer than two seeds, or cells are missing. Every
function reads `Cells` (task id -> variant id -> fresh ok record at the task's primary scale) and
nothing else, so each can be tested on hand-written dicts. Tasks that did not pass the learning gate
(`model.learn_gate`) are already absent from `Cells`; `evaluate` names them in the evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .model import BASELINE, Cells
from .paper import PAPER_NAMES

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
Verdict = tuple[str, str]
Record = Mapping[str, Any]

LM_TOLERANCE = 0.05  # claim (a): Q-K=V within 5% of QKV perplexity
DIGIT_POINTS = 1.5  # claim (e): sharing variants within 1.5 accuracy points of QKV
SHARING = ("tied-qk", "tied-kv", "tied-qkv")
PLUS_PAIRS = (("tied-qk", "tied-qk-pos"), ("tied-qkv", "tied-qkv-pos"))
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
        measured: `results/analytic/study_shape.json` (see `bench.analytic`), or None when absent.
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


def _stats(record: Record) -> tuple[float, float, float, int]:
    s = record["summary"]
    return float(s["mean"]), float(s["ci95_low"]), float(s["ci95_high"]), int(s["n"])


def _describe(variant: str, record: Record) -> str:
    mean, low, high, n = _stats(record)
    return f"{_name(variant)} {mean:.4g} [{low:.4g}, {high:.4g}] (n={n})"


def _clearly(a: Record, b: Record, higher_is_better: bool) -> str:
    """ "better" or "worse" when a's 95% interval lies wholly on one side of b's, else "overlap"."""
    _, a_low, a_high, _ = _stats(a)
    _, b_low, b_high, _ = _stats(b)
    if a_low > b_high:
        return "better" if higher_is_better else "worse"
    if a_high < b_low:
        return "worse" if higher_is_better else "better"
    return "overlap"


def _combine(verdicts: list[str]) -> str:
    if NOT_HELD in verdicts:
        return NOT_HELD
    return HELD if verdicts and all(v == HELD for v in verdicts) else INCONCLUSIVE


def worst_on(cells: Cells, task: str, variant: str) -> Verdict:
    """Whether `variant` is clearly the worst on `task`: its interval lies below every other's."""
    group = cells.get(task, {})
    if variant not in group or len(group) < 2:
        return INCONCLUSIVE, f"{task}: missing cells (have {', '.join(map(_name, sorted(group))) or 'none'})"
    target = group[variant]
    hib = bool(target["task"]["higher_is_better"])
    order = sorted(group, key=lambda v: (-_stats(group[v])[0] if hib else _stats(group[v])[0], v))
    lines = [f"{task} ({'higher' if hib else 'lower'} is better): " + "; ".join(_describe(v, group[v]) for v in order)]
    if _stats(target)[3] < 2:
        return INCONCLUSIVE, "\n".join([*lines, f"{_name(variant)} has fewer than 2 seeds"])
    verdicts = {v: _clearly(target, group[v], hib) for v in order if v != variant}
    if all(v == "worse" for v in verdicts.values()):
        return HELD, "\n".join([*lines, f"{_name(variant)}'s interval lies on the worse side of every other variant's"])
    beaten = sorted(_name(v) for v, d in verdicts.items() if d == "better")
    if beaten:
        return NOT_HELD, "\n".join([*lines, f"{_name(variant)} is clearly better than {', '.join(beaten)}"])
    close = sorted(_name(v) for v, d in verdicts.items() if d == "overlap")
    return INCONCLUSIVE, "\n".join([*lines, f"intervals overlap with {', '.join(close)}"])


def _paired_change(cells: Cells, task: str, variant: str) -> tuple[str | None, dict[str, float]]:
    """Variant minus QKV, paired over seeds: (why not available, {mean, low, high, base, n})."""
    group = cells.get(task, {})
    missing = [_name(v) for v in (BASELINE, variant) if v not in group]
    if missing:
        return f"{task}: missing {', '.join(missing)}", {}
    comp = group[variant].get("baseline_comparison") or {}
    if comp.get("mean_diff") is None or comp.get("ci95_low") is None or int(comp.get("n") or 0) < 2:
        return f"{task}: {_name(variant)} has no paired comparison over 2 or more seeds", {}
    base = _stats(group[BASELINE])[0]
    keys = ("mean_diff", "ci95_low", "ci95_high")
    return None, {**{k: float(comp[k]) for k in keys}, "base": base, "n": float(comp["n"])}


def tied_kv_close_on_lm(cells: Cells) -> Verdict:
    """(a) Q-K=V's perplexity within 5% of QKV's: the paired 95% interval of the change stays <= 5%."""
    why, c = _paired_change(cells, "lm", "tied-kv")
    if why:
        return INCONCLUSIVE, why
    mean, low, high = (c[k] / c["base"] * 100 for k in ("mean_diff", "ci95_low", "ci95_high"))
    text = "\n".join(
        [
            f"lm: {_describe(BASELINE, cells['lm'][BASELINE])}; {_describe('tied-kv', cells['lm']['tied-kv'])}",
            f"change {mean:+.2f}% (paired 95% CI {low:+.2f}% to {high:+.2f}%, n={c['n']:.0f}); "
            f"threshold +{LM_TOLERANCE:.0%}; paper +3.1% (300M), +2.48% (1.2B)",
        ]
    )
    if high <= LM_TOLERANCE * 100:
        return HELD, text
    if low > LM_TOLERANCE * 100:
        return NOT_HELD, text
    return INCONCLUSIVE, text + "\nthe interval straddles the threshold"


def tied_qkv_worst_on_lm(cells: Cells) -> Verdict:
    """(b) Q=K=V clearly worst on LM perplexity (paper: +25.4%)."""
    return worst_on(cells, "lm", "tied-qkv")


def tied_qkv_worst_on_reverse_swap(cells: Cells) -> Verdict:
    """(c) Q=K=V worst on REVERSE and on SWAP (paper: 0.514 and 0.446, the lowest in Table 1)."""
    results = [worst_on(cells, task, "tied-qkv") for task in ("reverse", "swap")]
    return _combine([s for s, _ in results]), "\n".join(f"[{s}] {e}" for s, e in results)


def _plus_pair(cells: Cells, base: str, plus: str) -> Verdict:
    tasks = sorted(t for t, g in cells.items() if base in g and plus in g and not g[base]["task"].get("causal", False))
    if not tasks:
        return INCONCLUSIVE, f"{_name(plus)} vs {_name(base)}: no non-causal task where both ran"
    gains, tally, lines = [], {"better": 0, "worse": 0, "overlap": 0}, []
    for task in tasks:
        hib = bool(cells[task][base]["task"]["higher_is_better"])
        gain = (_stats(cells[task][plus])[0] - _stats(cells[task][base])[0]) * (1 if hib else -1)
        few = min(_stats(cells[task][v])[3] for v in (base, plus)) < 2
        verdict = "overlap" if few else _clearly(cells[task][plus], cells[task][base], hib)
        gains.append(gain)
        tally[verdict] += 1
        lines.append(f"  {task}: gain {gain:+.4g} ({verdict}{', <2 seeds' if few else ''})")
    avg = sum(gains) / len(gains)
    counts = f"{tally['better']} clearly better, {tally['worse']} clearly worse, {tally['overlap']} overlapping"
    head = f"{_name(plus)} vs {_name(base)}: mean gain {avg:+.4g} over {len(tasks)} task(s); {counts}"
    text = "\n".join([head, *lines])
    if avg > 0 and tally["better"] > tally["worse"]:
        return HELD, text
    if avg <= 0 and tally["worse"] > 0 and tally["worse"] >= tally["better"]:
        return NOT_HELD, text
    return INCONCLUSIVE, text


def plus_helps_symmetric(cells: Cells) -> Verdict:
    """(d) The "+" correction helps Q=K-V and Q=K=V on average over the non-causal tasks where both ran."""
    results = [_plus_pair(cells, base, plus) for base, plus in PLUS_PAIRS]
    return _combine([s for s, _ in results]), "\n".join(f"[{s}] {e}" for s, e in results)


def sharing_close_on_digits(cells: Cells) -> Verdict:
    """(e) Q=K-V, Q-K=V and Q=K=V no more than 1.5 accuracy points below QKV on MNIST and Fashion-MNIST."""
    verdicts, lines = [], [f"read as: paired 95% CI of (variant - QKV) stays above -{DIGIT_POINTS} points"]
    for task in ("mnist", "fashion-mnist"):
        for variant in SHARING:
            why, c = _paired_change(cells, task, variant)
            if why:
                verdicts.append(INCONCLUSIVE)
                lines.append(f"  {why}")
                continue
            mean, low, high = (c[k] * 100 for k in ("mean_diff", "ci95_low", "ci95_high"))
            status = HELD if low >= -DIGIT_POINTS else NOT_HELD if high < -DIGIT_POINTS else INCONCLUSIVE
            verdicts.append(status)
            lines.append(f"  {task} {_name(variant)}: {mean:+.2f} points [{low:+.2f}, {high:+.2f}] -> {status}")
    return _combine(verdicts), "\n".join(lines)


def _heads(record: Record) -> Any:
    """H the cache figures were computed at: `costs.attention.n_heads`, else the config's."""
    attention = record.get("costs", {}).get("attention")
    if isinstance(attention, Mapping) and attention.get("n_heads") is not None:
        return attention["n_heads"]
    return record.get("config", {}).get("n_heads")


def _layout(record: Record) -> tuple[int, int] | None:
    """(tensors cached per KV head, KV heads) at the record's H; None when H is unknown."""
    heads = _heads(record)
    if not isinstance(heads, int) or isinstance(heads, bool) or heads <= 0:
        return None
    variant = record["variant"]
    tensors, kv_heads = LAYOUTS.get(variant["id"], (2, None))
    if "tie" in variant:
        tensors = 1 if str(variant["tie"]) in ("k=v", "q=k=v") else 2
    if "kv_heads" in variant:
        g = str(variant["kv_heads"])
        if g != "H" and not g.isdigit():
            return None
        kv_heads = None if g == "H" else int(g)
    return tensors, heads if kv_heads is None else kv_heads


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.6g}%"


def expected_reduction(tensors: int, kv_heads: int, heads: int) -> float:
    """The cache saving against QKV: 1 - tensors * kv_heads / (2 * H)."""
    return 1 - tensors * kv_heads / (2 * heads)


def _observed_reduction(record: Record, base: Record) -> tuple[float, str] | None:
    """(1 - bytes / QKV's bytes, how it was obtained): measured bytes held when both have them."""
    mine, theirs = record["costs"].get("kv_measured"), base["costs"].get("kv_measured")
    both = bool(mine and theirs and mine.get("bytes_held") and theirs.get("bytes_held"))
    if both and mine.get("tokens") == theirs.get("tokens"):
        return 1 - mine["bytes_held"] / theirs["bytes_held"], "measured"
    per_token, base_per_token = record["costs"].get("kv_bytes_per_token"), base["costs"].get("kv_bytes_per_token")
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
CLAIMS: tuple[Claim, ...] = (
    ("a", "Q-K=V within 5% of QKV on LM perplexity", tied_kv_close_on_lm),
    ("b", "Q=K=V clearly worst on LM perplexity", tied_qkv_worst_on_lm),
    ("c", "Q=K=V worst on REVERSE and SWAP", tied_qkv_worst_on_reverse_swap),
    ("d", "the 2D positional correction (+) helps Q=K-V and Q=K=V on non-causal tasks", plus_helps_symmetric),
    ("e", "Q=K-V, Q-K=V and Q=K=V within about 1.5 points of QKV on MNIST and Fashion-MNIST", sharing_close_on_digits),
    (
        "f",
        "KV-cache reductions: Q-K=V 50%, GQA-4 75%, Q-GQA-4 87.5%, MQA 93.75%, Q-MQA 96.875% (H=16)",
        cache_reductions,
    ),
)


#: claim id -> the tasks it reads; a claim not listed reads every task
CLAIM_TASKS = {"a": ("lm",), "b": ("lm",), "c": ("reverse", "swap"), "e": ("mnist", "fashion-mnist")}


def _left_out_note(claim_id: str, excluded: Mapping[str, str]) -> str:
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
        note = _left_out_note(claim_id, excluded or {})
        evidence = f"{evidence}\n{note}" if note else evidence
        out.append({"id": claim_id, "claim": text, "status": status, "evidence": evidence})
    return out
