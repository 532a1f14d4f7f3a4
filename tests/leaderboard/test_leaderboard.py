"""The static leaderboard, built from hand-written results: ordering, markers, reasons, claims, safety.

The fixture covers two tasks with opposite metric directions, significant and non-significant
comparisons, n/a, failed and stale cells, unreadable files, variant names that try to inject HTML,
and a third task whose QKV does not beat its trivial baseline (so it must not be ranked). The
browser test opens the page in real headless Chromium.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from bench_leaderboard import build, build_report, scoring
from bench_leaderboard import claims as claims_mod
from bench_leaderboard import tested as tested_mod
from bench_leaderboard.build import board as board_of
from bench_leaderboard.build import render_html
from bench_leaderboard.model import (
    DID_NOT_LEARN,
    GATE_UNKNOWN,
    LEARNS,
    NO_BASELINE,
    learn_gate,
    mlflow_url,
    read_baseline,
)
from bench_leaderboard.plots import pareto_front, scatter
from bench_record import CellRecord
from bench_record.schema import MlflowRun, TrivialBaseline

CHROMIUM = Path("/usr/bin/chromium")
XSS = "<img src=x onerror=alert(1)>"
XSS_FLAG = "</script><script>window.__xss=1</script><img src=x onerror=window.__xss=2>"
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}
TASKS: dict[str, dict[str, Any]] = {
    name: {"id": name, "version": "1", "family": family, "metric": metric, "higher_is_better": hib,
           "direction": "higher is better" if hib else "lower is better", "causal": causal}
    for name, family, metric, hib, causal in (
        ("reverse", "synthetic", "accuracy", True, False),
        ("sort", "synthetic", "accuracy", True, False),
        ("sub", "synthetic", "accuracy", True, False),
        ("swap", "synthetic", "accuracy", True, False),
        ("copy", "synthetic", "accuracy", True, False),
        ("mqar", "synthetic", "accuracy", True, False),
        ("mnist", "vision", "accuracy", True, False),
        ("fashion-mnist", "vision", "accuracy", True, False),
        ("lm", "lm", "perplexity", False, True),
    )
}  # fmt: skip
#: variant id -> (display name, tie, kv heads)
VARIANTS = {
    "qkv": ("QKV", "none", "H"), "tied-qk": ("Q=K-V", "q=k", "H"), "tied-kv": ("Q-K=V", "k=v", "H"),
    "tied-qkv": ("Q=K=V", "q=k=v", "H"), "tied-qk-pos": ("(Q=K-V)+", "q=k", "H"),
    "tied-qkv-pos": ("(Q=K=V)+", "q=k=v", "H"), "gqa4": ("GQA-4", "none", "4"), "mqa": ("MQA", "none", "1"),
    "tied-kv-gqa4": ("Q-GQA-4", "k=v", "4"), "tied-kv-mqa": ("Q-MQA", "k=v", "1"),
    "evil": (XSS, "none", "H"), "evil2": (XSS_FLAG, "k=v", "H"),
}  # fmt: skip
HEADS, D_HEAD = 8, 4
#: task id -> the trivial baseline every cell of the task records (swap's QKV does not beat it: see SWAP_QKV)
BASELINES: dict[str, dict[str, Any]] = {
    "reverse": {"name": "chance", "value": 0.1, "others": {}, "note": "1 / 10 digits", "learn_margin": 0.02},
    **{t: {"name": "chance", "value": 0.1, "others": {}, "note": "", "learn_margin": 0.02}
       for t in ("sort", "sub", "copy", "mqar")},
    "swap": {"name": "per-position majority", "value": 0.59, "others": {"chance": 0.1}, "note": "",
             "learn_margin": 0.02},
    "mnist": {"name": "linear probe on pixels", "value": 0.92, "others": {}, "note": "", "learn_margin": 0.02},
    "fashion-mnist": {"name": "linear probe on pixels", "value": 0.84, "others": {}, "note": "", "learn_margin": 0.02},
    "lm": {"name": "count bigram", "value": 30.0, "others": {"count trigram": 26.5}, "note": "add-one smoothing",
           "learn_margin": 0.02},
}  # fmt: skip
BEST_PARAMS = {"lr": 0.003, "weight_decay": 0.0001, "warmup_frac": 0.05}


def summarize(values: list[float]) -> dict[str, Any]:
    """Mean and 95% t-interval, as bench_record.stats computes them (t quantiles tabulated here)."""
    n, mean = len(values), sum(values) / len(values)
    if n == 1:
        return {"n": 1, "mean": mean, "std": 0.0, "ci95_low": mean, "ci95_high": mean}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T95[n - 1] * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}


def kv_bytes(variant: str, measured: float = 1.0) -> dict[str, Any]:
    """Cache figures per the formula: tensors x KV heads x d_head x 2 bytes (fp16), one layer, 16 tokens."""
    _, tie, g = VARIANTS[variant]
    tensors, kv_heads = (1 if tie in ("k=v", "q=k=v") else 2), (HEADS if g == "H" else int(g))
    per_token = tensors * kv_heads * D_HEAD * 2
    held = int(per_token * 16 * 2 * measured)  # measured in float32
    return {
        "kv_bytes_per_token": per_token, "kv_bytes_per_token_per_layer": per_token,
        "kv_bytes_at_context": per_token * 16, "context_length": 16, "n_layers": 1, "kv_dtype": "float16",
        "kv_measured": {"dtype": "float32", "tokens": 16, "bytes_held": held, "bytes_derived": per_token * 32,
                        "decode_tokens_per_second": 1234.0},
        "attention": {"n_heads": HEADS, "kv_heads": kv_heads, "head_dim": D_HEAD, "tensors_per_head": tensors},
    }  # fmt: skip


def record(task: str, variant: str, values: list[float] | None, base: list[float] | None = None, **extra: Any) -> dict:
    """One schema-1 cell result; `base` (QKV's per-seed values) adds the paired comparison."""
    name, tie, g = VARIANTS[variant]
    out: dict[str, Any] = {
        "schema_version": 1, "cell_id": f"{task}-{variant}", "suite": "test", "scale": "default",
        "task": TASKS[task],
        "variant": {"id": variant, "display_name": name, "version": "1", "tie": tie, "kv_heads": g},
        "config": {"type": "TinyConfig", "n_heads": HEADS, "d_model": HEADS * D_HEAD, "n_layers": 1},
        "status": "ok", "created_at": "2026-11-28T23:00:00+00:00",
        "provenance": {"git_sha": "abc123", "git_dirty": False, "packages": {"torch": "2.14"}, "device": "cpu",
                       "python": "3.11", "platform": "linux"},
        "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment_id": "1", "run_id": f"run{task}{variant}"},
        "baseline": BASELINES[task],
    }  # fmt: skip
    if values is not None:
        out.update(
            summary={"metric": TASKS[task]["metric"], **summarize(values)},
            seeds=list(range(len(values))),
            per_seed=[{"seed": i, "test": {TASKS[task]["metric"]: v}, "params": BEST_PARAMS}
                      for i, v in enumerate(values)],
            tuning={"trials_budget": 4, "trials_finished": 4, "search_space": {"lr": ["log", 1e-4, 1e-2]},
                    "best_params": BEST_PARAMS},
            costs={"parameters": 1000, "examples_per_second": 500.0, "peak_memory_bytes": 3 * 2**20,
                   **kv_bytes(variant)},
            data_source={"kind": "synthetic", "name": f"{task} data", "origin": "generated", "note": ""},
        )  # fmt: skip
    if values is not None and base is not None:
        diff = summarize([a - b for a, b in zip(values, base, strict=True)])
        significant = diff["n"] >= 2 and (diff["ci95_low"] > 0 or diff["ci95_high"] < 0)
        out["baseline_comparison"] = {"baseline": "qkv", "mean_diff": diff["mean"], "n": diff["n"], "p_value": 0.01,
                                      "ci95_low": diff["ci95_low"], "ci95_high": diff["ci95_high"],
                                      "significant": significant}  # fmt: skip
    return {**out, **extra}


