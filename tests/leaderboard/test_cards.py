"""Verdict cards: per variant its verdicts against QKV over the ranked tasks, its costs beside QKV's and one
line that says both; on the page's first screen, on the variant's own page and in the terminal."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape
from rich.console import Console

from bench.run.summary import cards as print_cards
from bench_leaderboard.build import build_report
from bench_leaderboard.cards import verdict
from bench_leaderboard.screenshot import take

from .test_leaderboard import CHROMIUM, LM_QKV, REV_QKV, built, fixture_records, group, record, write_results

__all__ = ["built"]  # the module's board, built once from test_leaderboard's records


def card(data: dict[str, Any], variant: str) -> dict[str, Any]:
    return next(c for c in data["cards"] if c["variant"] == variant)


def row(diff: float | None, significant: bool, decision: str | None = None, hib: bool = True) -> dict[str, Any]:
    p = None if decision == "differs" else 0.01
    return {"higher_is_better": hib, "vs_baseline": {"mean_diff": diff, "significant": significant, "p_value": p},
            "seed_decision": {"decision": decision} if decision else None}  # fmt: skip


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (row(0.1, True), "better"),
        (row(-0.1, True), "worse"),
        (row(0.1, True, hib=False), "worse"),  # perplexity up
        (row(-0.1, True, "equivalent"), "worse"),  # a star outranks the seed design's stop
        (row(0.001, False, "equivalent"), "same"),
        (row(0.001, False, "inconclusive"), "undecided"),
        (row(0.02, False, "differs") | {"vs_baseline": {"mean_diff": 0.02, "p_value": 0.03}}, "undecided"),  # no star
        (row(0.001, False), "undecided"),  # fixed seeds: not different is not the same
        (row(None, True), "undecided"),
        (row(0.13, False, "differs"), "better"),  # every seed 0.13 apart: no p-value, the design decided
    ],
)
def test_a_verdict_is_the_star_else_the_equivalence_test(given: dict[str, Any], expected: str) -> None:
    assert verdict(given) == expected


def test_a_card_reads_the_ranked_task_tables(built: dict[str, Any]) -> None:
    data = built["data"]
    assert data["cards"][0]["variant"] == "qkv"  # the reference first
    tied = card(data, "tied-qkv")
    # swap did not learn: it is not a task the card counts; reverse and lm are
    assert [t["task"] for t in tied["tasks"]] == ["reverse", "lm"]
    assert [t["verdict"] for t in tied["tasks"]] == ["worse", "worse"]
    reverse = next(r for r in group(data, "reverse")["rows"] if r["variant"] == "tied-qkv")["vs_baseline"]
    shown = tied["tasks"][0]
    assert shown["text"].startswith(f"{reverse['mean_diff'] * 100:+.1f} pts accuracy [")  # points on a [0, 1] metric
    lm = next(r for r in group(data, "lm")["rows"] if r["variant"] == "tied-qkv")
    base = next(r for r in group(data, "lm")["rows"] if r["variant"] == "qkv")
    assert tied["tasks"][1]["short"] == f"{lm['vs_baseline']['mean_diff'] / base['mean'] * 100:+.1f}% perplexity"
    assert [(f["family"], f["counts"]["worse"]) for f in tied["families"]] == [("synthetic", 1), ("lm", 1)]
    assert tied["costs"]["task"] == "lm" and tied["costs"]["kv_reduction"] == pytest.approx(0.5)
    kv = tied["costs"]["figures"]["kv_bytes_per_token"]
    assert (kv["value"], kv["baseline"]) == (lm["kv_bytes_per_token"], base["kv_bytes_per_token"])
    assert tied["reading"].startswith("same as QKV on 0 of 2 tasks")
    assert "worse on 2 (synthetic 1, lm 1; largest: " in tied["reading"]
    assert tied["reading"].endswith("50.0% less KV cache than QKV at 32k tokens (lm's model)")
    assert "mqa" not in {c["variant"] for c in data["cards"]}  # its only ok row is stale: no card from it


def test_the_first_screen_is_the_cards_and_the_methods_have_their_own_section(built: dict[str, Any]) -> None:
    html = built["html"]
    header = html.split("</header>", 1)[0]
    assert "Benjamini" not in header and 'href="#methods"' in header  # the method text moved, linked
    assert html.index('id="verdicts"') < html.index('id="overview"') < html.index('id="methods"')
    verdicts = html.split('id="verdicts"', 1)[1].split("</section>", 1)[0]
    assert 'id="card-tied-qkv"' in verdicts and 'href="variants/tied-qkv.html"' in verdicts
    assert verdicts.count("<svg") == 2  # one plot per family the cards cover: synthetic and lm
    assert "card_plots" not in built["data"]  # layout, not data: the JSON leaves it out


def test_each_variant_has_its_own_page(built: dict[str, Any]) -> None:
    out = built["report"].index.parent
    pages = sorted(p.stem for p in (out / "variants").glob("*.html"))
    assert pages == sorted(c["variant"] for c in built["data"]["cards"])
    page = (out / "variants" / "gqa4.html").read_text()
    assert str(escape(card(built["data"], "gqa4")["reading"])) in page
    assert "out of memory" in page  # its failed reverse cell is listed with its reason, not dropped
    assert "20.1" in page and "20.6" in page  # per-seed values of its lm cell
    assert 'href="../index.html#verdicts"' in page and "<script" not in page


def test_the_catalog_adds_the_reference_and_marks_a_contributed_variant(tmp_path: Path) -> None:
    root = write_results(tmp_path / "results", fixture_records())
    catalog = {"tied-kv": {"reference": "Example et al., 2026", "contributed": True}}
    report = build_report(root, catalog=catalog)
    page = (report.index.parent / "variants" / "tied-kv.html").read_text()
    assert "Example et al., 2026" in page and "contributed" in page
    index = report.index.read_text()
    assert 'class="badge contributed"' in index.split('id="card-tied-kv"', 1)[1].split("</tr>")[0]
    marked = re.findall(r'data-variant="([^"]+)">.{0,400}?class="badge contributed"', index, re.S)
    assert set(marked) == {"tied-kv"}  # on its card and its rows in the task tables, nowhere else


def test_the_terminal_ends_with_the_trained_variants_cards(built: dict[str, Any]) -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    print_cards(console, built["report"].json, {"qkv", "tied-kv"})
    text = out.getvalue()
    assert "verdict card: Q-K=V (tied-kv)" in text and card(built["data"], "tied-kv")["reading"][:60] in text
    assert "verdict card: QKV" not in text  # the reference has no verdict of its own
    assert "costs on lm's model" in text and "KV cache per token 64 B (QKV 128 B)" in text


def test_without_a_seed_design_a_near_tie_is_undecided_not_the_same(tmp_path: Path) -> None:
    near = [0.701, 0.719, 0.711]  # within 0.001 of QKV's seeds, not a constant shift
    records = [
        record("reverse", "qkv", REV_QKV, REV_QKV),
        record("reverse", "tied-kv", near, REV_QKV),
        record("lm", "qkv", LM_QKV, LM_QKV),
        record("lm", "tied-kv", [25.0, 25.6, 25.2], LM_QKV),
    ]
    data = json.loads(build_report(write_results(tmp_path / "r", records)).json.read_text())
    tied = card(data, "tied-kv")
    assert [t["verdict"] for t in tied["tasks"]] == ["undecided", "worse"]  # fixed seeds: no equivalence test


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt install chromium)")
def test_the_cards_fill_a_laptops_first_screen(built: dict[str, Any], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(built["report"].index.as_uri())
            top = page.eval_on_selector("#table-cards tbody tr:nth-child(2)", "t => t.getBoundingClientRect().bottom")
            page.click("#card-tied-qkv a[href='variants/tied-qkv.html']")
            page.wait_for_selector("#table-card-tasks", timeout=10_000)
            title = page.title()
        finally:
            browser.close()
    assert top < 768 and errors == []  # QKV's card and the next one are on the first screen
    assert title.startswith("Q=K=V (tied-qkv)")
    shot = take(built["report"].index, tmp_path / "first-screen.png")  # what `make screenshot` runs
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_a_bounded_cache_reads_its_saving_without_rounding_to_all() -> None:
    from bench_leaderboard.cards import reading

    tasks = [{"task": "lm", "family": "lm", "verdict": "better", "better_relative": 0.066, "short": "-6.6% perplexity"}]
    card = {"tasks": tasks, "counts": {"same": 0, "better": 1, "worse": 0, "undecided": 0},
            "costs": {"kv_reduction": 1 - 8192 / 2**24, "task": "lm"}}  # fmt: skip
    assert reading(card).endswith("better on 1 (lm 1; largest: lm -6.6% perplexity); 99.95% less KV cache than QKV "
                                  "at 32k tokens (lm's model)")  # fmt: skip
