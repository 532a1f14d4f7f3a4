"""The study's empirical claims as statistical tests: paired t-tests and TOST, Holm across the claims.

Each claim reads `Cells` (task id -> variant id -> fresh ok record, gated tasks only) and returns a
support p-value (small: the data back the claim) and a contradiction p-value (small: the data go
against it). Holm's step-down adjusts each family across the claims, so the chance of any wrong
"held" (or any wrong "not held") verdict on the page stays below 5%. A claim neither side decides
is "inconclusive", with the way its estimate leans and the seeds a paired t-test would need.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from bench_record import CellRecord, stats
from bench_record.schema import SeedFit

from . import budget
from .model import BASELINE, Cells
from .paper import PAPER_NAMES, reported_gain

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
ALPHA = 0.05
#: "within 2 points" of accuracy, read on steps to the target: within 10% (log ratio, averaged over the tasks)
SYNTHETIC_MARGIN = math.log(1.10)
DIGIT_MARGIN = 0.015  # "within about 1.5 points" on MNIST and Fashion-MNIST
SHARING = ("tied-qk", "tied-kv", "tied-qkv")
LM_MARGIN = math.log(1.05)  # "within a few percent": |log perplexity ratio| < log 1.05
PLUS_PAIRS = (("tied-qk", "tied-qk-pos"), ("tied-qkv", "tied-qkv-pos"))
#: the study's Table 1 rows other than Q=K=V, and its synthetic tasks (MQAR is ours)
TABLE1_ROWS = ("qkv", "tied-qk", "tied-qk-pos", "tied-kv", "tied-qkv-pos")
STUDY_SYNTHETIC = ("reverse", "sort", "sub", "swap", "copy")
#: how a claim is read on each kind of task it rests on (`Task.measures`)
SPEED, AT_BUDGET = "speed: steps to the target", "the metric at the default budget"
Test = dict[str, Any]


def _name(variant: str) -> str:
    return PAPER_NAMES.get(variant, variant)


def _diffs(cells: Cells, task: str, a: str, b: str) -> tuple[list[float], list[float], str] | None:
    """Per-seed (a - b) on the test scale and on the natural scale, over shared seeds; None below 2 pairs."""
    group = cells.get(task, {})
    if a not in group or b not in group:
        return None
    x, y = group[a].seed_values(), group[b].seed_values()
    seeds = sorted(set(x) & set(y))
    if len(seeds) < 2:
        return None
    task_info = group[a].task
    scale = stats.metric_scale(task_info.metric, task_info.higher_is_better)
    t = stats.to_scale(scale)
    return [t(x[s]) - t(y[s]) for s in seeds], [x[s] - y[s] for s in seeds], scale


def _one_sided(diffs: Sequence[float], worse_if_positive: bool) -> tuple[float, float]:
    """(p that the mean is on the claimed side, p that it is on the other side), paired t one-sided."""
    from scipy import stats as sps

    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    t = mean / max(sd / math.sqrt(n), 1e-15)
    below, above = float(sps.t.cdf(t, n - 1)), float(sps.t.sf(t, n - 1))
    return (above, below) if worse_if_positive else (below, above)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0


def _missing(what: str) -> Test:
    return {"support": None, "contra": None, "lean": "no data", "seeds_needed": None, "lines": [what], "pairs": []}


def _directional(cells: Cells, pairs: Sequence[tuple[str, str, str]], expect: str) -> Test:
    """Every (task, a, b): a worse ("worse") or better ("better") than b. Intersection-union: p = max."""
    supports, contras, lines, needed, leans = [], [], [], [], []
    for task, a, b in pairs:
        found = _diffs(cells, task, a, b)
        if found is None:
            return _missing(f"{task}: {_name(a)} vs {_name(b)}: fewer than 2 shared seeds or a missing cell")
        z, natural, scale = found
        hib = cells[task][a].task.higher_is_better
        worse_if_positive = not hib
        sup, con = _one_sided(z, worse_if_positive if expect == "worse" else not worse_if_positive)
        mean, sd = _mean_sd(z)
        nat = stats.summarize(natural)
        supports.append(sup)
        contras.append(con)
        leans.append(sup < con)
        needed.append(stats.n_for_power(mean, sd) if sd > 0 else None)
        lines.append(f"{task}: {_name(a)} - {_name(b)} = {nat.mean:+.4g} [95% CI {nat.ci95_low:+.4g}, "
                     f"{nat.ci95_high:+.4g}] (natural), {mean:+.4g} on the {scale} "
                     f"scale; one-sided p (claimed side) {sup:.3g}, (other side) {con:.3g}, n={len(z)}")  # fmt: skip
    lean = "towards the claim" if all(leans) else "against the claim" if not any(leans) else "mixed"
    seeds = max((n for n in needed if n is not None), default=None)
    contra = min(1.0, min(contras) * len(contras))
    return {"support": max(supports), "contra": contra, "lean": lean, "seeds_needed": seeds,
            "lines": lines, "pairs": list(pairs)}  # fmt: skip


def _equivalent(cells: Cells, tasks: Sequence[str], a: str, b: str, margin: float, natural: bool) -> Test:
    """TOST of (a - b) within +-margin on every task (natural scale, else the test scale); p = max over tasks."""
    supports, contras, lines, needed, inside = [], [], [], [], []
    read: list[tuple[str, str, str]] = []
    for task in tasks:
        found = _diffs(cells, task, a, b)
        if found is None:
            lines.append(f"{task}: {_name(a)} vs {_name(b)} not tested (a cell is missing or has < 2 shared seeds)")
            continue
        read.append((task, a, b))
        z, nat, scale = found
        values = nat if natural else z
        eq = stats.tost(values, margin)
        mean, sd = _mean_sd(values)
        outside_p = min(
            _one_sided([v - margin for v in values], False)[1], _one_sided([v + margin for v in values], False)[0]
        )
        supports.append(eq.p_value if eq.p_value is not None else 1.0)
        contras.append(outside_p)
        inside.append(abs(mean) < margin)
        needed.append(stats.n_for_power(mean, sd, margin) if sd > 0 else None)
        where = "natural" if natural else scale
        lines.append(f"{task}: {_name(a)} - {_name(b)} = {mean:+.4g} ({where} scale), 90% CI [{eq.ci90_low:+.4g}, "
                     f"{eq.ci90_high:+.4g}] vs margin +-{margin:.4g}; TOST p {supports[-1]:.3g}, n={eq.n}")  # fmt: skip
    if not supports:
        return _missing(f"{', '.join(tasks)}: no task with {_name(a)} and {_name(b)} on 2 or more shared seeds")
    lean = "towards the claim" if all(inside) else "against the claim" if not any(inside) else "mixed"
    seeds = None if None in needed else max(n for n in needed if n is not None)
    return {"support": max(supports), "contra": min(1.0, min(contras) * len(contras)), "lean": lean,
            "seeds_needed": seeds, "lines": lines, "pairs": read}  # fmt: skip


def _synthetic(cells: Cells) -> list[str]:
    return sorted(t for t, g in cells.items() if g and next(iter(g.values())).task.family == "synthetic")


def _average_equivalent(cells: Cells, tasks: Sequence[str], a: str, b: str, margin: float, shown: str) -> Test:
    """TOST of (a - b) averaged over `tasks` within +-margin: per seed the mean over the tasks (seeds all ran) on
    the test scale (a log ratio for steps to a target); `shown` (a task the study did not run) is reported beside
    it, not counted."""
    ran = [t for t in tasks if a in cells.get(t, {}) and b in cells.get(t, {})]
    if len(ran) < len(tasks):
        return _missing(f"{a} vs {b}: missing on {', '.join(sorted(set(tasks) - set(ran)))}")
    per_task = {t: (cells[t][a].seed_values(), cells[t][b].seed_values()) for t in ran}
    seeds = sorted(set.intersection(*(set(x) & set(y) for x, y in per_task.values())))
    if len(seeds) < 2:
        return _missing(f"fewer than 2 seeds common to {_name(a)} and {_name(b)} on every task")
    like = cells[ran[0]][a].task
    t = stats.to_scale(stats.metric_scale(like.metric, like.higher_is_better))
    averages = [sum(t(x[s]) - t(y[s]) for x, y in per_task.values()) / len(ran) for s in seeds]
    test = _equivalent({"average": {a: _values_record(cells[ran[0]][a], averages, seeds),
                                    b: _values_record(cells[ran[0]][b], [0.0] * len(seeds), seeds)}},
                       ["average"], a, b, margin, natural=True)  # fmt: skip
    lines = [f"averaged over {', '.join(ran)} (seeds {seeds[0]}-{seeds[-1]}, the ones every task ran):", *test["lines"]]
    for task in [shown] if shown in cells and a in cells[shown] and b in cells[shown] else []:
        found = _diffs(cells, task, a, b)
        if found:
            nat = stats.summarize(found[1])
            lines.append(f"{task} (shown, not counted): {nat.mean:+.4g} [95% CI {nat.ci95_low:+.4g}, "
                         f"{nat.ci95_high:+.4g}], n={nat.n}")  # fmt: skip
    return {**test, "lines": lines, "pairs": [(t, a, b) for t in ran]}


def _values_record(like: CellRecord, values: Sequence[float], seeds: Sequence[int]) -> CellRecord:
    """A record shaped like `like` whose seeds hold `values` (how an average is handed to the per-task tests)."""
    metric = like.task.metric
    return replace(like, per_seed=tuple(SeedFit(seed=s, test={metric: v}) for s, v in zip(seeds, values, strict=True)))


def _non_inferior(cells: Cells, task: str, a: str, b: str, margin: float) -> Test:
    """a at most `margin` worse than b on `task`, one-sided paired t-test on the test scale (log ratio for
    perplexity): support is p of "a is margin or more worse", contradiction p of "a is less than that"."""
    found = _diffs(cells, task, a, b)
    if found is None:
        return _missing(f"{task}: {_name(a)} vs {_name(b)}: fewer than 2 shared seeds or a missing cell")
    z, natural, scale = found
    worse_if_positive = not cells[task][a].task.higher_is_better
    shifted = [(v - margin) if worse_if_positive else (v + margin) for v in z]
    support, contra = _one_sided(shifted, not worse_if_positive)
    mean, sd = _mean_sd(z)
    nat = stats.summarize(natural)
    ratio = "" if not worse_if_positive else f" ({math.expm1(mean):+.2%} perplexity)"
    lines = [f"{task}: {_name(a)} - {_name(b)} = {nat.mean:+.4g} [95% CI {nat.ci95_low:+.4g}, {nat.ci95_high:+.4g}] "
             f"(natural), {mean:+.4g} on the {scale} scale{ratio} against a margin of {margin:.4g}; one-sided p "
             f"(within the margin) {support:.3g}, (beyond it) {contra:.3g}, n={len(z)}"]  # fmt: skip
    lean = "towards the claim" if (mean < margin if worse_if_positive else mean > -margin) else "against the claim"
    needed = stats.n_for_power(mean - margin if worse_if_positive else mean + margin, sd) if sd > 0 else None
    return {"support": support, "contra": contra, "lean": lean, "seeds_needed": needed, "lines": lines,
            "pairs": [(task, a, b)]}  # fmt: skip


def _plus_helps(cells: Cells) -> Test:
    """Per task and pair, (X)+ better than X; the claim needs both pairs to help on average over tasks."""
    pairs = [
        (t, plus, base) for base, plus in PLUS_PAIRS for t in sorted(cells) if base in cells[t] and plus in cells[t]
    ]
    per_pair = []
    for base, plus in PLUS_PAIRS:
        mine = [(t, p, b) for t, p, b in pairs if b == base]
        if not mine:
            return _missing(f"no task where both {_name(base)} and {_name(plus)} ran")
        per_pair.append(_pair_over_tasks(cells, mine))
    if any(p["support"] is None for p in per_pair):
        return {**_missing(""), "lines": [line for p in per_pair for line in p["lines"]]}
    lines = [line for p in per_pair for line in p["lines"]]
    leans = {p["lean"] for p in per_pair}
    contra = min(1.0, 2 * min(p["contra"] for p in per_pair))
    needed = [p.get("seeds_needed") for p in per_pair]
    seeds = max((n for n in needed if n is not None), default=None)
    return {"support": max(p["support"] for p in per_pair), "contra": contra,
            "lean": leans.pop() if len(leans) == 1 else "mixed", "seeds_needed": seeds, "lines": lines,
            "pairs": [pair for p in per_pair for pair in p["pairs"]]}  # fmt: skip


def _pair_over_tasks(cells: Cells, pairs: Sequence[tuple[str, str, str]]) -> Test:
    """Per task the (X)+ vs X paired test; across tasks a t-test of the per-task mean gains (sign-aligned)."""
    gains, lines, needed = [], [], []
    for task, plus, base in pairs:
        found = _diffs(cells, task, plus, base)
        if found is None:
            continue
        z, _, scale = found
        sign = 1 if cells[task][plus].task.higher_is_better else -1
        mean = sign * sum(z) / len(z)
        gains.append(mean)
        _, sd = _mean_sd(z)
        needed.append(stats.n_for_power(mean, sd) if sd > 0 else None)
        sup, against = _one_sided([sign * d for d in z], True)
        reversed_ = 2 * min(against, 1 - against) < ALPHA and mean < 0
        lines.append(f"{task}: {_name(plus)} vs {_name(base)} gain {mean:+.4g} ({scale} scale), one-sided p {sup:.3g}"
                     + ("; a significant REVERSAL (worse with +)" if reversed_ else ""))  # fmt: skip
    if len(gains) < 2:
        return {
            "support": None,
            "contra": None,
            "lean": "no data",
            "lines": [*lines, "fewer than 2 tasks to test across"],
            "pairs": [],
        }
    sup, con = _one_sided(gains, True)
    g = stats.summarize(gains)
    lines.append(f"across {len(gains)} tasks: mean gain {g.mean:+.4g} [95% CI {g.ci95_low:+.4g}, {g.ci95_high:+.4g}], "
                 f"one-sided p {sup:.3g}")  # fmt: skip
    # seeds: what the noisiest task's paired t-test would need to show its own gain (or loss) at 80% power
    seeds = max((n for n in needed if n is not None), default=None)
    return {"support": sup, "contra": con, "lean": "towards the claim" if sup < con else "against the claim",
            "seeds_needed": seeds, "lines": lines, "pairs": list(pairs)}  # fmt: skip


def _digits_close(cells: Cells) -> Test:
    """Each sharing variant equivalent to QKV within the margin on MNIST and Fashion-MNIST; p = max."""
    parts = [_equivalent(cells, ["mnist", "fashion-mnist"], v, BASELINE, DIGIT_MARGIN, natural=True) for v in SHARING]
    lines = [line for p in parts for line in p["lines"]]
    if any(p["support"] is None for p in parts):
        return {**_missing(""), "lines": lines}
    leans = {p["lean"] for p in parts}
    needed = [p["seeds_needed"] for p in parts]
    return {"support": max(p["support"] for p in parts), "contra": min(1.0, 3 * min(p["contra"] for p in parts)),
            "lean": leans.pop() if len(leans) == 1 else "mixed",
            "seeds_needed": None if None in needed else max(needed), "lines": lines,
            "pairs": [pair for p in parts for pair in p["pairs"]]}  # fmt: skip


def _lm_worst(cells: Cells) -> Test:
    others = sorted(v for v in cells.get("lm", {}) if v != "tied-qkv")
    if not others:
        return _missing("lm: no variant to compare Q=K=V with")
    return _directional(cells, [("lm", "tied-qkv", v) for v in others], "worse")


def _worst_in_table1(cells: Cells) -> Test:
    """(c) Q=K=V below each other row of the study's Table 1 that ran, on REVERSE and on SWAP."""
    pairs = [(t, "tied-qkv", v) for t in ("reverse", "swap") for v in TABLE1_ROWS if v in cells.get(t, {})]
    short = [t for t in ("reverse", "swap") if "tied-qkv" not in cells.get(t, {}) or not any(p[0] == t for p in pairs)]
    if short:
        return _missing(f"{', '.join(short)}: no Q=K=V cell, or no other Table 1 row to compare it with")
    return _directional(cells, pairs, "worse")