REV_QKV, LM_QKV = [0.70, 0.72, 0.71], [20.0, 20.4, 20.2]
SWAP_QKV = [0.60, 0.61, 0.59]  # mean 0.60 < majority 0.59 + margin 0.02: swap did not learn
DEGENERATE = "coincides with QKV at H=4 (4 KV heads = 4 query heads); not run"


def fixture_records() -> list[dict[str, Any]]:
    """Two tasks (accuracy up, perplexity down) with every kind of row the board must show."""
    return [
        record("reverse", "qkv", REV_QKV, REV_QKV),
        record("reverse", "tied-kv", [0.69, 0.725, 0.70], REV_QKV),  # not significant
        record("reverse", "tied-qkv", [0.50, 0.53, 0.51], REV_QKV),  # significantly worse
        record("reverse", "tied-qkv-pos", [0.60, 0.61, 0.62], REV_QKV),
        record("reverse", "evil", [0.65, 0.66, 0.64], REV_QKV),
        record("reverse", "evil2", [0.55, 0.56, 0.54], REV_QKV),
        record("reverse", "mqa", [0.99, 0.99, 0.99], REV_QKV),  # stale: best number, must not rank
        record("reverse", "gqa4", None, status="failed", reason=f"RuntimeError: out of memory {XSS}"),
        record("reverse", "tied-kv-gqa4", None, status="n/a", reason=DEGENERATE),
        record("swap", "qkv", SWAP_QKV, SWAP_QKV),
        record("swap", "tied-kv", [0.59, 0.60, 0.60], SWAP_QKV),
        record("swap", "tied-qkv", [0.40, 0.41, 0.42], SWAP_QKV),
        record("lm", "qkv", LM_QKV, LM_QKV),
        record("lm", "tied-kv", [20.5, 20.9, 20.6], LM_QKV),
        record("lm", "tied-qkv", [25.0, 25.6, 25.2], LM_QKV),
        record("lm", "gqa4", [20.1, 20.6, 20.2], LM_QKV, data_source={"kind": "proxy", "name": "tiny corpus"}),
        record("lm", "tied-qk-pos", None, status="n/a", reason="the 2D positional correction needs a non-causal task"),
    ]


STALE = {"reverse-mqa": "variant mqa is now version 2 (ran 1)"}


def write_results(root: Path, records: list[dict[str, Any]]) -> Path:
    cells = root / "cells"
    cells.mkdir(parents=True)
    for r in records:
        (cells / f"{r['task']['id']}__{r['variant']['id']}__{r['cell_id']}.json").write_text(json.dumps(r, indent=1))
    (cells / "lm__broken__000.json").write_text("{not json")
    bad = record("lm", "mqa", [1.0])
    del bad["summary"]
    (cells / "lm__mqa__111.json").write_text(json.dumps(bad))
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = write_results(tmp_path_factory.mktemp("results"), fixture_records())
    report = build_report(root, stale=STALE)
    return {
        "root": root,
        "report": report,
        "html": report.index.read_text(),
        "data": json.loads(report.json.read_text()),
    }


def group(data: dict[str, Any], task: str) -> dict[str, Any]:
    return next(g for g in data["groups"] if g["task"] == task)


def html_rows(html: str, task: str) -> dict[str, str]:
    """variant id -> the HTML of its row in the task's table."""
    table = html.split(f'id="table-task-{task}-default"', 1)[1].split("</table>", 1)[0]
    return dict(re.findall(r'<tr class="state-[^"]*" data-order="\d+" data-variant="([^"]*)">(.*?)</tr>', table, re.S))


def test_rows_best_first_by_metric_direction(built: dict[str, Any]) -> None:
    reverse = [r["variant"] for r in group(built["data"], "reverse")["rows"]]
    assert reverse == ["qkv", "tied-kv", "evil", "tied-qkv-pos", "evil2", "tied-qkv", "mqa", "gqa4", "tied-kv-gqa4"]
    lm = [r["variant"] for r in group(built["data"], "lm")["rows"]]
    assert lm == ["qkv", "gqa4", "tied-kv", "tied-qkv", "tied-qk-pos"]  # lower perplexity first
    # from the paired tests: QKV and GQA-4 cannot be told apart (rank 1); Q-K=V's +2.3% is consistent over its
    # seeds, so QKV beats it in pairs although their intervals overlap (rank 3); Q=K=V loses to all three
    assert [r["rank"] for r in group(built["data"], "lm")["rows"]] == [1.0, 1.0, 3.0, 4.0, None]
    assert list(html_rows(built["html"], "lm")) == lm


def test_ci_and_significance_markers(built: dict[str, Any]) -> None:
    rows = html_rows(built["html"], "reverse")
    assert "0.71 ± 0.025" in rows["qkv"] and "n=3" in rows["qkv"]
    assert 'class="sig worse"' in rows["tied-qkv"]  # significant
    assert 'class="sig' not in rows["tied-kv"]  # not significant
    assert "baseline" in rows["qkv"]
    lm = {r["variant"]: r for r in group(built["data"], "lm")["rows"]}
    assert lm["tied-qkv"]["vs_baseline"]["significant"] is True
    assert lm["tied-kv"]["kv_reduction"] == 0.5 and lm["tied-kv"]["kv_measured_reduction"] == 0.5
    assert 'class="sig worse"' in html_rows(built["html"], "lm")["tied-qkv"]  # worse although the number is higher


def test_na_failed_and_stale_rows_keep_their_reason(built: dict[str, Any]) -> None:
    reverse = {r["variant"]: r for r in group(built["data"], "reverse")["rows"]}
    assert reverse["mqa"]["state"] == "stale" and reverse["mqa"]["rank"] is None
    assert reverse["gqa4"]["state"] == "failed"
    rows = html_rows(built["html"], "reverse")
    assert "variant mqa is now version 2 (ran 1)" in rows["mqa"]
    assert "RuntimeError: out of memory" in rows["gqa4"]
    assert "needs a non-causal task" in html_rows(built["html"], "lm")["tied-qk-pos"]
    assert reverse["tied-kv-gqa4"]["state"] == "n/a" and DEGENERATE in rows["tied-kv-gqa4"]
    csv_text = built["report"].csv.read_text()
    assert "stale,variant mqa is now version 2 (ran 1)" in csv_text and ",n/a,the 2D positional" in csv_text


