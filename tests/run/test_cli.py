"""The `bench` command line: fast help, the variant table, measured cache, and readable errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from bench.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        "heavy = [m for m in ('torch', 'lightning', 'mlflow', 'optuna', 'timm') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_list_shows_every_variant_with_its_reduction(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name, reduction in [("Q-K=V", "50%"), ("Q-GQA-4", "87.5%"), ("Q-MQA", "96.875%"), ("MQA", "93.75%")]:
        line = next(row for row in out.splitlines() if f" {name} " in row)
        assert reduction in line


def test_list_at_32_heads_gives_the_corrected_q_mqa_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--heads", "32", "--layers", "22"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if " Q-MQA " in row)
    assert "98.4375%" in line


def test_cache_command_measures_and_matches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "--variants", "qkv,Q-MQA", "--tokens", "8", "--layers", "2"]) == 0
    out = capsys.readouterr().out
    assert "16,384" in out  # QKV: 2 tensors x 8 heads x 16 x 4 B x 2 layers x 8 tokens
    assert "1,024" in out  # Q-MQA: 1 tensor x 1 head x 16 x 4 B x 2 layers x 8 tokens


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cache", "--variants", "qkv2"], "did you mean 'qkv'"),
        (["list", "--dtype", "fp8"], "Unknown dtype 'fp8'"),
        (["cache", "--tokens", "0"], "--tokens and --layers must be positive"),
    ],
)
def test_bad_input_is_a_clear_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err


def test_data_prepare_records_sources_that_list_tasks_shows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    assert main(["list", "tasks", "--data-dir", data]) == 0
    before = capsys.readouterr().out
    for task, metric in [("reverse", "steps_to_target"), ("lm", "perplexity"), ("mvtec", "image_auroc")]:
        line = next(row for row in before.splitlines() if f" {task} " in row)
        assert metric in line and "not prepared" in line
    assert "lower is better" in next(row for row in before.splitlines() if " lm " in row)
    assert main(["data", "prepare", "--tasks", "reverse,mqar", "--data-dir", data]) == 0
    capsys.readouterr()
    assert main(["list", "tasks", "--data-dir", data]) == 0
    after = capsys.readouterr().out
    assert "REVERSE digit sequences" in after and "MQAR key-value sequences" in after
    assert main(["data", "prepare", "--tasks", "reverze", "--data-dir", data]) == 2
    assert "did you mean 'reverse'" in " ".join(capsys.readouterr().err.split())