Claim = tuple[str, str, Callable[[Cells], Test]]
CLAIMS: tuple[Claim, ...] = (
    ("c", "Q=K=V worst among the study's Table 1 rows (QKV, Q=K-V, (Q=K-V)+, Q-K=V, (Q=K=V)+) on REVERSE and on SWAP",
     _worst_in_table1),
    ("s", f"Q-K=V as fast as QKV within {math.expm1(SYNTHETIC_MARGIN):.0%} of its steps to the target, averaged "
          "(log ratio) over the study's five synthetic tasks (TOST; MQAR shown, not counted; the study's 'within 2 "
          "points' of accuracy at a fixed budget, read where every variant reaches the same accuracy)",
     lambda c: _average_equivalent(c, STUDY_SYNTHETIC, "tied-kv", BASELINE, SYNTHETIC_MARGIN, shown="mqar")),
    ("a", "Q-K=V's perplexity at most 5% above QKV's on the LM (non-inferiority: one-sided paired t-test on the "
          "log perplexity ratio, margin log 1.05; the study's gap grows at short context: +2.2% at 2,048 tokens, "
          "+5.4% at 512)",
     lambda c: _non_inferior(c, "lm", "tied-kv", BASELINE, LM_MARGIN)),
    ("b", "Q=K=V clearly worst on the LM (worse than every other variant)", _lm_worst),
    ("e", f"Q=K-V, Q-K=V and Q=K=V within {DIGIT_MARGIN * 100:.1f} points of QKV on MNIST and Fashion-MNIST (TOST)",
     _digits_close),
    ("d", "the + correction helps the symmetric variants (Q=K-V vs (Q=K-V)+, Q=K=V vs (Q=K=V)+)", _plus_helps),
)  # fmt: skip