def test_bad_files_are_reported_and_the_rest_builds(built: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    problems = built["report"].problems
    assert len(problems) == 2
    assert problems[0].startswith("cells/lm__broken__000.json: not readable JSON")
    assert "missing summary" in problems[1]
    assert "cells/lm__broken__000.json" in built["html"]
    build(built["root"], built["root"] / "again")
    assert "lm__mqa__111.json" in capsys.readouterr().err


def test_build_is_deterministic(built: dict[str, Any]) -> None:
    second = build_report(built["root"], built["root"] / "second", stale=dict(reversed(STALE.items())))
    for name in ("index.html", "leaderboard.json", "leaderboard.csv"):
        assert (second.index.parent / name).read_bytes() == (built["report"].index.parent / name).read_bytes()
    assert built["report"].index == built["root"] / "leaderboard" / "index.html"


def test_strings_from_results_are_escaped(built: dict[str, Any]) -> None:
    html = built["html"]
    assert XSS not in html and "onerror=alert(1)>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert html.count("<script") == 1 and html.count("</script>") == 1  # only our own sorting script
    assert "window.__xss=1" not in html.split("<script>")[1]
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html)
    script_src = policy.group(1).split("script-src", 1)[1] if policy else ""
    assert script_src.startswith(" 'sha256-") and "unsafe" not in script_src  # injected handlers could not run


def test_links_to_provenance_and_mlflow(built: dict[str, Any]) -> None:
    row = html_rows(built["html"], "reverse")["qkv"]
    assert 'href="#cell-reverse-qkv"' in row and 'id="cell-reverse-qkv"' in built["html"]
    assert 'href="http://127.0.0.1:5000/#/experiments/1/runs/runreverseqkv"' in row
    server = MlflowRun(tracking_uri="http://mlflow:8080/", experiment_id="7", run_id="r")
    assert mlflow_url(server) == "http://mlflow:8080/#/experiments/7/runs/r"
    assert mlflow_url(MlflowRun(tracking_uri="javascript:alert(1)", experiment_id="1", run_id="x")) == (
        "http://127.0.0.1:5000/#/experiments/1/runs/x"
    )
    assert mlflow_url(None) is None and mlflow_url(MlflowRun(experiment_id="1")) is None


def test_paper_side_by_side_flags_incomparable(built: dict[str, Any]) -> None:
    table1, _, table4 = built["data"]["paper"]
    reverse = table1["columns"][0]
    assert reverse["task"] == "reverse" and not reverse["comparable"]
    assert "scale default (the paper's is 'paper')" in reverse["why"]
    change = next(r for r in table4["rows"] if r["variant"] == "tied-kv")["values"][0]
    assert change["paper"] == 3.1 and change["ours"] == pytest.approx((20.6667 / 20.2 - 1) * 100, abs=1e-2)
    assert "not comparable" in built["html"]
    assert "proxy data (tiny corpus)" in table4["columns"][0]["why"]
    assert ">PROXY</span>" in html_rows(built["html"], "lm")["gqa4"]


def test_pareto_front() -> None:
    points = [(128.0, 0.9), (64.0, 0.9), (64.0, 0.8), (32.0, 0.5), (128.0, 0.95)]
    assert pareto_front(points, higher_is_better=True) == [3, 1, 4]
    assert pareto_front([(128.0, 5.0), (64.0, 6.0), (64.0, 7.0)], higher_is_better=False) == [1, 0]


def typed(r: dict[str, Any]) -> CellRecord:
    """A hand-written record read through the schema, as the board's loader reads a file."""
    return CellRecord.from_dict(r)


def board(records: list[dict[str, Any]], problems: list[str], stale: dict[str, str]) -> dict[str, Any]:
    """The board of hand-written records."""
    return board_of([typed(r) for r in records], problems, stale)


def cells_of(*records: dict[str, Any]) -> dict[str, dict[str, CellRecord]]:
    out: dict[str, dict[str, CellRecord]] = {}
    for r in records:
        out.setdefault(r["task"]["id"], {})[r["variant"]["id"]] = typed(r)
    return out


LOW, HIGH, DIGITS, CLOSE = [0.5, 0.52, 0.51], [0.6, 0.62, 0.61], [0.975, 0.978, 0.976], [0.97, 0.975, 0.972]
WORST_LM = [25.0, 25.6, 25.2]
CACHE = ("qkv", "tied-kv", "gqa4", "tied-kv-gqa4", "mqa", "tied-kv-mqa")


def vs_qkv(task: str, variant: str, values: list[float], base: list[float]) -> list[dict[str, Any]]:
    """QKV and one variant on a task, with the paired comparison."""
    return [record(task, "qkv", base, base), record(task, variant, values, base)]


def both(tasks: tuple[str, ...], variants: dict[str, list[float]]) -> list[dict[str, Any]]:
    return [record(t, v, xs) for t in tasks for v, xs in variants.items()]


def plus(base: list[float], with_plus: list[float]) -> list[dict[str, Any]]:
    """Both symmetric variants and their (X)+ forms on REVERSE."""
    return both(("reverse",), {"tied-qk": base, "tied-qkv": base, "tied-qk-pos": with_plus, "tied-qkv-pos": with_plus})


BROKEN_MQA = record("reverse", "mqa", REV_QKV, costs={"parameters": 1, **kv_bytes("mqa", measured=2.0)})
CLAIM_CASES = [
    ("f", claims_mod.HELD, both(("reverse",), dict.fromkeys(CACHE, REV_QKV))),
    ("f", claims_mod.NOT_HELD, [*both(("reverse",), dict.fromkeys(CACHE[:3], REV_QKV)), BROKEN_MQA]),
    ("f", claims_mod.INCONCLUSIVE, both(("reverse",), dict.fromkeys(CACHE[:2], REV_QKV))),
]  # fmt: skip


@pytest.mark.parametrize(("claim", "expected", "records"), CLAIM_CASES, ids=[f"{c}-{s}" for c, s, _ in CLAIM_CASES])
def test_claims(claim: str, expected: str, records: list[dict[str, Any]]) -> None:
    check = next(fn for cid, _, fn in claims_mod.CLAIMS if cid == claim)
    status, evidence = check(cells_of(*records))
    assert status == expected, evidence
    assert evidence


def test_claims_on_the_built_board(built: dict[str, Any]) -> None:
    tested = {c["id"]: c for c in built["data"]["tested_claims"]}
    assert tested["a"]["status"] == "held" and tested["b"]["status"] == "held"
    assert tested["c"]["status"] == "inconclusive"  # swap did not learn, so it is left out
    assert "swap: did not learn" in tested["c"]["evidence"]
    assert 'id="tested-a" data-status="held"' in built["html"]
    assert "(+2.31% perplexity)" in tested["a"]["evidence"]  # the mean log ratio, read as a percentage
    assert [c["id"] for c in built["data"]["claims"]] == ["f"]  # the overlap reading is gone; the exact check stays


