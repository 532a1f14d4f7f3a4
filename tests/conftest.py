"""Shared fixtures: every test that takes `spec` runs once per registered variant."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bench.registry import variants
from bench_variants.base import AttentionConfig, VariantSpec

ROOT = Path(__file__).resolve().parents[1]


def install_example_plugin() -> Path:
    """pip-install the shipped example plugin into a fresh folder on sys.path, as a user would install it.

    Every registry-parametrized test then covers a genuine third-party distribution too.
    """
    target = Path(tempfile.mkdtemp(prefix="bench-plugin-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)  # the test session's processes are done by then
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT / "examples" / "latent-attention")],
        check=True,
    )  # fmt: skip
    sys.path.insert(0, str(target))
    return target


PLUGIN_SITE = install_example_plugin()
REGISTRY = variants()
ALL_SPECS: list[VariantSpec] = list(REGISTRY.all().values())
TINY = AttentionConfig(d_model=32, n_heads=4)


def runnable(specs: list[VariantSpec], config: AttentionConfig = TINY) -> list[VariantSpec]:
    """Specs that accept `config` (e.g. GQA-8 cannot run with 4 query heads)."""
    return [s for s in specs if s.check(config) is None]


def small_config_for(spec: VariantSpec) -> AttentionConfig:
    """The smallest of a few configs the variant accepts."""
    for heads in (4, 8, 16):
        config = AttentionConfig(d_model=8 * heads, n_heads=heads)
        if spec.check(config) is None:
            return config
    raise AssertionError(f"variant {spec.id} accepts none of the test configs")


@pytest.fixture(params=ALL_SPECS, ids=lambda s: s.id)
def spec(request: pytest.FixtureRequest) -> VariantSpec:
    return request.param


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real download: the offline defaults and the generated test files only."""
    monkeypatch.delenv("BENCH_DOWNLOAD", raising=False)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models: a second thread only waits on the other jobs sharing the CPU (3x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