def evaluate(cells: Cells, excluded: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Every claim tested; Holm-adjusted support and contradiction p-values decide held / not held.

    `excluded` (task id -> why the learning gate left it out) is named in the evidence of each claim reading it.
    """
    from .claims import left_out_note

    tests = [(cid, text, check(cells)) for cid, text, check in CLAIMS]
    support = _holm([t["support"] for _, _, t in tests])
    contra = _holm([t["contra"] for _, _, t in tests])
    out = []
    for (cid, text, test), sup, con in zip(tests, support, contra, strict=True):
        status = (
            HELD if sup is not None and sup < ALPHA else NOT_HELD if con is not None and con < ALPHA else INCONCLUSIVE
        )
        labels, lines = _budget_lines(cells, test.get("pairs", []))
        moving = bool(labels & {budget.MOVING, budget.CENSORED})
        note = left_out_note(cid, excluded or {})
        decided_as = status if status != INCONCLUSIVE else None
        if moving and decided_as:
            status = INCONCLUSIVE  # the verdict would flip with the budget: it needs a longer one, not a reading
            lines.append(f"would read {decided_as} at this budget, but a verdict it rests on moves with the budget "
                         "(or is censored at a speed task's cap): inconclusive; a longer budget is what it "
                         "needs")  # fmt: skip
        out.append({"id": cid, "claim": text, "status": status, "p_support_holm": sup, "p_contra_holm": con,
                    "lean": test["lean"], "seeds_needed": test.get("seeds_needed") if status == INCONCLUSIVE else None,
                    "budget": next((b for b in (budget.MOVING, budget.CENSORED, budget.NO_CURVE, budget.STABLE)
                                    if b in labels), None),
                    "read_as": read_as(cells, test.get("pairs", [])),
                    "evidence": "\n".join([*test["lines"], *lines, note]).strip()})  # fmt: skip
    return out


def read_as(cells: Cells, pairs: Sequence[tuple[str, str, str]]) -> str:
    """How a claim is read: as speed (steps to a target) on the speed tasks it rests on, as the metric at the
    budget on the others, or both, each with its tasks."""
    kinds: dict[str, list[str]] = {}
    for task in dict.fromkeys(t for t, _, _ in pairs):
        speed = cells[task][next(iter(cells[task]))].task.measures == "speed"
        kinds.setdefault(SPEED if speed else AT_BUDGET, []).append(task)
    if len(kinds) < 2:
        return next(iter(kinds), AT_BUDGET)
    return "; ".join(f"{kind} on {', '.join(tasks)}" for kind, tasks in kinds.items())


def _budget_lines(cells: Cells, pairs: Sequence[tuple[str, str, str]]) -> tuple[set[str], list[str]]:
    """The budget labels of the comparisons a claim rests on, and a line per comparison saying how it moves."""
    labels, lines = set(), []
    for task, a, b in pairs:
        found = budget.verdict(cells[task][a], cells[task][b])
        labels.add(found["label"])
        lines.append(f"budget, {task}: {_name(a)} vs {_name(b)} {budget.label_text(found)}: {found['text']}")
    return labels, lines


def _holm(p_values: Sequence[float | None]) -> list[float | None]:
    present = [i for i, p in enumerate(p_values) if p is not None]
    adjusted = stats.holm_adjust([float(p_values[i]) for i in present])  # type: ignore[arg-type]
    out: list[float | None] = [None] * len(p_values)
    for i, q in zip(present, adjusted, strict=True):
        out[i] = q
    return out


ABLATIONS = (("fixed-scale", "the score scale sum(w) frozen at 1"), ("no-bias", "the per-key bias left out"))
#: the second reading of each "+" variant's P: channels of the offset i - j, a relative-position bias
RELATIVE = {"tied-qk-pos": "tied-qk-rel", "tied-qkv-pos": "tied-qkv-rel"}
READINGS = ("row/column", "relative")  # the readings of P, in the order of `Evidence`'s gaps
Gap = Mapping[str, Any]
Evidence = tuple[float | None, Gap, Gap | None]  # the paper's (X)+ - X, ours by each reading


def _gap(cells: Cells, task: str, a: str, b: str) -> dict[str, Any] | None:
    """a - b over shared seeds, sign-aligned so positive is better, with its 95% t interval (natural scale)."""
    found = _diffs(cells, task, a, b)
    if found is None:
        return None
    sign = 1 if cells[task][a].task.higher_is_better else -1
    s = stats.summarize([sign * d for d in found[1]])
    return {"mean": s.mean, "low": s.ci95_low, "high": s.ci95_high, "n": s.n,
            "below": s.ci95_high < 0, "above": s.ci95_low > 0}  # fmt: skip


def _text(gap: Mapping[str, Any]) -> str:
    return f"{gap['mean']:+.3f} [{gap['low']:+.3f}, {gap['high']:+.3f}]"


def _reading(plus: str, gap: Mapping[str, Any], parts: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
    """(cause, sentence): which part of the correction a gap between (X)+ and X comes from, by ablation."""
    if not (gap["below"] or gap["above"]):
        return "no effect", f"{_name(plus)} and its plain form are indistinguishable here"
    side = "below" if gap["below"] else "above"
    closes = [name for name, g in parts.items() if not g[side]]  # removing this part removes the gap
    what = "hurts" if gap["below"] else "helps"
    if len(closes) == 1:
        cause = "learned scale" if closes[0] == "fixed-scale" else "per-key bias"
        return (
            cause,
            f"the + correction {what}; taking away the {cause} removes the gap, taking away the other part does not",
        )
    if not closes:
        return "both parts", f"the + correction {what}; the gap stays with either part taken away"
    return "either part", f"the + correction {what}; taking away either part removes the gap"


def plus_ablation(cells: Cells) -> dict[str, Any]:
    """Per task and symmetric "+" variant: (X)+ - X, and each ablation - X, with the reading of the cause.

    `cells` must include the ablation records (`model.current_cells(..., ablations=True)`).
    """
    rows, causes, evidence = [], [], []
    for base, plus in PLUS_PAIRS:
        for task in sorted(cells):
            ablated = {name: f"{plus}-{name}" for name, _ in ABLATIONS}
            if not all(v in cells[task] for v in (base, plus, *ablated.values())):
                continue
            gap = _gap(cells, task, plus, base)
            parts = {name: _gap(cells, task, variant, base) for name, variant in ablated.items()}
            if gap is None or any(g is None for g in parts.values()):
                continue
            found = {name: g for name, g in parts.items() if g is not None}
            cause, sentence = _reading(plus, gap, found)
            causes.append(cause)
            relative, paper = _gap(cells, task, RELATIVE[plus], base), reported_gain(task, plus, base)
            evidence.append((paper, gap, relative))
            rows.append({"task": task, "variant": plus, "display_name": _name(plus), "base": _name(base),
                         "gap": _text(gap), **{name.replace("-", "_"): _text(g) for name, g in found.items()},
                         "relative": _text(relative) if relative else None,
                         "paper": None if paper is None else f"{paper:+.3f}",
                         "cause": cause, "reading": sentence, "n": gap["n"]})  # fmt: skip
    counted = {c: causes.count(c) for c in sorted(set(causes))}
    hurt = [r for r in rows if "hurts" in r["reading"]]
    summary = (
        "no task ran the + variants with both ablations"
        if not rows
        else f"{len(hurt)} of {len(rows)} (task, variant) pairs where + hurts; causes: "
        + ", ".join(f"{c} {n}" for c, n in counted.items())
    )
    return {"rows": rows, "summary": summary, "parts": dict(ABLATIONS), "readings": _readings(evidence)}


def _readings(evidence: Sequence[Evidence]) -> dict[str, Any]:
    """Which reading of P reproduces the study's "+" gains, from the paper's tables and our gaps.

    On every (task, variant) where the paper reports (X)+ above X and both readings ran, a reading
    reproduces the gain when its (X)+ - X interval lies above 0, and goes against it when below.
    """
    gained = [(gap, relative) for paper, gap, relative in evidence if paper is not None and paper > 0 and relative]
    counts = {
        name: {"reproduced": sum(g[i]["above"] for g in gained), "opposite": sum(g[i]["below"] for g in gained)}
        for i, name in enumerate(READINGS)
    }
    if not gained:
        return {"tested": 0, "counts": counts, "reproduces": None,
                "sentence": "no task where the paper reports a + gain ran both readings of P"}  # fmt: skip
    ours = [counts[name]["reproduced"] for name in READINGS]
    best = "neither" if not any(ours) else "both" if len(set(ours)) == 1 else READINGS[ours.index(max(ours))]
    verdict = {
        "neither": "neither reading of P reproduces the study's + gains",
        "both": "both readings of P reproduce as many of the study's + gains",
    }.get(best, f"the {best} reading of P reproduces more of the study's + gains")
    each = "; ".join(
        f"the {name} reading reproduces {counts[name]['reproduced']}, goes against {counts[name]['opposite']}"
        for name in READINGS
    )
    sentence = (
        f"{verdict}: the paper reports (X)+ above X (Tables 1 and 2) on {len(gained)} (task, variant) pairs "
        f"run here with both readings; {each}"
    )
    return {"tested": len(gained), "counts": counts, "reproduces": best, "sentence": sentence}