CHANCE = {"name": "chance", "value": 0.5, "learn_margin": 0.25}
BIGRAM = {"name": "count bigram", "value": 8.0, "learn_margin": 0.25}  # threshold 8 x 0.75 = 6.0
GATE_CASES = [
    (CHANCE, 0.80, True, LEARNS),
    (CHANCE, 0.75, True, LEARNS),  # exactly the margin above
    (CHANCE, 0.74, True, DID_NOT_LEARN),
    (CHANCE, 0.30, True, DID_NOT_LEARN),
    (BIGRAM, 5.0, False, LEARNS),  # perplexity: lower is better
    (BIGRAM, 6.0, False, LEARNS),  # exactly 25% below
    (BIGRAM, 6.5, False, DID_NOT_LEARN),  # below the bigram, but not by the margin
    (BIGRAM, 9.0, False, DID_NOT_LEARN),  # worse than the bigram
    (BIGRAM, 5.0, True, DID_NOT_LEARN),  # the same number read as higher-is-better fails
    (None, 0.9, True, NO_BASELINE),
    (CHANCE, None, True, GATE_UNKNOWN),  # no ok QKV cell
    ({"name": "chance", "value": 0.5, "learn_margin": None}, 0.9, True, GATE_UNKNOWN),
]


@pytest.mark.parametrize(("baseline", "qkv_mean", "hib", "expected"), GATE_CASES)
def test_learn_gate(baseline: dict[str, Any] | None, qkv_mean: float | None, hib: bool, expected: str) -> None:
    gate = learn_gate(baseline, qkv_mean, hib)
    assert gate["status"] == expected, gate["reason"]
    assert gate["learns"] is (expected == LEARNS)
    assert gate["reason"]


def test_read_baseline_tolerates_old_and_odd_records() -> None:
    assert read_baseline(None) is None
    assert read_baseline(TrivialBaseline(name="chance")) is None  # no value
    with pytest.raises(ValueError, match=r"baseline\.value is bool"):  # a boolean is not a score: the file is refused
        typed(record("reverse", "qkv", REV_QKV, baseline={"value": True}))
    odd = {"value": 3, "others": {"count trigram": 2.5, "junk": "x"}, "learn_margin": -1}
    found = read_baseline(TrivialBaseline.from_dict(odd))
    assert found == {"name": "baseline", "value": 3, "others": {"count trigram": 2.5}, "note": "", "learn_margin": None}


def test_task_that_did_not_learn_is_shown_but_not_ranked(built: dict[str, Any]) -> None:
    swap = group(built["data"], "swap")
    assert swap["gate"]["status"] == DID_NOT_LEARN and swap["gate"]["margin"] == 0.02
    assert swap["gate"]["threshold"] == pytest.approx(0.61)
    assert swap["trivial_baseline"]["name"] == "per-position majority"
    assert [r["variant"] for r in swap["rows"]] == ["qkv", "tied-kv", "tied-qkv"]  # still shown, best first
    assert all(r["rank"] is None and r["pareto_front"] is False for r in swap["rows"])
    plot = scatter(swap)
    assert plot["points"] and not any(p["front"] for p in plot["points"]) and not plot["front_path"]
    assert any(p["front"] for p in scatter({**swap, "gate": {"learns": True}})["points"])  # the gate is what hides it
    section = built["html"].split('id="task-swap-default"', 1)[1].split("</section>", 1)[0]
    assert "did not learn" in section and "Not ranked" in section and "per-position majority" in section
    assert "◆" not in section
    for reverse_or_lm in ("reverse", "lm"):
        assert group(built["data"], reverse_or_lm)["gate"]["status"] == LEARNS
    assert group(built["data"], "reverse")["rows"][0]["rank"] == 1.0


def test_mean_rank_leaves_out_tasks_that_did_not_learn(built: dict[str, Any]) -> None:
    ranks = {v["variant"]: v for v in built["data"]["overview"]["mean_ranks"]}
    assert [r["task"] for r in ranks["tied-qkv"]["ranks"]] == ["reverse", "lm"]  # swap ran but is not counted
    assert ranks["tied-qkv"]["tasks"] == 2
    left = built["data"]["overview"]["left_out"]
    assert [t["task"] for t in left] == ["swap"]
    assert left[0]["why"].startswith("did not learn: QKV's 95% lower bound 0.5749 (mean 0.6) < ")
    assert 'id="left-out"' in built["html"]
    table1 = built["data"]["paper"][0]
    swap_col = [c["task"] for c in table1["columns"]].index("swap")
    assert table1["columns"][swap_col]["left_out"] and not table1["columns"][swap_col]["comparable"]
    assert all(row["values"][swap_col]["ours"] is None for row in table1["rows"])


def test_baseline_shown_with_its_others(built: dict[str, Any]) -> None:
    lm = group(built["data"], "lm")
    assert lm["trivial_baseline"]["others"] == {"count trigram": 26.5}
    assert lm["gate"]["threshold"] == pytest.approx(29.4)  # 30 x (1 - 0.02): lower is better
    section = built["html"].split('id="task-lm-default"', 1)[1].split("</section>", 1)[0]
    assert "count bigram</strong> 30" in section and "count trigram 26.5" in section
    assert '<span class="badge gate-learns"' in section


def worst_everywhere(swap_baseline: float) -> list[dict[str, Any]]:
    """QKV and Q=K=V on REVERSE and SWAP, Q=K=V clearly worst on both; SWAP's baseline as given."""
    swap = {**BASELINES["swap"], "value": swap_baseline}
    return [
        *both(("reverse",), {"qkv": REV_QKV, "tied-qkv": LOW}),
        record("swap", "qkv", REV_QKV, baseline=swap),
        record("swap", "tied-qkv", LOW, baseline=swap),
    ]


@pytest.mark.parametrize(("swap_baseline", "learns"), [(0.5, True), (0.7, False)])
def test_claims_and_mean_rank_follow_the_gate(swap_baseline: float, learns: bool) -> None:
    data = board(worst_everywhere(swap_baseline), [], {})
    status = {c["id"]: c for c in data["tested_claims"]}["c"]
    assert status["status"] == (tested_mod.HELD if learns else tested_mod.INCONCLUSIVE), status["evidence"]
    assert ("swap: did not learn" in status["evidence"]) is not learns
    worst = next(v for v in data["overview"]["mean_ranks"] if v["variant"] == "tied-qkv")
    assert worst["tasks"] == (2 if learns else 1)


# QKV 20.2, its upper 95% bound about 20.71; threshold bigram x 0.98 (21.0 x 0.98 = 20.58: the mean clears it,
# the bound does not, so the task has not shown that it learns)
@pytest.mark.parametrize(("bigram", "learns"), [(21.5, True), (21.0, False), (20.5, False)])
def test_lower_is_better_gate_on_the_lm(bigram: float, learns: bool) -> None:
    lm_baseline = {**BASELINES["lm"], "value": bigram}
    records = [record("lm", v, xs, LM_QKV, baseline=lm_baseline) for v, xs in
               (("qkv", LM_QKV), ("tied-kv", [20.5, 20.9, 20.6]), ("tied-qkv", WORST_LM))]  # fmt: skip
    data = board(records, [], {})
    lm = group(data, "lm")
    assert lm["gate"]["learns"] is learns
    assert [r["rank"] for r in lm["rows"]] == ([1.0, 2.0, 3.0] if learns else [None, None, None])  # paired
    claims = {c["id"]: c["status"] for c in data["tested_claims"]}
    assert claims["a"] == claims["b"] == (tested_mod.HELD if learns else tested_mod.INCONCLUSIVE)
    table4 = data["paper"][2]
    tied_kv = next(r for r in table4["rows"] if r["variant"] == "tied-kv")["values"][0]
    assert (tied_kv["ours"] is not None) is learns


def old_style(r: dict[str, Any]) -> dict[str, Any]:
    """A record as written before baselines, head shapes and per-seed params were stored."""
    out = copy.deepcopy(r)
    out.pop("baseline", None)
    out.get("costs", {}).pop("attention", None)
    out.get("tuning", {}).pop("best_params", None)
    for seed in out.get("per_seed", []):
        seed["params"] = {"lr": 0.002} if out["variant"]["id"] == "qkv" else {}
    return out


def test_old_records_still_build(tmp_path: Path) -> None:
    report = build_report(write_results(tmp_path, [old_style(r) for r in fixture_records()]), stale=STALE)
    data = json.loads(report.json.read_text())
    assert {g["gate"]["status"] for g in data["groups"]} == {NO_BASELINE}
    failed = board([record("reverse", "qkv", REV_QKV, baseline={"learn_margin": 0.02, "error": "no data"})], [], {})
    assert failed["groups"][0]["gate"]["status"] == NO_BASELINE and "no data" in failed["groups"][0]["gate"]["reason"]
    assert all(r["rank"] is None for g in data["groups"] for r in g["rows"])
    assert data["overview"]["mean_ranks"] == []
    assert {c["status"] for c in data["tested_claims"]} == {tested_mod.INCONCLUSIVE}
    reverse = {r["variant"]: r for r in group(data, "reverse")["rows"]}
    assert reverse["qkv"]["n_heads"] == HEADS and reverse["qkv"]["heads_source"] == "config"
    assert reverse["mqa"]["kv_heads"] == 1 and reverse["qkv"]["kv_heads"] == HEADS
    assert reverse["qkv"]["best_params"] == {"lr": 0.002} and reverse["qkv"]["params_source"] == "per_seed[0].params"
    assert reverse["tied-kv"]["best_params"] == {} and reverse["tied-kv"]["params_source"] is None
    html = report.index.read_text()
    assert "no baseline" in html and "at H=8" in html_rows(html, "reverse")["qkv"]


def test_cache_figures_carry_their_head_count(built: dict[str, Any]) -> None:
    rows = html_rows(built["html"], "reverse")
    assert (
        "at H=8, g=8" in rows["qkv"]
        and "at H=8, g=1" in rows["mqa"]
        and '0.0% <small class="heads">at H=8' in rows["qkv"]
    )
    assert "KV B/token at H=8" in built["html"] and "at H=8" in scatter(group(built["data"], "reverse"))["x_label"]
    lines = {(r["task"], r["variant"]): r for r in csv.DictReader(io.StringIO(built["report"].csv.read_text()))}
    assert lines[("reverse", "mqa")]["n_heads"] == "8" and lines[("reverse", "mqa")]["kv_heads"] == "1"
    assert lines[("lm", "tied-kv")]["tensors_per_head"] == "1" and lines[("lm", "tied-kv")]["head_dim"] == "4"
    reverse = {r["variant"]: r for r in group(built["data"], "reverse")["rows"]}
    assert reverse["gqa4"]["heads_source"] == "config"  # a failed cell has no costs
    assert reverse["qkv"]["heads_source"] == "costs.attention"


def test_params_used_appear_in_csv_json_and_page(built: dict[str, Any]) -> None:
    lines = {(r["task"], r["variant"]): r for r in csv.DictReader(io.StringIO(built["report"].csv.read_text()))}
    assert json.loads(lines[("reverse", "qkv")]["best_params"]) == BEST_PARAMS
    assert lines[("reverse", "gqa4")]["best_params"] == ""  # failed: no fit
    assert lines[("swap", "qkv")]["gate"] == DID_NOT_LEARN and lines[("swap", "qkv")]["rank"] == ""
    assert lines[("lm", "qkv")]["trivial_baseline"] == "count bigram" and lines[("lm", "qkv")]["learn_margin"] == "0.02"
    assert group(built["data"], "lm")["rows"][0]["best_params"] == BEST_PARAMS
    assert "used: lr=0.003, warmup_frac=0.05, weight_decay=0.0001" in html_rows(built["html"], "lm")["qkv"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt install chromium)")
def test_page_in_headless_chromium(built: dict[str, Any], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    dialogs: list[str] = []
    requests: list[str] = []
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=flags)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})

            def on_dialog(dialog: Any) -> None:
                dialogs.append(dialog.message)
                dialog.dismiss()

            page.on("dialog", on_dialog)
            page.on("request", lambda r: requests.append(r.url))
            page.goto(built["report"].index.as_uri())
            order = "rows => rows.map(r => r.dataset.variant)"
            table = "#table-task-reverse-default"

            def rows_after_click(previous: list[str]) -> list[str]:
                # on a loaded machine the sort handler may land after `click` returns: wait for it
                page.click(f"{table} thead th:nth-child(2)")  # the variant column
                for _ in range(50):
                    now = page.eval_on_selector_all(f"{table} tbody tr", order)
                    if now != previous:
                        break
                    page.wait_for_timeout(100)
                return list(now)

            before = page.eval_on_selector_all(f"{table} tbody tr", order)
            after = rows_after_click(before)
            again = rows_after_click(after)
            page.click(f"{table} tbody tr[data-variant=qkv] a[href^='#cell-']")
            try:
                page.wait_for_selector("#cell-reverse-qkv dl", state="visible", timeout=10_000)
                provenance_open = True
            except Exception:  # playwright's TimeoutError: the drill-down never opened
                provenance_open = False
            page.wait_for_timeout(200)  # give any injected onerror handler the chance to fire
            xss = page.evaluate("typeof window.__xss")
            page.screenshot(path=str(tmp_path / "leaderboard.png"), full_page=True)
        finally:
            browser.close()
    assert before == [r["variant"] for r in group(built["data"], "reverse")["rows"]]
    assert after != before and sorted(after) == sorted(before) and again == after[::-1]
    assert provenance_open
    assert xss == "undefined" and dialogs == []
    assert all(url.startswith("file:") for url in requests), requests
    assert (tmp_path / "leaderboard.png").stat().st_size > 10_000


# --- statistics on the board: metric-aware intervals, BH stars, tie-aware ranks, aggregates, tested claims

Q5, NEAR5 = [0.70, 0.72, 0.71, 0.73, 0.70], [0.701, 0.719, 0.712, 0.729, 0.702]
LOW5, HIGH5, NOISY5 = [0.50, 0.52, 0.51, 0.53, 0.50], [0.80, 0.83, 0.81, 0.82, 0.80], [0.73, 0.69, 0.74, 0.68, 0.72]
LM5, LM_NEAR5, LM_FAR5 = [20.0, 20.4, 20.2, 20.1, 20.3], [20.2, 20.5, 20.4, 20.2, 20.5], [25.0, 25.6, 25.2, 25.1, 25.4]


FIVE = tested_mod.STUDY_SYNTHETIC  # the study's synthetic tasks: claim (s) averages over them


def claim_result(records: list[dict[str, Any]], claim: str) -> dict[str, Any]:
    return next(c for c in tested_mod.evaluate(cells_of(*records)) if c["id"] == claim)


def plus5(task: str, base: list[float], with_plus: list[float]) -> list[dict[str, Any]]:
    return both((task,), {"tied-qk": base, "tied-qkv": base, "tied-qk-pos": with_plus, "tied-qkv-pos": with_plus})


TESTED_CASES = [
    ("c", tested_mod.HELD, both(("reverse", "swap"), {"qkv": Q5, "tied-qkv": LOW5})),
    ("c", tested_mod.NOT_HELD, both(("reverse", "swap"), {"qkv": LOW5, "tied-qkv": Q5})),
    ("c", tested_mod.INCONCLUSIVE, both(("reverse",), {"qkv": Q5, "tied-qkv": LOW5})),  # swap missing
    # (Q=K=V)+ below Q=K=V: Q=K=V is not the worst of the study's Table 1 rows
    ("c", tested_mod.NOT_HELD, both(("reverse", "swap"), {"qkv": Q5, "tied-qkv": Q5, "tied-qkv-pos": LOW5})),
    ("s", tested_mod.HELD, both(FIVE, {"qkv": Q5, "tied-kv": NEAR5})),  # equivalent within 2 points on average
    ("s", tested_mod.NOT_HELD, both(FIVE, {"qkv": Q5, "tied-kv": LOW5})),  # 20 points below
    ("s", tested_mod.INCONCLUSIVE, both(FIVE, {"qkv": Q5, "tied-kv": NOISY5})),  # not different, not equivalent
    ("s", tested_mod.INCONCLUSIVE, both(("reverse",), {"qkv": Q5, "tied-kv": NEAR5})),  # four tasks missing
    ("a", tested_mod.HELD, both(("lm",), {"qkv": LM5, "tied-kv": LM_NEAR5})),
    ("a", tested_mod.NOT_HELD, both(("lm",), {"qkv": LM5, "tied-kv": LM_FAR5})),
    ("b", tested_mod.HELD, both(("lm",), {"qkv": LM5, "tied-kv": LM_NEAR5, "tied-qkv": LM_FAR5})),
    ("b", tested_mod.NOT_HELD, both(("lm",), {"qkv": LM_FAR5, "tied-qkv": LM5})),
    ("d", tested_mod.HELD, [r for t in ("reverse", "swap", "mnist") for r in plus5(t, LOW5, HIGH5)]),
    ("d", tested_mod.NOT_HELD, [r for t in ("reverse", "swap", "mnist") for r in plus5(t, HIGH5, LOW5)]),
    ("d", tested_mod.INCONCLUSIVE, plus5("reverse", LOW5, HIGH5)),  # one task: no test across tasks
    ("e", tested_mod.HELD, [r for t in ("mnist", "fashion-mnist") for r in both((t,), {"qkv": Q5, **dict.fromkeys(
        tested_mod.SHARING, NEAR5)})]),
    ("e", tested_mod.NOT_HELD, [r for t in ("mnist", "fashion-mnist") for r in both((t,), {"qkv": Q5, **dict.fromkeys(
        tested_mod.SHARING, LOW5)})]),
    ("e", tested_mod.INCONCLUSIVE, both(("mnist",), {"qkv": Q5, "tied-kv": NEAR5})),  # other cells missing
]  # fmt: skip


@pytest.mark.parametrize(("claim", "expected", "records"), TESTED_CASES, ids=[f"{c}-{s}" for c, s, _ in TESTED_CASES])
def test_tested_claims(claim: str, expected: str, records: list[dict[str, Any]]) -> None:
    found = claim_result(records, claim)
    assert found["status"] == expected, found["evidence"]
    assert found["evidence"] and found["lean"]


def test_inconclusive_claim_says_how_it_leans_and_seeds_needed() -> None:
    found = claim_result(both(FIVE, {"qkv": Q5, "tied-kv": NOISY5}), "s")
    assert found["lean"] == "towards the claim" and found["seeds_needed"] is not None and found["seeds_needed"] > 5


def test_board_statistics(built: dict[str, Any]) -> None:
    data = built["data"]
    methods = {"intervals", "item_intervals", "stars", "ranks", "budget", "seeds", "tuning", "cards"}
    assert data["schema_version"] == 4 and set(data["methods"]) == methods
    for g in data["groups"]:
        for r in g["rows"]:
            if r["status"] == "ok" and r["metric"] == "accuracy":
                assert 0.0 <= r["ci95_low"] <= r["ci95_high"] <= 1.0
            if r["status"] == "ok" and r["metric"] == "perplexity":
                assert 1.0 < r["ci95_low"] <= r["ci95_high"]
    comps = [r["vs_baseline"] for g in data["groups"] for r in g["rows"] if r.get("vs_baseline")]
    assert any(c["q_value"] is not None for c in comps)
    assert all(c["significant"] == (c["q_value"] is not None and c["q_value"] < 0.05) for c in comps)
    agg = data["overview"]["aggregates"]
    assert agg["tasks"] and {a["variant"] for a in agg["rows"]} >= {"qkv"}
    assert "interquartile mean" in built["html"] and 'id="table-tested-claims"' in built["html"]
    header = built["report"].csv.read_text().splitlines()[0]
    assert "ci_method" in header and "q_value" in header


def test_tie_aware_ranks_share_rank_when_intervals_overlap() -> None:
    data = board(both(("reverse",), {"qkv": Q5, "tied-kv": NEAR5, "tied-qkv": LOW5}), [], {})
    ranks = {r["variant"]: r["rank"] for r in group(data, "reverse")["rows"]}
    assert ranks == {"qkv": 1.0, "tied-kv": 1.0, "tied-qkv": 3.0}


def test_record_without_per_seed_values_keeps_its_interval() -> None:
    old = record("reverse", "tied-kv", Q5, per_seed=[])
    data = board([record("reverse", "qkv", Q5), old], [], {})
    row = next(r for r in group(data, "reverse")["rows"] if r["variant"] == "tied-kv")
    assert row["ci_method"] == "as recorded" and row["ci95_low"] == old["summary"]["ci95_low"]


def test_measured_costs_are_shown_and_exported(built: dict[str, Any]) -> None:
    rows = group(built["data"], "reverse")["rows"]
    qkv = next(r for r in rows if r["variant"] == "qkv")
    assert (qkv["examples_per_second"], qkv["decode_tokens_per_second"], qkv["peak_memory_bytes"]) == (
        500.0,
        1234.0,
        3 * 2**20,
    )
    csv_text = built["report"].csv.read_text()
    assert "decode_tokens_per_second" in csv_text.splitlines()[0] and ",1234.0," in csv_text
    html = built["report"].index.read_text()
    assert "decode tok/s" in html and "3 MiB" in html


# --- the "+" ablation, the compare view, label placement

#: the diagnostics of (Q=K=V)+: its two ablations and its second reading of P (offsets i - j)
ABLATED = {"tied-qkv-pos-fixed-scale": "(Q=K=V)+ fixed scale", "tied-qkv-pos-no-bias": "(Q=K=V)+ no bias",
           "tied-qkv-rel": "(Q=K=V)+rel"}  # fmt: skip


def ablation_record(task: str, variant: str, values: list[float]) -> dict[str, Any]:
    out = record(task, "tied-qkv-pos", values)
    out["cell_id"] = f"{task}-{variant}"
    out["variant"] = {**out["variant"], "id": variant, "display_name": ABLATED[variant], "ablates": "tied-qkv-pos"}
    return out


PLAIN5, HURT5 = [0.60, 0.62, 0.61, 0.63, 0.60], [0.50, 0.53, 0.51, 0.52, 0.50]


def ablation_board(
    fixed: list[float], no_bias: list[float], relative: list[float] | None = None, with_plus: list[float] = HURT5
) -> dict[str, Any]:
    records = [
        record("reverse", "qkv", Q5, Q5),
        record("reverse", "tied-qkv", PLAIN5),
        record("reverse", "tied-qkv-pos", with_plus),
        ablation_record("reverse", "tied-qkv-pos-fixed-scale", fixed),
        ablation_record("reverse", "tied-qkv-pos-no-bias", no_bias),
    ]  # fmt: skip
    if relative is not None:
        records.append(ablation_record("reverse", "tied-qkv-rel", relative))
    return board(records, [], {})


def test_ablation_reading_names_the_part_that_makes_the_gap() -> None:
    scale_cause = ablation_board(fixed=[0.601, 0.621, 0.609, 0.631, 0.600], no_bias=HURT5)
    row = scale_cause["plus_ablation"]["rows"][0]
    assert (row["task"], row["variant"], row["cause"]) == ("reverse", "tied-qkv-pos", "learned scale")
    assert "hurts" in row["reading"] and row["gap"].startswith("-0.100 [")
    bias_cause = ablation_board(fixed=HURT5, no_bias=[0.601, 0.621, 0.609, 0.631, 0.600])
    assert bias_cause["plus_ablation"]["rows"][0]["cause"] == "per-key bias"
    neither = ablation_board(fixed=HURT5, no_bias=HURT5)
    assert neither["plus_ablation"]["rows"][0]["cause"] == "both parts"
    assert "1 of 1" in neither["plus_ablation"]["summary"]


#: a reading's count on the paper's REVERSE gain of (Q=K=V)+: reproduced, gone against, neither
GAINED, AGAINST = {"reproduced": 1, "opposite": 0}, {"reproduced": 0, "opposite": 1}
FLAT = {"reproduced": 0, "opposite": 0}
READING_CASES = [  # (X)+ (row/column reading), (X)+rel, which reproduces the gain, the two counts, the verdict
    (HURT5, HIGH5, "relative", AGAINST, GAINED, "the relative reading of P reproduces more of the study's + gains"),
    (HIGH5, HURT5, "row/column", GAINED, AGAINST, "the row/column reading of P reproduces more of the study's + gains"),
    (HIGH5, HIGH5, "both", GAINED, GAINED, "both readings of P reproduce as many of the study's + gains"),
    (HURT5, PLAIN5, "neither", AGAINST, FLAT, "neither reading of P reproduces the study's + gains"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("with_plus", "relative", "reproduces", "rowcol", "rel", "verdict"),
    READING_CASES,
    ids=[c[2] for c in READING_CASES],
)
def test_plus_block_says_which_reading_of_p_reproduces_the_study_gains(
    with_plus: list[float], relative: list[float], reproduces: str, rowcol: dict, rel: dict, verdict: str
) -> None:
    """The paper's (Q=K=V)+ is 0.067 above Q=K=V on REVERSE (Table 1): a reading reproduces that gain
    when its interval is above 0 here, and goes against it when below."""
    data = ablation_board(fixed=HURT5, no_bias=HURT5, relative=relative, with_plus=with_plus)
    block = data["plus_ablation"]
    row = block["rows"][0]
    mean_gain = (sum(relative) - sum(PLAIN5)) / len(PLAIN5)
    assert row["paper"] == "+0.067" and row["relative"].startswith(f"{mean_gain:+.3f} [")
    readings = block["readings"]
    assert (readings["tested"], readings["reproduces"]) == (1, reproduces)
    assert readings["counts"] == {"row/column": rowcol, "relative": rel}
    assert readings["sentence"].startswith(f"{verdict}: the paper reports (X)+ above X (Tables 1 and 2) on 1 ")
    page = render_html(data)
    assert readings["sentence"] in page.replace("&#39;", "'")
    assert row["relative"] in page.split('id="table-plus-ablation"', 1)[1]


def test_plus_block_without_the_relative_reading_gives_no_verdict() -> None:
    block = ablation_board(fixed=HURT5, no_bias=HURT5)["plus_ablation"]
    assert block["rows"][0]["relative"] is None and block["readings"]["reproduces"] is None
    assert "not run" in render_html(ablation_board(fixed=HURT5, no_bias=HURT5))


def test_ablations_show_in_their_table_but_never_rank_star_plot_or_aggregate() -> None:
    data = ablation_board(fixed=[0.9, 0.91, 0.92, 0.9, 0.91], no_bias=HURT5)  # the best cell of the task
    rows = {r["variant"]: r for r in group(data, "reverse")["rows"]}
    assert rows["tied-qkv-pos-fixed-scale"]["ablates"] == "tied-qkv-pos" and rows["qkv"]["ablates"] is None
    assert rows["tied-qkv-pos-fixed-scale"]["rank"] is None and rows["qkv"]["rank"] is not None
    assert not rows["tied-qkv-pos-fixed-scale"]["vs_baseline"]["significant"]
    assert not rows["tied-qkv-pos-fixed-scale"]["pareto_front"]
    assert all("fixed scale" not in p["title"] for p in scatter(group(data, "reverse"))["points"])
    assert {a["variant"] for a in data["overview"]["aggregates"]["rows"]} == {"qkv", "tied-qkv", "tied-qkv-pos"}
    assert "tied-qkv-pos-fixed-scale" not in {v["variant"] for v in data["overview"]["mean_ranks"]}
    assert "tied-qkv-pos-fixed-scale" in {v["id"] for v in data["compare"]["variants"]}  # comparable by hand


def test_labels_never_overlap_each_other_or_a_point_and_stay_inside() -> None:
    import random

    from bench_leaderboard.plots import CHAR_W, LABEL_H, place_labels

    rng = random.Random(0)
    bounds = (60.0, 14.0, 438.0, 227.0)
    for _ in range(50):
        points = [(rng.choice([90.0, 150.0, 210.0, 300.0]), rng.uniform(20, 220)) for _ in range(rng.randint(2, 14))]
        labels = [rng.choice(["QKV", "Q=K=V", "(Q=K=V)+", "Q-MQA", "(Q=K-V)+ fixed scale"]) for _ in points]
        spots = place_labels(points, labels, bounds)
        boxes = [(s["x"], s["y"] - LABEL_H + 2, s["x"] + len(t) * CHAR_W, s["y"] + 2)
                 for s, t in zip(spots, labels, strict=True) if s]  # fmt: skip
        for i, a in enumerate(boxes):
            assert bounds[0] <= a[0] and a[2] <= bounds[2] and bounds[1] <= a[1] and a[3] <= bounds[3]
            assert not any(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3] for b in boxes[i + 1 :])
            assert not any(a[0] < x + 5 and x - 5 < a[2] and a[1] < y + 5 and y - 5 < a[3] for x, y in points)
    crowded = [(100.0, 100.0)] * 40  # more labels than room: the rest go without, never on top
    assert None in place_labels(crowded, ["Q=K=V"] * 40, bounds)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt install chromium)")
def test_compare_view_and_family_filter_follow_the_address(built: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(built["report"].index.as_uri() + "?compare=qkv,tied-qkv&family=synthetic")
            heads = page.eval_on_selector_all("#table-compare thead th:not([hidden])", "a => a.map(x => x.textContent)")
            diff = page.eval_on_selector("#table-compare tr[data-task=reverse] small[data-diff]",
                                         "e => parseFloat(e.getAttribute('data-diff'))")  # fmt: skip
            note = page.eval_on_selector("#table-compare tr[data-task=reverse] small[data-diff]", "e => e.textContent")
            hidden = page.eval_on_selector_all("[data-family]", "a => a.map(x => [x.dataset.family, x.hidden])")
            page.click("#compare-form input[value=tied-kv]")
            page.click("#family-filter input[value=lm]")
            url = page.url
            heads_after = page.eval_on_selector_all("#table-compare thead th:not([hidden])", "a => a.length")
            page.goto(built["report"].index.as_uri())
            empty = page.eval_on_selector("#table-compare", "t => t.hidden")
        finally:
            browser.close()
    assert heads == ["task", "QKV", "Q=K=V"]
    expected = group(built["data"], "reverse")["rows"]
    paired = next(r for r in expected if r["variant"] == "tied-qkv")["vs_baseline"]["mean_diff"]
    assert diff == pytest.approx(paired, abs=1e-12) and note.endswith("n=3")
    assert {f for f, h in hidden if h} == {"lm"} and {f for f, h in hidden if not h} == {"synthetic"}
    # every family ticked again is the default view: the address drops the filter
    assert "compare=qkv%2Ctied-qkv%2Ctied-kv" in url and "family=" not in url and heads_after == 4
    assert empty and errors == []


def _with_long_context(r: dict[str, Any], at_32k: int) -> dict[str, Any]:
    per_token = r["costs"]["kv_bytes_per_token"]
    r["costs"]["kv_bytes_long_context"] = {"8192": min(at_32k, per_token * 8192), "32768": at_32k}
    return r


def test_a_bounded_cache_wins_the_front_at_the_long_context(tmp_path: Path) -> None:
    """MQA has fewer bytes per token, but a 16-token window holds fewer bytes at 32k tokens: with the
    long-context figures the windowed variant (here posing as tied-kv) is on the front, MQA is not."""
    qkv = record("lm", "qkv", LM_QKV, LM_QKV)
    window = record("lm", "tied-kv", [19.0, 19.2, 19.1], LM_QKV)  # better perplexity, and bounded
    mqa = record("lm", "mqa", [19.5, 19.6, 19.4], LM_QKV)
    per_token_board = board([qkv, window, mqa], [], {})
    front = {r["variant"] for r in group(per_token_board, "lm")["rows"] if r["pareto_front"]}
    assert front == {"tied-kv", "mqa"}  # per token: MQA's 16 B beat the window's 64 B
    records = [_with_long_context(qkv, 64 * 32768), _with_long_context(window, 32 * 16),
               _with_long_context(mqa, 16 * 32768)]  # fmt: skip
    data = board(records, [], {})
    lm = group(data, "lm")
    assert {r["variant"] for r in lm["rows"] if r["pareto_front"]} == {"tied-kv"}
    assert "bytes at 32k tokens" in scatter(lm)["x_label"]
    rows = {r["variant"]: r for r in lm["rows"]}
    assert rows["tied-kv"]["kv_bytes_at_32k"] == 512 and rows["tied-kv"]["kv_bytes_at_8k"] == 512
    html = render_html(data)
    assert "512 B" in html_rows(html, "lm")["tied-kv"] and "2.0 MiB" in html_rows(html, "lm")["qkv"]


def test_ranks_come_from_paired_tests_not_interval_overlap() -> None:
    """Q-K=V half a point below QKV on every seed: the intervals overlap (the seeds spread 3 points), pairs do not."""
    noise = [0.0002, -0.0001, 0.0001, -0.0002, 0.0]
    below = [q - 0.005 + e for q, e in zip(Q5, noise, strict=True)]
    rows = {
        r["variant"]: r
        for r in group(board(both(("reverse",), {"qkv": Q5, "tied-kv": below}), [], {}), "reverse")["rows"]
    }
    assert rows["tied-kv"]["ci95_high"] > rows["qkv"]["ci95_low"]  # overlap would share rank 1
    assert (rows["qkv"]["rank"], rows["tied-kv"]["rank"]) == (1.0, 2.0)
    old = [{**r, "seed_values": {}} for r in rows.values()]  # rows from files without per-seed values
    scoring.tie_aware_ranks(old)
    assert [r["rank"] for r in old] == [1.0, 1.0]  # fall back to interval overlap


def test_the_lm_row_shows_perplexity_by_position_in_the_window() -> None:
    from bench_leaderboard.model import by_position
    from bench_record.schema import CellRecord

    raw = record("lm", "qkv", LM_QKV, LM_QKV)
    for fit, near, far in zip(raw["per_seed"], (6.0, 6.2, 6.4), (5.0, 5.2, 5.4), strict=True):
        fit["test"].update({"perplexity@65-128": far, "perplexity@1-16": near, "perplexity@17-64": 5.5})
    found = by_position(CellRecord.from_dict(raw))
    assert [bucket for bucket, _ in found] == ["1-16", "17-64", "65-128"]  # in window order, not by name
    assert [value for _, value in found] == pytest.approx([6.2, 5.5, 5.2])
    assert by_position(CellRecord.from_dict(record("lm", "tied-kv", [20.5, 20.9, 20.6], LM_QKV))) == []
